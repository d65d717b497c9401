//! The workflow engine: starts executions, runs their steps with a
//! checkpoint after each, parks them on waits, retries transient errors,
//! recovers them after crashes.
//!
//! - [`plan`]: the state machine, pure;
//! - [`definition`]: workflow definitions, parsed and validated;
//! - [`reference`]: what each step's templates may read, checked on write;
//! - [`executor`]: `run_execution`, the effectful half that applies plans;
//! - [`effects`]: real providers behind the actions' side effects;
//! - [`maintenance`]: the singleton recovery loop.
//!
//! Work arrives as ARQ jobs ([`Engine::register`]): `execute_workflow`
//! (what a Python application enqueues) and `run_execution` (what the
//! engine enqueues for itself: job id `run_execution:<id>:<wake_seq>`).
//! PostgreSQL is the record; a lost job only delays an execution until the
//! maintenance loop re-enqueues it. Recovery never depends on a job id
//! being free: a job that will not run (finished early, expired, flushed)
//! is replaced under the next `wake_seq`, and a job that will still run is
//! left alone, so a backlog never grows a second job per execution.

pub mod definition;
pub mod effects;
pub mod executor;
pub mod maintenance;
pub mod plan;
pub mod reference;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

use crate::queue::{self, Defer, EnqueueOptions, Value, keys};
use crate::store::{self, execution::Execution};
use crate::worker::{Args, Function, JobContext, JobError, Registry};
use definition::{Definition, RetryPolicy, ValidationError};
use effects::Providers;
use plan::{Event, Status};

/// ARQ function a Python application enqueues to start an execution.
pub const EXECUTE_WORKFLOW: &str = "execute_workflow";
/// ARQ function the engine enqueues to continue an execution.
pub const RUN_EXECUTION: &str = "run_execution";
/// Optimistic attempts of a user's retry against concurrent writers.
const USER_TRANSITION_TRIES: usize = 20;
/// Largest metadata object accepted, serialized bytes.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest workflow name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest workflow description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Errors of the engine, shaped for callers that must branch (the API
/// maps them to status codes, arq functions to Python exceptions).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced row does not exist (in this account).
    #[error("{what} not found")]
    NotFound {
        /// `workflow`, `contact`, `execution`.
        what: &'static str,
        /// The request field that named it.
        field: &'static str,
    },
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The request is valid but the state forbids it.
    #[error("{message}")]
    Conflict {
        /// The field it concerns, if one.
        field: Option<&'static str>,
        /// Why.
        message: String,
    },
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Redis.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// The row kept changing under a user's request; trying again later
    /// may succeed.
    #[error("the execution is changing too fast; try again")]
    Busy,
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Invalid {
            field: if e.field == "definition" {
                e.field
            } else {
                format!("definition.{}", e.field)
            },
            message: match e.step {
                Some(s) => format!("step `{s}`: {}", e.message),
                None => e.message,
            },
        }
    }
}

impl From<plan::Illegal> for Error {
    fn from(e: plan::Illegal) -> Self {
        Error::Conflict {
            field: None,
            message: format!("execution is {}: cannot {}", e.from, event_verb(e.event)),
        }
    }
}

fn event_verb(e: Event) -> &'static str {
    match e {
        Event::Cancel => "cancel it",
        Event::Retry => "retry it (only FAILED executions can be retried)",
        _ => "do that",
    }
}

/// Local result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Queue priority of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Real-time triggers: `flowpilot:queue:high`.
    High,
    /// `flowpilot:queue`.
    #[default]
    Normal,
    /// Bulk work: `flowpilot:queue:low`.
    Low,
}

impl Priority {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The queue its jobs go to, given the queue prefix (`flowpilot:queue`).
    pub fn queue(self, prefix: &str) -> String {
        match self {
            Priority::High => keys::high_queue(prefix),
            Priority::Normal => prefix.to_owned(),
            Priority::Low => keys::low_queue(prefix),
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("`{other}` is not a priority (high, normal, low)")),
        }
    }
}

/// A stored priority this engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a priority (high, normal, low)")]
pub struct UnknownPriority(pub String);

