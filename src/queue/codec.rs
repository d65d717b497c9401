//! ARQ job and result payloads (`PROTOCOL.md` §3) in the three serializers
//! arq users configure: pickle (arq's default), JSON and msgpack.
//!
//! Reading accepts any of the three whatever the configured writer, telling
//! them apart by their first bytes (a pickle starts `80 02..05`, a JSON
//! object `{`, a msgpack map `8x`/`de`/`df`), so a queue fed by producers
//! with different settings still runs. Writing uses the configured one.

use std::str::FromStr;

use num_bigint::BigInt;
use num_traits::ToPrimitive;

use super::pickle;
use super::value::Value;

/// What arq stores as `r` when a result cannot be serialized (and so what
/// every failure looks like with JSON or msgpack).
pub const UNSERIALIZABLE_RESULT: &str = "unable to serialize result";

/// Why a payload could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A pickle the reader does not understand.
    #[error(transparent)]
    Pickle(#[from] pickle::Error),
    /// Invalid JSON.
    #[error("invalid JSON payload: {0}")]
    Json(String),
    /// Invalid msgpack.
    #[error("invalid msgpack payload: {0}")]
    Msgpack(String),
    /// The bytes decode, but not to a job / result dict.
    #[error("payload field `{field}`: {problem}")]
    Shape {
        /// The payload key (`f`, `a`, `et`, ...).
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The value has no representation in this serializer (bytes in JSON,
    /// an exception in msgpack, ...).
    #[error("value cannot be written as {0}")]
    Unserializable(Serializer),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The payload format of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Serializer {
    /// Python pickle: arq's default; the only one that carries exceptions.
    #[default]
    Pickle,
    /// `json.dumps(..).encode()` / `json.loads`.
    Json,
    /// `msgpack.packb` / `msgpack.unpackb(raw=False)`.
    Msgpack,
}

impl std::fmt::Display for Serializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Serializer::Pickle => "pickle",
            Serializer::Json => "json",
            Serializer::Msgpack => "msgpack",
        })
    }
}

impl From<crate::config::SerializerName> for Serializer {
    fn from(name: crate::config::SerializerName) -> Self {
        use crate::config::SerializerName as N;
        match name {
            N::Pickle => Serializer::Pickle,
            N::Json => Serializer::Json,
            N::Msgpack => Serializer::Msgpack,
        }
    }
}

impl FromStr for Serializer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pickle" => Ok(Serializer::Pickle),
            "json" => Ok(Serializer::Json),
            "msgpack" => Ok(Serializer::Msgpack),
            other => Err(format!(
                "unknown serializer `{other}` (expected pickle, json or msgpack)"
            )),
        }
    }
}

impl Serializer {
    /// Which serializer wrote `bytes`, from its first bytes.
    pub fn detect(bytes: &[u8]) -> Serializer {
        match bytes {
            [0x80, 2..=5, ..] => Serializer::Pickle,
            [b'{', ..] | [b' ' | b'\n' | b'\t', ..] => Serializer::Json,
            _ => Serializer::Msgpack,
        }
    }

    /// Writes one value.
    ///
    /// # Errors
    /// [`Error::Unserializable`] when the value has no form in this format.
    pub fn encode(self, v: &Value) -> Result<Vec<u8>> {
        match self {
            Serializer::Pickle => Ok(pickle::encode(v)),
            Serializer::Json => {
                let j = to_json(v).ok_or(Error::Unserializable(self))?;
                serde_json::to_vec(&j).map_err(|_| Error::Unserializable(self))
            }
            Serializer::Msgpack => {
                let m = to_msgpack(v).ok_or(Error::Unserializable(self))?;
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, &m).map_err(|_| Error::Unserializable(self))?;
                Ok(out)
            }
        }
    }

    /// Reads one value written by this serializer.
    ///
    /// # Errors
    /// When the bytes are not valid in this format.
    pub fn decode(self, bytes: &[u8]) -> Result<Value> {
        match self {
            Serializer::Pickle => Ok(pickle::decode(bytes)?),
            Serializer::Json => {
                let j: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
                Ok(Value::from_json(&j))
            }
            Serializer::Msgpack => {
                let mut rd = bytes;
                let m =
                    rmpv::decode::read_value(&mut rd).map_err(|e| Error::Msgpack(e.to_string()))?;
                if !rd.is_empty() {
                    return Err(Error::Msgpack("trailing bytes".into()));
                }
                from_msgpack(m)
            }
        }
    }
}

/// Reads a value in whichever of the three formats it is.
///
/// # Errors
/// When the bytes are valid in none of them.
pub fn decode_any(bytes: &[u8]) -> Result<Value> {
    Serializer::detect(bytes).decode(bytes)
}

