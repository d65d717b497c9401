//! `Registry`: the async functions a worker runs, by the name jobs call.
//!
//! A function receives a [`JobContext`] and the job's [`Args`] and returns a
//! [`Value`] for the result, or a [`JobError`] that says how the run ends:
//! retried later (arq's `Retry`) or failed with a Python exception class that
//! Python's `Job.result()` raises.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::queue::Value;

/// arq's exception for runs that fail outside the function.
pub const JOB_EXECUTION_FAILED: &str = "arq.worker.JobExecutionFailed";
/// The exception class for ordinary failures of our functions.
pub const RUNTIME_ERROR: &str = "builtins.RuntimeError";

/// Where and how often a job is running, as arq's `ctx` has it.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id.
    pub job_id: String,
    /// This run's try number, from 1.
    pub job_try: i64,
    /// When it was enqueued, Unix ms.
    pub enqueue_time_ms: i64,
    /// Its queue score when claimed (the run time it was due at), Unix ms.
    pub score: i64,
    /// The queue it was claimed from.
    pub queue: String,
}

/// A job's positional and keyword arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in call order.
    pub kwargs: Vec<(String, Value)>,
}

impl Args {
    /// The argument at `pos`, or the keyword `name`.
    pub fn get(&self, pos: usize, name: &str) -> Option<&Value> {
        self.args
            .get(pos)
            .or_else(|| self.kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v))
    }
}

/// How a function's run ends when it does not return a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Run again later (arq's `Retry(defer)`): the job stays queued, no
    /// result is stored, the try counter advances.
    #[error("retry requested")]
    Retry {
        /// Delay before the next run; `None` keeps the old score.
        defer: Option<Duration>,
    },
    /// Run later without counting a try: the job did not run (its
    /// account's cap of running executions is reached).
    #[error("deferred")]
    Defer {
        /// Delay before the next attempt to run it.
        defer: Duration,
    },
    /// Fail with `class(message)`, which Python's `Job.result()` raises.
    #[error("{class}: {message}")]
    Failed {
        /// Dotted Python class, e.g. `builtins.ValueError`.
        class: String,
        /// Its single argument.
        message: String,
    },
}

impl JobError {
    /// A failure raised in Python as `RuntimeError(message)`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::raised(RUNTIME_ERROR, message)
    }

    /// A failure raised in Python as `class(message)`, e.g.
    /// `builtins.ValueError`.
    pub fn raised(class: &str, message: impl Into<String>) -> Self {
        JobError::Failed {
            class: class.to_owned(),
            message: message.into(),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext, Args) -> BoxFuture + Send + Sync>;

/// One registered function with its per-function settings.
#[derive(Clone)]
pub struct Function {
    handler: Handler,
    /// Overrides the worker's job timeout.
    pub timeout: Option<Duration>,
    /// Overrides the worker's max tries.
    pub max_tries: Option<i64>,
    /// Overrides how long results are kept: `Some(None)` forever,
    /// `Some(Some(ZERO))` not at all.
    pub keep_result: Option<Option<Duration>>,
}

impl Function {
    /// Wraps an async function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(JobContext, Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        Function {
            handler: Arc::new(move |ctx, args| Box::pin(f(ctx, args))),
            timeout: None,
            max_tries: None,
            keep_result: None,
        }
    }

    /// Sets a timeout for this function.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets max tries for this function.
    pub fn max_tries(mut self, n: i64) -> Self {
        self.max_tries = Some(n);
        self
    }

    /// Sets how long this function's results are kept (`None`: forever).
    pub fn keep_result(mut self, keep: Option<Duration>) -> Self {
        self.keep_result = Some(keep);
        self
    }

    pub(crate) fn call(&self, ctx: JobContext, args: Args) -> BoxFuture {
        (self.handler)(ctx, args)
    }
}

/// Functions by name. Every worker on a queue must know every function
/// enqueued there (`PROTOCOL.md` §9).
#[derive(Clone, Default)]
pub struct Registry {
    functions: HashMap<String, Function>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `function` under `name`, replacing any earlier one.
    pub fn register(&mut self, name: impl Into<String>, function: Function) -> &mut Self {
        self.functions.insert(name.into(), function);
        self
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The longest timeout of any function, or `default` if longer: the
    /// in-progress key must outlive every run (arq: max timeout + 10 s).
    pub fn longest_timeout(&self, default: Duration) -> Duration {
        self.functions
            .values()
            .filter_map(|f| f.timeout)
            .fold(default, Duration::max)
    }
}