/// How the store reads the column: a value it cannot read is an error,
/// never silently `normal`.
impl TryFrom<String> for Priority {
    type Error = UnknownPriority;
    fn try_from(s: String) -> Result<Self, UnknownPriority> {
        s.parse().map_err(|_| UnknownPriority(s))
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a claim lasts: the worker's job timeout plus a margin, so a
    /// live run never loses it.
    pub lease: Duration,
    /// After this long one run hands the rest of its steps to a fresh job,
    /// well inside the job timeout.
    pub run_budget: Duration,
    /// Default retry policy of transient errors.
    pub retry: RetryPolicy,
    /// How often the maintenance loop looks for due and lost executions.
    pub maintenance_interval: Duration,
    /// The recovery loop leaves due rows this long to their own deferred job.
    pub due_grace: Duration,
    /// QUEUED rows untouched this long are re-enqueued (their job may be lost).
    pub stale_queued_after: Duration,
    /// Log partitions older than this many months are dropped (0: never).
    pub log_retention_months: u32,
    /// This process's name in leases.
    pub owner: String,
    /// Prefix of the priority queues: `<prefix>:high`, `<prefix>`,
    /// `<prefix>:low`, and of the dead set `<prefix>:dead`.
    pub queue_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(310),
            run_budget: Duration::from_secs(150),
            retry: RetryPolicy::default(),
            maintenance_interval: Duration::from_secs(1),
            due_grace: Duration::from_secs(5),
            stale_queued_after: Duration::from_secs(30),
            log_retention_months: 0,
            owner: format!("flowpilot-{}", uuid::Uuid::new_v4().simple()),
            queue_prefix: keys::FLOWPILOT_QUEUE.to_owned(),
        }
    }
}

/// What starts an execution.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Account.
    pub account_id: Uuid,
    /// Workflow (must be active).
    pub workflow_id: Uuid,
    /// Contact (must exist and not have opted out).
    pub contact_id: Uuid,
    /// Queue priority.
    pub priority: Priority,
    /// A repeated start with the same key returns the first execution.
    pub idempotency_key: Option<String>,
    /// Caller's metadata (an object), visible to templates.
    pub metadata: Json,
    /// `api`, `arq`, `kubernetes`.
    pub source: &'static str,
}

/// What [`Engine::enqueue_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// The job is in its queue.
    Added,
    /// Refused: a job or result with this id is still there (arq's dedupe).
    Refused,
}

/// The workflow engine.
pub struct Engine {
    pool: PgPool,
    queue: queue::Client,
    providers: Providers,
    settings: Settings,
    /// Versions are immutable, so parsed definitions are cached forever.
    definitions: Mutex<HashMap<(Uuid, i32), Arc<Definition>>>,
    /// Executions a run of this process holds now. A lease of ours on any
    /// other execution belongs to a run that ended with an error, so this
    /// process may take it back at once instead of waiting for it to lapse.
    running: Mutex<HashSet<Uuid>>,
    /// Prometheus metrics, when the process exports them.
    metrics: Option<crate::metrics::EngineMetrics>,
}

impl Engine {
    /// An engine over `pool` and `queue` with `providers`.
    pub fn new(
        pool: PgPool,
        queue: queue::Client,
        providers: Providers,
        settings: Settings,
    ) -> Self {
        Engine {
            pool,
            queue,
            providers,
            settings,
            definitions: Mutex::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
            metrics: None,
        }
    }

    /// Exports step metrics to `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::EngineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Records a step's outcome and time, when metrics are on.
    fn observe_step(&self, action: &str, outcome: &str, began: chrono::DateTime<Utc>) {
        if let Some(m) = &self.metrics {
            let took = (Utc::now() - began).to_std().unwrap_or_default();
            m.observe(action, outcome, took);
        }
    }