fn to_json(v: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::BigInt(b) => J::from(b.to_u64()?),
        Value::Float(f) => J::from(serde_json::Number::from_f64(*f)?),
        Value::Str(s) => J::String(s.clone()),
        Value::List(items) | Value::Tuple(items) => {
            J::Array(items.iter().map(to_json).collect::<Option<_>>()?)
        }
        Value::Dict(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| Some((json_key(k)?, to_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Bytes(_) | Value::Set(_) | Value::Object { .. } | Value::Global(_) => return None,
    })
}

/// Python's `json.dumps` turns int, float, bool and None keys into strings.
fn json_key(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(true) => Some("true".into()),
        Value::Bool(false) => Some("false".into()),
        Value::None => Some("null".into()),
        _ => None,
    }
}

fn to_msgpack(v: &Value) -> Option<rmpv::Value> {
    use rmpv::Value as M;
    Some(match v {
        Value::None => M::Nil,
        Value::Bool(b) => M::Boolean(*b),
        Value::Int(i) => M::from(*i),
        Value::BigInt(b) => M::from(b.to_u64()?),
        Value::Float(f) => M::F64(*f),
        Value::Str(s) => M::from(s.as_str()),
        Value::Bytes(b) => M::Binary(b.clone()),
        Value::List(items) | Value::Tuple(items) => {
            M::Array(items.iter().map(to_msgpack).collect::<Option<_>>()?)
        }
        Value::Dict(pairs) => M::Map(
            pairs
                .iter()
                .map(|(k, v)| Some((to_msgpack(k)?, to_msgpack(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Set(_) | Value::Object { .. } | Value::Global(_) => return None,
    })
}

fn from_msgpack(m: rmpv::Value) -> Result<Value> {
    use rmpv::Value as M;
    Ok(match m {
        M::Nil => Value::None,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(v), _) => Value::Int(v),
            (None, Some(u)) => Value::BigInt(BigInt::from(u)),
            _ => return Err(Error::Msgpack("integer out of range".into())),
        },
        M::F32(f) => Value::Float(f64::from(f)),
        M::F64(f) => Value::Float(f),
        M::String(s) => match s.into_str() {
            Some(s) => Value::Str(s),
            None => return Err(Error::Msgpack("string is not UTF-8".into())),
        },
        M::Binary(b) => Value::Bytes(b),
        M::Array(items) => Value::List(items.into_iter().map(from_msgpack).collect::<Result<_>>()?),
        M::Map(pairs) => Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((from_msgpack(k)?, from_msgpack(v)?)))
                .collect::<Result<_>>()?,
        ),
        M::Ext(..) => {
            return Err(Error::Msgpack(
                "msgpack extension types are not supported".into(),
            ));
        }
    })
}

// === payloads ===

/// A job payload: what `arq:job:<id>` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Registered function name (`f`).
    pub function: String,
    /// Positional arguments (`a`; a tuple in pickle, a list otherwise).
    pub args: Vec<Value>,
    /// Keyword arguments (`k`).
    pub kwargs: Vec<(String, Value)>,
    /// Try override set at enqueue (`t`, `_job_try`).
    pub job_try: Option<i64>,
    /// Enqueue time in Unix ms (`et`).
    pub enqueue_time_ms: i64,
}

/// A result payload: what `arq:result:<id>` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    /// The job as it ran, with `job_try` the actual try number.
    pub job: Job,
    /// Whether the function returned (`s`).
    pub success: bool,
    /// Its return value or the exception (`r`).
    pub result: Value,
    /// Start and finish, Unix ms (`st`, `ft`).
    pub start_ms: i64,
    /// See `start_ms`.
    pub finish_ms: i64,
    /// Queue the job ran from (`q`; absent from arq 0.25 results).
    pub queue: Option<String>,
    /// Job id (`id`; absent from arq 0.25 results).
    pub job_id: Option<String>,
}

impl Job {
    fn fields(&self, s: Serializer) -> Vec<(Value, Value)> {
        let args = match s {
            Serializer::Pickle => Value::Tuple(self.args.clone()),
            _ => Value::List(self.args.clone()),
        };
        vec![
            (
                Value::str("t"),
                self.job_try.map_or(Value::None, Value::Int),
            ),
            (Value::str("f"), Value::str(self.function.clone())),
            (Value::str("a"), args),
            (
                Value::str("k"),
                Value::Dict(
                    self.kwargs
                        .iter()
                        .map(|(k, v)| (Value::str(k.clone()), v.clone()))
                        .collect(),
                ),
            ),
            (Value::str("et"), Value::Int(self.enqueue_time_ms)),
        ]
    }

