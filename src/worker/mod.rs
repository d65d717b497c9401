//! The ARQ-compatible worker: claims jobs, runs registered functions, records
//! their outcome exactly as Python arq does.
//!
//! ```text
//!  poll ──> due counts per queue ──> share_slots ──> claim + start (one script per queue:
//!                                                       │   in-progress key, GET job, INCR try)
//!     finish: result / Retry / release  <── run ◄───────┘
//! ```
//!
//! - Several queues, highest priority first, lower ones never starved
//!   ([`priority`]).
//! - No idle sleep between jobs: a worker polls again at once while jobs
//!   are ready and slots free, as soon as a slot frees when it ran out of
//!   them, and within milliseconds of an announcement on `<queue>:wake`
//!   (flowpilot's enqueue publishes one for a job due now); `poll_delay`
//!   only paces polling for jobs nobody announces (Python producers,
//!   deferred jobs coming due). A poll of one queue is one round trip
//!   (the claim script reads the queue, claims and starts the jobs, and
//!   abort requests come with it); several queues cost one more, to count
//!   their due jobs.
//! - At most `max_jobs` functions run at once, each under its timeout; a
//!   slot frees when the function returns, while its result is written.
//! - Shutdown (the token) stops claiming; running jobs get `drain_timeout`
//!   to finish, then are cut off and released exactly as arq leaves a
//!   cancelled job: only the in-progress key is deleted, so the job runs
//!   again at its old score (its try counter already advanced).
//! - Failures before the function runs (expired job key, undecodable
//!   payload, abort, unknown function, tries exhausted) store a failed
//!   result with arq's exception, and touch no other key.
//!
//! Who drives it: `main` (`flowpilot worker`, `flowpilot dev`) with the
//! functions the engine registers; tests with their own.

pub mod diagnostic;
pub mod function;
pub mod priority;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

pub use function::{Args, Function, JobContext, JobError, Registry};

use crate::config::WorkerConfig;
use crate::queue::{self, Client, Rest, now_ms};

/// Extra life of the in-progress key past the longest timeout (arq: 10 s).
const IN_PROGRESS_GRACE: Duration = Duration::from_secs(10);
/// Fewest queue entries read per poll (arq: `max(5 * max_jobs, 100)`).
const MIN_READ: usize = 100;
/// Longest pause between polls after Redis errors.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pause before listening for wake-ups again after a failure.
const RELISTEN: Duration = Duration::from_secs(1);

/// Worker settings, arq's `Worker` arguments.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Queues to serve, highest priority first.
    pub queues: Vec<String>,
    /// Jobs run at once (arq `max_jobs`, default 10).
    pub max_jobs: usize,
    /// Default per-job timeout (arq `job_timeout`, 300 s).
    pub job_timeout: Duration,
    /// Pause between polls (arq `poll_delay`, 0.5 s).
    pub poll_delay: Duration,
    /// How long results are kept: `None` forever, zero not at all
    /// (arq `keep_result`, 3600 s).
    pub keep_result: Option<Duration>,
    /// Runs before a job fails as "max N retries exceeded" (arq 5).
    pub max_tries: i64,
    /// How often the health-check key is written (arq 3600 s).
    pub health_check_interval: Duration,
    /// How long running jobs may finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Whether abort requests cancel running jobs (arq `allow_abort_jobs`).
    pub allow_abort: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queues: vec![queue::keys::DEFAULT_QUEUE.to_owned()],
            max_jobs: 10,
            job_timeout: Duration::from_secs(300),
            poll_delay: Duration::from_millis(500),
            keep_result: Some(Duration::from_secs(3600)),
            max_tries: 5,
            health_check_interval: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(300),
            allow_abort: true,
        }
    }
}