    /// Records what the maintenance loop did with one execution.
    fn observe_recovery(&self, status: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.recovered(status, outcome);
        }
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers `execute_workflow` and `run_execution` on a worker.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let engine = Arc::clone(self);
        registry.register(
            EXECUTE_WORKFLOW,
            Function::new(move |ctx, args| {
                let engine = Arc::clone(&engine);
                async move { engine.execute_workflow_job(ctx, args).await }
            }),
        );
        let engine = Arc::clone(self);
        registry.register(
            RUN_EXECUTION,
            // The row, not the job, counts attempts; results are not kept so
            // the next wake-up's job id is free at once.
            Function::new(move |_, args| {
                let engine = Arc::clone(&engine);
                async move { engine.run_execution_job(args).await }
            })
            .max_tries(1000)
            .keep_result(Some(Duration::ZERO)),
        );
    }

    // === workflows ===

    /// Validates `definition` and creates a workflow with it as version 1.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the step and field; store errors.
    pub async fn create_workflow(
        &self,
        account_id: Uuid,
        name: &str,
        description: Option<&str>,
        active: bool,
        definition: &Json,
    ) -> Result<store::workflow::Workflow> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.contains('\0') {
            return Err(Error::Invalid {
                field: "name".into(),
                message: format!("must be 1 to {MAX_NAME} characters, without NUL"),
            });
        }
        if let Some(d) = description
            && (d.chars().count() > MAX_DESCRIPTION || d.contains('\0'))
        {
            return Err(Error::Invalid {
                field: "description".into(),
                message: format!("must be at most {MAX_DESCRIPTION} characters, without NUL"),
            });
        }
        Definition::parse(definition)?;
        Ok(store::workflow::create(
            &self.pool,
            account_id,
            name,
            description,
            active,
            definition,
        )
        .await?)
    }

    /// Validates `definition` and adds it as the next version.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::NotFound`], store errors.
    pub async fn add_version(
        &self,
        account_id: Uuid,
        workflow_id: Uuid,
        definition: &Json,
    ) -> Result<store::workflow::Workflow> {
        Definition::parse(definition)?;
        store::workflow::add_version(&self.pool, account_id, workflow_id, definition)
            .await?
            .ok_or(Error::NotFound {
                what: "workflow",
                field: "workflow_id",
            })
    }

    /// The parsed definition of a version (cached).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a missing version; [`Error::Invalid`] if the
    /// stored definition no longer validates (a newer engine's rules).
    pub async fn definition(&self, workflow_id: Uuid, version: i32) -> Result<Arc<Definition>> {
        if let Some(d) = lock(&self.definitions).get(&(workflow_id, version)) {
            return Ok(Arc::clone(d));
        }
        let doc = store::workflow::definition(&self.pool, workflow_id, version)
            .await?
            .ok_or(Error::NotFound {
                what: "workflow version",
                field: "workflow_version",
            })?;
        let def = Arc::new(Definition::parse(&doc)?);
        lock(&self.definitions).insert((workflow_id, version), Arc::clone(&def));
        Ok(def)
    }

    // === executions ===

    /// Starts an execution and enqueues its first job. A repeated start with
    /// the same idempotency key returns the first one (`false`) and starts
    /// nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown workflow or contact,
    /// [`Error::Conflict`] for an inactive workflow or an opted-out contact,
    /// [`Error::Invalid`] for bad metadata or key; store and queue errors.
    pub async fn start(&self, req: StartRequest) -> Result<(Execution, bool)> {
        if !req.metadata.is_object() {
            return Err(Error::Invalid {
                field: "metadata".into(),
                message: "must be a JSON object".into(),
            });
        }
        if req.metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(Error::Invalid {
                field: "metadata".into(),
                message: format!("must be at most {MAX_METADATA_BYTES} bytes"),
            });
        }
        if let Some(field) = store::text::first_nul(&req.metadata, "metadata") {
            return Err(Error::Invalid {
                field,
                message: store::text::NUL_MESSAGE.into(),
            });
        }
        if let Some(k) = &req.idempotency_key
            && (k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY || k.contains('\0'))
        {
            return Err(Error::Invalid {
                field: "idempotency_key".into(),
                message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters, without NUL"),
            });
        }
        let wf = store::workflow::get(&self.pool, req.account_id, req.workflow_id)
            .await?
            .ok_or(Error::NotFound {
                what: "workflow",
                field: "workflow_id",
            })?;
        if !wf.is_active {
            return Err(Error::Conflict {
                field: Some("workflow_id"),
                message: "workflow is not active".into(),
            });
        }
        let contact = store::contact::get(&self.pool, req.account_id, req.contact_id)
            .await?
            .ok_or(Error::NotFound {
                what: "contact",
                field: "contact_id",
            })?;
        if contact.opted_out {
            return Err(Error::Conflict {
                field: Some("contact_id"),
                message: "contact has opted out".into(),
            });
        }
        let def = self.definition(wf.id, wf.latest_version).await?;
        let (execution, created) = store::execution::insert(
            &self.pool,
            &store::execution::NewExecution {
                account_id: req.account_id,
                workflow_id: wf.id,
                workflow_version: wf.latest_version,
                contact_id: contact.id,
                priority: req.priority,
                idempotency_key: req.idempotency_key,
                metadata: req.metadata,
                source: req.source.to_owned(),
                first_step_id: def.steps[0].id.clone(),
            },
        )
        .await?;
        if created {
            self.enqueue_soon(&execution).await;
        }
        Ok((execution, created))
    }

    /// Cancels an execution of `account_id`, in one statement that waits
    /// for a checkpoint in flight instead of racing it, so a busy execution
    /// cannot outrun its cancel.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] only when it is already final;
    /// [`Error::Busy`] if it is still not final after the statement (a
    /// writer this engine does not know of keeps changing it).
    pub async fn cancel(&self, account_id: Uuid, id: Uuid) -> Result<Execution> {
        let from = plan::sources(Event::Cancel);
        let to = plan::transition(Status::Running, Event::Cancel)?;
        if let Some(e) = store::execution::cancel(&self.pool, account_id, id, &from, to).await? {
            return Ok(e);
        }
        let e = store::execution::get_in(&self.pool, account_id, id)
            .await?
            .ok_or(Error::NotFound {
                what: "execution",
                field: "execution_id",
            })?;
        plan::transition(e.status, Event::Cancel)?;
        Err(Error::Busy)
    }

    /// Restarts a FAILED execution at the step that failed, as a new
    /// attempt: the attempt number goes on (so side effects carry a new
    /// idempotency key `<id>:<step>:<attempt>`, which receivers that drop
    /// duplicates do not drop), and the step gets its retry policy's full
    /// number of attempts again, counted from this one.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] unless it is FAILED.
    pub async fn retry(&self, account_id: Uuid, id: Uuid) -> Result<Execution> {
        let e = self
            .transition_by_user(account_id, id, Event::Retry, |e| {
                e.attempt += 1;
                e.first_attempt = e.attempt;
                e.error = None;
                e.completed_at = None;
                e.waiting_reason = None;
                e.step_state = None;
                e.wake_seq += 1;
            })
            .await?;
        self.enqueue_soon(&e).await;
        Ok(e)
    }

    /// Applies a user's event with optimistic retries against concurrent
    /// writers.
    async fn transition_by_user(
        &self,
        account_id: Uuid,
        id: Uuid,
        event: Event,
        apply: impl Fn(&mut Execution),
    ) -> Result<Execution> {
        for _ in 0..USER_TRANSITION_TRIES {
            let mut e = store::execution::get_in(&self.pool, account_id, id)
                .await?
                .ok_or(Error::NotFound {
                    what: "execution",
                    field: "execution_id",
                })?;
            e.status = plan::transition(e.status, event)?;
            apply(&mut e);
            let mut conn = self.pool.acquire().await.map_err(store::Error::from)?;
            if store::execution::save(&mut conn, &mut e).await? {
                return Ok(e);
            }
        }
        Err(Error::Busy)
    }

    /// Enqueues `e` now; if Redis is down, the row (committed, QUEUED) is
    /// enough: the maintenance loop enqueues it once it is stale. So a
    /// caller never sees an error for work that is safely recorded.
    async fn enqueue_soon(&self, e: &Execution) {
        match self.enqueue_run(e, None).await {
            Ok(Enqueued::Added) => {}
            // Only a reused wake_seq can meet an old job or result; the
            // maintenance loop moves the row to a fresh job id.
            Ok(Enqueued::Refused) => {
                warn!(execution_id = %e.id, job_id = %job_id(e), "job id taken; maintenance will enqueue a fresh one")
            }
            Err(err) => {
                warn!(execution_id = %e.id, error = %err, "enqueue failed; maintenance will re-enqueue")
            }
        }
    }

    /// Enqueues the job that runs `e` now, or at `at`, under `e`'s current
    /// job id; says whether arq's dedupe refused it.
    async fn enqueue_run(
        &self,
        e: &Execution,
        at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Enqueued> {
        let added = self
            .queue
            .enqueue(
                RUN_EXECUTION,
                vec![Value::str(e.id.to_string())],
                vec![],
                EnqueueOptions {
                    job_id: Some(job_id(e)),
                    queue: Some(self.queue_of(e)),
                    defer: at.map_or(Defer::No, |t| Defer::UntilMs(t.timestamp_millis())),
                    ..EnqueueOptions::default()
                },
            )
            .await?;
        Ok(if added.is_some() {
            Enqueued::Added
        } else {
            Enqueued::Refused
        })
    }

    /// The queue `e`'s jobs go to.
    fn queue_of(&self, e: &Execution) -> String {
        e.priority.queue(&self.settings.queue_prefix)
    }

    // === arq entry points ===

    async fn execute_workflow_job(&self, ctx: JobContext, args: Args) -> Result<Value, JobError> {
        const VALUE_ERROR: &str = "builtins.ValueError";
        const LOOKUP_ERROR: &str = "builtins.LookupError";
        const KNOWN: [&str; 6] = [
            "workflow_id",
            "contact_id",
            "priority",
            "idempotency_key",
            "metadata",
            "account_id",
        ];
        let bad = |m: String| JobError::raised(VALUE_ERROR, format!("execute_workflow: {m}"));
        if let Some((k, _)) = args
            .kwargs
            .iter()
            .find(|(k, _)| !KNOWN.contains(&k.as_str()))
        {
            return Err(bad(format!("unexpected argument `{k}`")));
        }
        if args.args.len() > 2 {
            return Err(bad("takes at most 2 positional arguments".into()));
        }
        let uuid_arg = |pos: usize, name: &str| -> Result<Uuid, JobError> {
            let v = args
                .get(pos, name)
                .ok_or_else(|| bad(format!("missing argument `{name}`")))?;
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad(format!("`{name}` must be a UUID string")))
        };
        // An optional keyword argument that must be a string (None = absent).
        let str_kw = |name: &str| -> Result<Option<&str>, JobError> {
            match args.kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v) {
                None | Some(Value::None) => Ok(None),
                Some(Value::Str(s)) => Ok(Some(s)),
                Some(_) => Err(bad(format!("`{name}` must be a string"))),
            }
        };
        let workflow_id = uuid_arg(0, "workflow_id")?;
        let contact_id = uuid_arg(1, "contact_id")?;
        let priority = match str_kw("priority")? {
            None => Priority::Normal,
            Some(p) => p
                .parse()
                .map_err(|m: String| bad(format!("priority: {m}")))?,
        };
        // Without a key of the caller's, the job id is one: a retried job
        // (a worker died mid-start) finds the execution it started.
        let idempotency_key = Some(
            str_kw("idempotency_key")?.map_or_else(|| format!("arq:{}", ctx.job_id), str::to_owned),
        );
        let metadata = match args
            .kwargs
            .iter()
            .find(|(k, _)| k == "metadata")
            .map(|(_, v)| v)
        {
            None | Some(Value::None) => json!({}),
            Some(v @ Value::Dict(_)) => v.to_json(),
            Some(_) => return Err(bad("`metadata` must be a dict".into())),
        };
        // The workflow names the account; a caller may assert which one.
        let expected_account = str_kw("account_id")?;
        let account_id = store::workflow::account_of(&self.pool, workflow_id)
            .await
            .map_err(infra)?
            .filter(|a| expected_account.is_none_or(|given| given == a.to_string()))
            .ok_or_else(|| {
                JobError::raised(
                    LOOKUP_ERROR,
                    format!("execute_workflow: workflow {workflow_id} not found"),
                )
            })?;
        let started = self
            .start(StartRequest {
                account_id,
                workflow_id,
                contact_id,
                priority,
                idempotency_key,
                metadata,
                source: "arq",
            })
            .await;
        match started {
            Ok((e, created)) => Ok(Value::Dict(vec![
                (Value::str("execution_id"), Value::str(e.id.to_string())),
                (Value::str("status"), Value::str(e.status.as_str())),
                (Value::str("created"), Value::Bool(created)),
            ])),
            Err(Error::NotFound { what, .. }) => Err(JobError::raised(
                LOOKUP_ERROR,
                format!("execute_workflow: {what} not found"),
            )),
            Err(e @ (Error::Invalid { .. } | Error::Conflict { .. })) => Err(bad(e.to_string())),
            Err(e @ (Error::Store(_) | Error::Queue(_) | Error::Busy)) => Err(infra(e)),
        }
    }

    async fn run_execution_job(&self, args: Args) -> Result<Value, JobError> {
        let id = args
            .get(0, "execution_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                JobError::raised(
                    "builtins.ValueError",
                    "run_execution: `execution_id` must be a UUID string",
                )
            })?;
        match self.run_execution(id).await {
            Ok(run) => Ok(Value::str(run.as_str())),
            Err(e @ (Error::Store(_) | Error::Queue(_) | Error::Busy)) => Err(infra(e)),
            Err(e) => Err(JobError::failed(e.to_string())),
        }
    }
}

/// An infrastructure error inside a job: retry the job later; the row is
/// unchanged since its last checkpoint, so nothing is lost.
fn infra(e: impl std::fmt::Display) -> JobError {
    warn!(error = %e, "job hit an infrastructure error; retrying");
    JobError::Retry {
        defer: Some(Duration::from_secs(5)),
    }
}

/// The id of `e`'s current `run_execution` job.
fn job_id(e: &Execution) -> String {
    format!("{RUN_EXECUTION}:{}:{}", e.id, e.wake_seq)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
