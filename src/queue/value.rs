//! `Value`: the Python object model that ARQ payloads carry.
//!
//! ARQ jobs are Python dicts serialized with pickle, JSON or msgpack. Their
//! arguments and results may be anything Python can serialize, so the queue
//! layer works on this small tree of Python values rather than on
//! `serde_json::Value`: a tuple is not a list, bytes are not a string, a dict
//! key may be an int, and `datetime` or an exception arrives as a global class
//! plus the arguments to call it with (pickle's REDUCE).
//!
//! The engine above turns a `Value` into JSON with [`Value::to_json`] where it
//! needs one; only pickle can carry [`Value::Object`], so JSON and msgpack
//! writers report such values as unserializable, as Python's would.

use num_bigint::BigInt;
use serde_json::json;

/// One Python value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits in 64 bits.
    Int(i64),
    /// An `int` beyond 64 bits (pickle LONG1/LONG4, e.g. `2**70`).
    BigInt(BigInt),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// `bytes` or `bytearray`.
    Bytes(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`, in insertion order; keys may be any hashable value.
    Dict(Vec<(Value, Value)>),
    /// A `set` or `frozenset`, in pickle order.
    Set(Vec<Value>),
    /// An instance of a class built by calling `class(*args)` and then
    /// setting `state` (pickle's REDUCE / NEWOBJ and BUILD): exceptions,
    /// datetimes, decimals, user classes.
    Object {
        /// Dotted `module.qualname`, e.g. `builtins.ValueError`.
        class: String,
        /// Positional arguments of the call.
        args: Vec<Value>,
        /// State applied after the call (`__setstate__` / `__dict__`), if any.
        state: Option<Box<Value>>,
    },
    /// A bare reference to a global (a class or function, not an instance).
    Global(String),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// An exception instance `class(message)`, the way a Python reader of a
    /// pickle payload raises it (`builtins.RuntimeError`, ...).
    pub fn exception(class: impl Into<String>, message: impl Into<String>) -> Self {
        Value::Object {
            class: class.into(),
            args: vec![Value::Str(message.into())],
            state: None,
        }
    }

    /// The string inside, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside, if this is an `int` that fits in 64 bits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A JSON rendering for the engine and for logs. Lossy by design: tuples
    /// and sets become arrays, bytes their UTF-8 text, big ints decimal
    /// strings, `datetime.datetime` its ISO-8601 text and other objects
    /// `{"$class": .., "args": [..]}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::None => serde_json::Value::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::BigInt(b) => json!(b.to_string()),
            Value::Float(f) => json!(f),
            Value::Str(s) => json!(s),
            Value::Bytes(b) => json!(String::from_utf8_lossy(b)),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => {
                serde_json::Value::Array(v.iter().map(Value::to_json).collect())
            }
            Value::Dict(items) => serde_json::Value::Object(
                items
                    .iter()
                    .map(|(k, v)| (key_string(k), v.to_json()))
                    .collect(),
            ),
            Value::Object { class, args, .. } => match datetime_iso(self) {
                Some(iso) => json!(iso),
                None => json!({
                    "$class": class,
                    "args": args.iter().map(Value::to_json).collect::<Vec<_>>(),
                }),
            },
            Value::Global(name) => json!({ "$global": name }),
        }
    }

    /// The value for a JSON document: objects become dicts, arrays lists,
    /// integers ints (beyond i64: u64 or float, as serde_json parsed them).
    pub fn from_json(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::BigInt(BigInt::from(u))
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Dict(
                o.iter()
                    .map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

fn key_string(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

/// ISO-8601 text of a pickled `datetime.datetime` (`class(bytes10[, tz])`),
/// with the offset when its tz is a fixed `datetime.timezone`.
pub fn datetime_iso(v: &Value) -> Option<String> {
    let Value::Object { class, args, .. } = v else {
        return None;
    };
    if class != "datetime.datetime" {
        return None;
    }
    let Some(Value::Bytes(b)) = args.first() else {
        return None;
    };
    if b.len() != 10 {
        return None;
    }
    let year = u32::from(b[0]) * 256 + u32::from(b[1]);
    let micros = (u32::from(b[7]) << 16) | (u32::from(b[8]) << 8) | u32::from(b[9]);
    let mut s = format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        b[2] & 0x7f,
        b[3],
        b[4],
        b[5],
        b[6]
    );
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    if let Some(tz) = args.get(1) {
        s.push_str(&utc_offset(tz)?);
    }
    Some(s)
}

/// `+HH:MM` for a pickled `datetime.timezone(timedelta(days, secs, us))`.
fn utc_offset(tz: &Value) -> Option<String> {
    let Value::Object { class, args, .. } = tz else {
        return None;
    };
    if class != "datetime.timezone" {
        return None;
    }
    let Some(Value::Object {
        class: td,
        args: td_args,
        ..
    }) = args.first()
    else {
        return None;
    };
    if td != "datetime.timedelta" {
        return None;
    }
    let days = td_args.first().and_then(Value::as_i64).unwrap_or(0);
    let secs = td_args.get(1).and_then(Value::as_i64).unwrap_or(0);
    let total = days * 86_400 + secs;
    let sign = if total < 0 { '-' } else { '+' };
    let total = total.abs();
    Some(format!(
        "{sign}{:02}:{:02}",
        total / 3600,
        (total % 3600) / 60
    ))
}