impl Settings {
    /// The settings `config` names; queues default to the three priority
    /// queues under `prefix`, highest first.
    pub fn from_config(config: &WorkerConfig, prefix: &str) -> Settings {
        let WorkerConfig {
            queues,
            max_jobs,
            job_timeout,
            poll_delay,
            keep_result,
            max_tries,
            health_check_interval,
            drain_timeout,
            admin_listen: _,
        } = config.clone();
        Settings {
            queues: queues.unwrap_or_else(|| queue::keys::priority_queues(prefix)),
            max_jobs: max_jobs as usize,
            job_timeout,
            poll_delay,
            keep_result: Some(keep_result),
            max_tries,
            health_check_interval,
            drain_timeout: drain_timeout.unwrap_or(job_timeout),
            allow_abort: true,
        }
    }
}

/// Counters in the health-check line (arq's `j_complete`, ...).
#[derive(Debug, Default)]
struct Counters {
    /// Jobs that returned.
    complete: AtomicU64,
    /// Jobs that failed (including before running).
    failed: AtomicU64,
    /// Runs ended by `Retry` or cut off by shutdown.
    retried: AtomicU64,
    /// Jobs running now.
    ongoing: AtomicU64,
}

/// How one run ended, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Complete,
    Failed,
    Retried,
    /// Not run: it waits for its account's cap (not a try).
    Deferred,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
            Outcome::Deferred => "deferred",
        }
    }
}

/// What a worker's job tasks share.
struct Shared {
    client: Client,
    registry: Registry,
    settings: Settings,
    counters: Counters,
    /// Running jobs, by id.
    running: Mutex<HashMap<String, Running>>,
    /// Cancelled when the drain deadline passes: running jobs are released.
    cut_off: CancellationToken,
    /// Wakes the poll loop: a job announced on a wake channel, or a slot
    /// freed while the last poll left ready jobs for want of slots.
    wake: Notify,
    /// Whether the last poll ran out of slots with jobs still ready.
    starved: AtomicBool,
    /// Prometheus metrics, when the process exports them.
    metrics: Option<Arc<crate::metrics::WorkerMetrics>>,
}

/// A job this worker runs.
struct Running {
    /// Its queue's index in the settings.
    queue: usize,
    /// Cancelled when its abort is requested.
    abort: CancellationToken,
}

