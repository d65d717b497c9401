//! The engine's arq functions, and the one place engine errors become what
//! a Python caller sees: `execute_workflow` (what a Python application
//! enqueues to start an execution), `run_execution` and `run_operation`
//! (what the engine enqueues for itself).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::warn;
use uuid::Uuid;

use super::executor::Run;
use super::operation::RUN_OPERATION;
use super::{EXECUTE_WORKFLOW, Engine, Error, Priority, RUN_EXECUTION, StartRequest};
use crate::queue::Value;
use crate::store;
use crate::worker::{Args, Function, JobContext, JobError, Registry};

/// Python's exception for bad arguments.
const VALUE_ERROR: &str = "builtins.ValueError";
/// Python's exception for something not found.
const LOOKUP_ERROR: &str = "builtins.LookupError";
/// Keyword arguments `execute_workflow` takes.
const KNOWN: [&str; 6] = [
    "workflow_id",
    "contact_id",
    "priority",
    "idempotency_key",
    "metadata",
    "account_id",
];
/// How long a run turned away by its account's cap waits at most (give or
/// take a quarter) before trying again.
const CAPPED_RETRY: Duration = Duration::from_secs(2);
/// How long a job that met an infrastructure error waits before its retry.
const INFRA_RETRY: Duration = Duration::from_secs(5);

impl Engine {
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
            Function::new(move |ctx, args| {
                let engine = Arc::clone(&engine);
                async move { engine.run_execution_job(ctx, args).await }
            })
            .max_tries(1000)
            .keep_result(Some(Duration::ZERO)),
        );
        let engine = Arc::clone(self);
        registry.register(
            RUN_OPERATION,
            // As `run_execution`: the operation's row counts progress.
            Function::new(move |_, args| {
                let engine = Arc::clone(&engine);
                async move { engine.run_operation_job(args).await }
            })
            .max_tries(1000)
            .keep_result(Some(Duration::ZERO)),
        );
    }

    async fn run_operation_job(&self, args: Args) -> Result<Value, JobError> {
        let id = uuid_arg(&args, RUN_OPERATION, "operation_id")?;
        match self.run_operation(id).await {
            Ok(()) => Ok(Value::None),
            Err(e) => Err(raised(RUN_OPERATION, e)),
        }
    }

    async fn execute_workflow_job(&self, ctx: JobContext, args: Args) -> Result<Value, JobError> {
        let bad = |m: String| JobError::raised(VALUE_ERROR, format!("{EXECUTE_WORKFLOW}: {m}"));
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
            .map_err(|e| raised(EXECUTE_WORKFLOW, e.into()))?
            .filter(|a| expected_account.is_none_or(|given| given == a.to_string()))
            .ok_or_else(|| raised(EXECUTE_WORKFLOW, Error::WorkflowNotFound))?;
        let (e, created) = self
            .start(StartRequest {
                account_id,
                workflow_id,
                contact_id,
                priority,
                idempotency_key,
                metadata,
                source: "arq",
            })
            .await
            .map_err(|e| raised(EXECUTE_WORKFLOW, e))?;
        Ok(Value::Dict(vec![
            (Value::str("execution_id"), Value::str(e.id.to_string())),
            (Value::str("status"), Value::str(e.status.as_str())),
            (Value::str("created"), Value::Bool(created)),
        ]))
    }

    async fn run_execution_job(&self, ctx: JobContext, args: Args) -> Result<Value, JobError> {
        let id = uuid_arg(&args, RUN_EXECUTION, "execution_id")?;
        match self.run_execution(id, &ctx).await {
            // In line for a permit: handed one when a run of the account
            // ends; this deferral is for a hand-over that missed it.
            Ok(Run::Capped) => Err(JobError::Defer {
                defer: CAPPED_RETRY.mul_f64(0.75 + fastrand::f64() / 2.0),
            }),
            Ok(run) => Ok(Value::str(run.as_str())),
            Err(e) if e.is_infrastructure() => Err(raised(RUN_EXECUTION, e)),
            Err(e) => Err(JobError::failed(e.to_string())),
        }
    }
}

/// The first argument of a job of `function`, a UUID string named `name`.
fn uuid_arg(args: &Args, function: &str, name: &str) -> Result<Uuid, JobError> {
    args.get(0, name)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            JobError::raised(
                VALUE_ERROR,
                format!("{function}: `{name}` must be a UUID string"),
            )
        })
}

/// What a Python caller of `function` sees for `e`: `LookupError` for
/// what is not there, `ValueError` for what may not be, and a retry of the
/// job later for an infrastructure error (the row is unchanged since its
/// last checkpoint, so nothing is lost).
fn raised(function: &str, e: Error) -> JobError {
    match e {
        Error::WorkflowNotFound
        | Error::VersionNotFound
        | Error::ContactNotFound
        | Error::ExecutionNotFound
        | Error::OperationNotFound => JobError::raised(LOOKUP_ERROR, format!("{function}: {e}")),
        Error::WorkflowInactive
        | Error::WorkflowArchived
        | Error::ContactOptedOut
        | Error::ContactExists
        | Error::Illegal(_)
        | Error::OperationFinished(_)
        | Error::Invalid { .. } => JobError::raised(VALUE_ERROR, format!("{function}: {e}")),
        Error::Store(_) | Error::Queue(_) | Error::Contended => {
            warn!(error = %e, "job hit an infrastructure error; retrying");
            JobError::Retry {
                defer: Some(INFRA_RETRY),
            }
        }
    }
}
