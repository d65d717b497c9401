//! Functions every flowpilot worker serves besides the engine's, so that an
//! operator can check a deployment end to end from Python:
//! `await redis.enqueue_job('ping')` returns `'pong'`, and
//! `enqueue_job('echo', 1, x=2)` returns `((1,), {'x': 2})`.

use super::{Args, Function, Registry};
use crate::queue::Value;

/// Registers `ping` and `echo` in `registry`.
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
}