/// A worker over one Redis database.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// A worker running `registry`'s functions with `settings`.
    pub fn new(client: Client, registry: Registry, settings: Settings) -> Self {
        Worker {
            shared: Arc::new(Shared {
                client,
                registry,
                settings,
                counters: Counters::default(),
                running: Mutex::new(HashMap::new()),
                cut_off: CancellationToken::new(),
                wake: Notify::new(),
                starved: AtomicBool::new(false),
                metrics: None,
            }),
        }
    }

    /// Exports job metrics to `metrics`, its slots among them.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::WorkerMetrics>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            metrics.slots.set(shared.settings.max_jobs as i64);
            shared.metrics = Some(metrics);
        }
        self
    }

    /// Polls and runs jobs until `shutdown`, then drains.
    ///
    /// # Errors
    /// None at present: Redis errors while polling are logged and retried
    /// with backoff, since Redis coming back is the normal way out.
    pub async fn run(self, shutdown: CancellationToken) -> queue::Result<()> {
        let s = &self.shared.settings;
        let in_progress_ttl =
            self.shared.registry.longest_timeout(s.job_timeout) + IN_PROGRESS_GRACE;
        let slots = Arc::new(Semaphore::new(s.max_jobs));
        let tasks = TaskTracker::new();
        let mut tick: u64 = 0;
        let mut backoff = Duration::ZERO;
        let mut last_health: Option<tokio::time::Instant> = None;
        info!(queues = ?s.queues, max_jobs = s.max_jobs, functions = ?self.shared.registry.names(), "worker started");

        let listener = tokio::spawn(Self::listen(Arc::clone(&self.shared), shutdown.clone()));
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            let (again, next_due) = match self.poll(&slots, &tasks, tick, in_progress_ttl).await {
                Ok(polled) => {
                    backoff = Duration::ZERO;
                    polled
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(s.poll_delay, MAX_BACKOFF);
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "worker poll failed");
                    (false, None)
                }
            };
            if last_health.is_none_or(|t| t.elapsed() >= s.health_check_interval) {
                match self.write_health().await {
                    Ok(()) => last_health = Some(tokio::time::Instant::now()),
                    Err(e) => warn!(error = %e, "health check write failed"),
                }
            }
            tick += 1;
            if again {
                tokio::task::yield_now().await;
                continue;
            }
            // A deferred job coming due before the poll delay is over is
            // claimed when it does, not up to a poll delay later.
            let until_due = next_due.map_or(Duration::MAX, |at| {
                Duration::from_millis(u64::try_from(at + 1 - now_ms()).unwrap_or(0))
            });
            let pause = (s.poll_delay + backoff)
                .saturating_sub(started.elapsed())
                .min(until_due);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
                () = self.shared.wake.notified(), if backoff.is_zero() => {}
            }
        }
        listener.abort();

        info!(running = tasks.len(), "worker draining");
        tasks.close();
        if tokio::time::timeout(s.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                running = tasks.len(),
                "drain timeout passed; releasing running jobs"
            );
            self.shared.cut_off.cancel();
            tasks.wait().await;
        }
        for q in &s.queues {
            if let Err(e) = self.shared.client.clear_health(q).await {
                warn!(error = %e, queue = %q, "health check delete failed");
            }
        }
        info!("worker stopped");
        Ok(())
    }

    /// Listens for announcements on the served queues' wake channels until
    /// `shutdown`, reconnecting after a failure; each wakes the poll loop.
    async fn listen(shared: Arc<Shared>, shutdown: CancellationToken) {
        let queues = shared.settings.queues.clone();
        while !shutdown.is_cancelled() {
            let wake = || shared.wake.notify_one();
            if let Err(e) = shared.client.listen_wakeups(&queues, wake).await {
                warn!(error = %e, "wake-up channel failed; polling meanwhile");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RELISTEN) => {}
            }
        }
    }

    /// One poll: share the free slots between the queues by priority,
    /// claim (one round trip for every queue; with several queues, one
    /// more first to count their due jobs) and spawn. Says whether to poll
    /// again at once (it claimed jobs, slots are free, and more may be due
    /// behind jobs others hold), and, when slots are left, when the next
    /// deferred job comes due.
    async fn poll(
        &self,
        slots: &Arc<Semaphore>,
        tasks: &TaskTracker,
        tick: u64,
        in_progress_ttl: Duration,
    ) -> queue::Result<(bool, Option<i64>)> {
        let shared = &self.shared;
        let free = slots.available_permits();
        let queues = &shared.settings.queues;
        // Jobs a worker holds stay in the queue until they finish, so a
        // claim looks well past the free slots (arq's queue_read_limit).
        let scan = (5 * shared.settings.max_jobs).max(MIN_READ);
        // Ready jobs per queue: one queue takes what is free and the claim
        // finds out; several are counted first (due jobs but our own
        // running ones) so that priority shares the slots.
        let ready: Vec<usize> = if free == 0 {
            vec![0; queues.len()]
        } else if queues.len() == 1 {
            vec![free]
        } else {
            let mut due = shared.client.due(queues, now_ms()).await?;
            for job in lock(&shared.running).values() {
                due[job.queue] = due[job.queue].saturating_sub(1);
            }
            due
        };
        let lowest = queues.len() - 1;
        let reserve = priority::reserve(shared.settings.max_jobs, queues.len());
        let mut wanted = priority::share_slots(free, &ready, tick, reserve);
        // Low jobs left for the reserve's sake: a freed slot polls again.
        let held_back = reserve > 0 && ready[lowest] > wanted[lowest];
        let mut open: Vec<bool> = ready.iter().map(|n| *n > 0).collect();
        let (mut claimed_any, mut full, mut next_due) = (false, false, None::<i64>);
        // Abort requests are read with the first claims, slots free or not.
        let mut aborts = shared.settings.allow_abort;
        loop {
            let asks: Vec<usize> = (0..queues.len()).filter(|&q| wanted[q] > 0).collect();
            if asks.is_empty() && !aborts {
                break;
            }
            let request: Vec<(&str, usize)> = asks
                .iter()
                .map(|&q| (queues[q].as_str(), wanted[q]))
                .collect();
            let round = shared
                .client
                .claim(&request, scan, now_ms(), in_progress_ttl, aborts)
                .await?;
            if aborts {
                self.cancel_aborted(round.aborts).await?;
                aborts = false;
            }
            for (&q, claims) in asks.iter().zip(round.claims) {
                claimed_any |= !claims.jobs.is_empty();
                full |= claims.rest == Rest::Held;
                open[q] &= claims.rest == Rest::Wanted;
                if let Some(at) = claims.next_due {
                    next_due = Some(next_due.map_or(at, |n: i64| n.min(at)));
                }
                for job in claims.jobs {
                    self.spawn_job(slots, tasks, q, job);
                }
            }
            let room = slots.available_permits();
            if room == 0 {
                // Out of slots with jobs maybe ready: a freed slot polls again.
                shared.starved.store(true, Ordering::Relaxed);
                return Ok((false, None));
            }
            // Slots left where claims found jobs held elsewhere go to the
            // highest queue that may have more (the lowest not while it
            // keeps a reserve).
            wanted.fill(0);
            match (0..queues.len()).find(|&q| open[q] && !(q == lowest && reserve > 0)) {
                Some(q) => wanted[q] = room,
                None => break,
            }
        }
        shared.starved.store(held_back, Ordering::Relaxed);
        let again = full && claimed_any && slots.available_permits() > 0;
        Ok((again, next_due))
    }

    /// Runs a claimed job in a task holding one slot.
    fn spawn_job(
        &self,
        slots: &Arc<Semaphore>,
        tasks: &TaskTracker,
        queue: usize,
        job: queue::Claimed,
    ) {
        let id = job.id.clone();
        // Only the poll loop takes slots, and it claimed no more than were
        // free: this never waits.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(job_id = %id, "no slot for a claimed job; it runs when its claim lapses");
            return;
        };
        let shared = &self.shared;
        let abort = CancellationToken::new();
        lock(&shared.running).insert(
            id.clone(),
            Running {
                queue,
                abort: abort.clone(),
            },
        );
        shared.counters.ongoing.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("job", job_id = %id, queue = %shared.settings.queues[queue]);
        let shared = Arc::clone(shared);
        let queue = shared.settings.queues[queue].clone();
        let slot = run::Slot::new(permit, Arc::clone(&shared));
        tasks.spawn(
            async move {
                let began = tokio::time::Instant::now();
                let outcome = run::run_job(&shared, &queue, job, &abort, slot).await;
                if let Some(m) = &shared.metrics {
                    m.observe(&queue, outcome.as_str(), began.elapsed());
                }
                lock(&shared.running).remove(&id);
                shared.counters.ongoing.fetch_sub(1, Ordering::Relaxed);
                let counter = match outcome {
                    Outcome::Complete => &shared.counters.complete,
                    Outcome::Failed => &shared.counters.failed,
                    Outcome::Retried | Outcome::Deferred => &shared.counters.retried,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            .instrument(span),
        );
    }

    /// Cancels the running jobs among `requested`, whose abort was requested.
    async fn cancel_aborted(&self, requested: Vec<String>) -> queue::Result<()> {
        if requested.is_empty() {
            return Ok(());
        }
        let mut handled = Vec::new();
        {
            let running = lock(&self.shared.running);
            for id in requested {
                if let Some(job) = running.get(&id) {
                    job.abort.cancel();
                    handled.push(id);
                }
            }
        }
        self.shared.client.clear_abort(&handled).await
    }

    async fn write_health(&self) -> queue::Result<()> {
        let c = &self.shared.counters;
        let s = &self.shared.settings;
        let stamp = chrono::Local::now().format("%b-%d %H:%M:%S");
        let ttl = s.health_check_interval + Duration::from_secs(1);
        for q in &s.queues {
            let queued = self.shared.client.queued(q).await?;
            let line = format!(
                "{stamp} j_complete={} j_failed={} j_retried={} j_ongoing={} queued={queued}",
                c.complete.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.retried.load(Ordering::Relaxed),
                c.ongoing.load(Ordering::Relaxed),
            );
            self.shared.client.write_health(q, &line, ttl).await?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a plain map consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