    /// Serializes the job payload.
    ///
    /// # Errors
    /// [`Error::Unserializable`] when an argument has no form in `s`.
    pub fn encode(&self, s: Serializer) -> Result<Vec<u8>> {
        s.encode(&Value::Dict(self.fields(s)))
    }

    /// Reads a job payload in any of the three formats.
    ///
    /// # Errors
    /// When the bytes do not decode or lack a required key.
    pub fn decode(bytes: &[u8]) -> Result<Job> {
        Job::from_value(&decode_any(bytes)?)
    }

    fn from_value(v: &Value) -> Result<Job> {
        if !matches!(v, Value::Dict(_)) {
            return Err(Error::Shape {
                field: "payload",
                problem: "not a dict",
            });
        }
        let function = required(v, "f")?
            .as_str()
            .ok_or(Error::Shape {
                field: "f",
                problem: "not a string",
            })?
            .to_owned();
        let args = required(v, "a")?
            .as_seq()
            .ok_or(Error::Shape {
                field: "a",
                problem: "not a tuple or list",
            })?
            .to_vec();
        let Value::Dict(kw) = required(v, "k")? else {
            return Err(Error::Shape {
                field: "k",
                problem: "not a dict",
            });
        };
        let kwargs = kw
            .iter()
            .map(|(k, v)| match k {
                Value::Str(k) => Ok((k.clone(), v.clone())),
                _ => Err(Error::Shape {
                    field: "k",
                    problem: "key is not a string",
                }),
            })
            .collect::<Result<_>>()?;
        let job_try = match required(v, "t")? {
            Value::None => None,
            Value::Int(i) => Some(*i),
            _ => {
                return Err(Error::Shape {
                    field: "t",
                    problem: "not an int or None",
                });
            }
        };
        let enqueue_time_ms = int_field(v, "et")?;
        Ok(Job {
            function,
            args,
            kwargs,
            job_try,
            enqueue_time_ms,
        })
    }
}

impl JobResult {
    /// Serializes the result payload. When the return value has no form in
    /// `s`, writes what arq writes instead: `s = False`,
    /// `r = "unable to serialize result"`.
    ///
    /// # Errors
    /// Only when even that fallback cannot be written (an argument of the
    /// job itself is unserializable).
    pub fn encode(&self, s: Serializer) -> Result<Vec<u8>> {
        match s.encode(&self.to_value(s, self.success, self.result.clone())) {
            Err(Error::Unserializable(_)) => {
                s.encode(&self.to_value(s, false, Value::str(UNSERIALIZABLE_RESULT)))
            }
            other => other,
        }
    }

    fn to_value(&self, s: Serializer, success: bool, result: Value) -> Value {
        let mut fields = self.job.fields(s);
        fields.extend([
            (Value::str("s"), Value::Bool(success)),
            (Value::str("r"), result),
            (Value::str("st"), Value::Int(self.start_ms)),
            (Value::str("ft"), Value::Int(self.finish_ms)),
            (
                Value::str("q"),
                self.queue.clone().map_or(Value::None, Value::Str),
            ),
            (
                Value::str("id"),
                self.job_id.clone().map_or(Value::None, Value::Str),
            ),
        ]);
        Value::Dict(fields)
    }

    /// Reads a result payload in any of the three formats.
    ///
    /// # Errors
    /// When the bytes do not decode or lack a required key.
    pub fn decode(bytes: &[u8]) -> Result<JobResult> {
        let v = decode_any(bytes)?;
        let job = Job::from_value(&v)?;
        let success = match required(&v, "s")? {
            Value::Bool(b) => *b,
            _ => {
                return Err(Error::Shape {
                    field: "s",
                    problem: "not a bool",
                });
            }
        };
        let opt_str = |key| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(JobResult {
            success,
            result: required(&v, "r")?.clone(),
            start_ms: int_field(&v, "st")?,
            finish_ms: int_field(&v, "ft")?,
            queue: opt_str("q"),
            job_id: opt_str("id"),
            job,
        })
    }
}

fn required<'a>(v: &'a Value, field: &'static str) -> Result<&'a Value> {
    v.get(field).ok_or(Error::Shape {
        field,
        problem: "missing",
    })
}

fn int_field(v: &Value, field: &'static str) -> Result<i64> {
    match required(v, field)? {
        Value::Int(i) => Ok(*i),
        // JSON writers may render integral ms as 1.7e12.
        Value::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
        _ => Err(Error::Shape {
            field,
            problem: "not an int",
        }),
    }
}

#[cfg(test)]
mod tests;
