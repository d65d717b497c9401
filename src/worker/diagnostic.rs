//! Functions every flowpilot worker serves besides the engine's, so that an
//! operator can check a deployment end to end from Python:
//! `await redis.enqueue_job('ping')` returns `'pong'`,
//! `enqueue_job('echo', 1, x=2)` returns `((1,), {'x': 2})`, and
//! `enqueue_job('sleep', 2.5)` holds a job slot for 2.5 s (to watch
//! draining, timeouts and crash recovery) and returns 2.5.

use std::time::Duration;

use super::{Args, Function, JobError, Registry};
use crate::queue::Value;

/// Longest `sleep` accepted, so a typo cannot park a slot for days.
const MAX_SLEEP_S: f64 = 3600.0;

/// Registers `ping`, `echo` and `sleep` in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "ping",
        Function::new(|_, _| async { Ok(Value::str("pong")) }),
    );
    registry.register(
        "echo",
        Function::new(|_, Args { args, kwargs }| async move {
            let kwargs = kwargs
                .into_iter()
                .map(|(k, v)| (Value::Str(k), v))
                .collect();
            Ok(Value::Tuple(vec![Value::Tuple(args), Value::Dict(kwargs)]))
        }),
    );
    registry.register(
        "sleep",
        Function::new(|_, args: Args| async move {
            let seconds = match args.get(0, "seconds") {
                Some(Value::Int(i)) => *i as f64,
                Some(Value::Float(f)) => *f,
                _ => return Err(JobError::failed("sleep(seconds): seconds must be a number")),
            };
            if !(0.0..=MAX_SLEEP_S).contains(&seconds) {
                return Err(JobError::failed(format!(
                    "sleep(seconds): seconds must be within 0..={MAX_SLEEP_S}"
                )));
            }
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            Ok(Value::Float(seconds))
        }),
    );
}
