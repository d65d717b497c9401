//! The fields of a retry policy a step or the configuration may set,
//! parsed and checked; the engine's `retry` module does the math.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

/// Most attempts a policy may allow.
pub const MAX_ATTEMPTS: i32 = 50;

/// Fields that override a policy: a step's `retry`, or a configured
/// default for an action type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOverride {
    /// Attempts in all.
    pub max_attempts: Option<i32>,
    /// Backoff cap before the first retry.
    pub backoff: Option<Duration>,
    /// Backoff cap overall.
    pub max_backoff: Option<Duration>,
    /// Time limit of a round of attempts.
    pub max_elapsed: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFields {
    #[serde(default)]
    max_attempts: Option<i32>,
    #[serde(default)]
    backoff: Option<String>,
    #[serde(default)]
    max_backoff: Option<String>,
    #[serde(default)]
    max_elapsed: Option<String>,
}

impl RetryOverride {
    /// A step's `retry` object: `max_attempts`, `backoff`, `max_backoff`,
    /// `max_elapsed` (durations as `30s`, `5m`).
    ///
    /// # Errors
    /// The field at fault and what is wrong with it.
    pub fn parse(v: &Json) -> Result<RetryOverride, (String, String)> {
        let f: RetryFields =
            serde_json::from_value(v.clone()).map_err(|e| ("(retry)".to_owned(), e.to_string()))?;
        Self::from_fields(f)
    }

    fn from_fields(f: RetryFields) -> Result<RetryOverride, (String, String)> {
        let dur = |field: &str, s: &Option<String>| -> Result<Option<Duration>, (String, String)> {
            s.as_deref()
                .map(|s| {
                    let d = humantime::parse_duration(s.trim())
                        .map_err(|e| (field.to_owned(), e.to_string()))?;
                    if d.is_zero() && field == "max_elapsed" {
                        return Err((field.to_owned(), "must be greater than zero".into()));
                    }
                    Ok(d)
                })
                .transpose()
        };
        if let Some(n) = f.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err((
                "max_attempts".into(),
                format!("must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
        let o = RetryOverride {
            max_attempts: f.max_attempts,
            backoff: dur("backoff", &f.backoff)?,
            max_backoff: dur("max_backoff", &f.max_backoff)?,
            max_elapsed: dur("max_elapsed", &f.max_elapsed)?,
        };
        if let (Some(b), Some(m)) = (o.backoff, o.max_backoff)
            && m < b
        {
            return Err(("max_backoff".into(), "must not be below backoff".into()));
        }
        Ok(o)
    }
}

/// `max_attempts=3,backoff=1s,max_backoff=1m,max_elapsed=1h`, as the
/// per-type flags take it.
impl FromStr for RetryOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut f = RetryFields {
            max_attempts: None,
            backoff: None,
            max_backoff: None,
            max_elapsed: None,
        };
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected key=value"))?;
            let v = v.trim().to_owned();
            match k.trim() {
                "max_attempts" => {
                    f.max_attempts = Some(
                        v.parse()
                            .map_err(|_| format!("max_attempts: `{v}` is not a number"))?,
                    )
                }
                "backoff" => f.backoff = Some(v),
                "max_backoff" => f.max_backoff = Some(v),
                "max_elapsed" => f.max_elapsed = Some(v),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (max_attempts, backoff, max_backoff, max_elapsed)"
                    ));
                }
            }
        }
        Self::from_fields(f).map_err(|(field, m)| format!("{field}: {m}"))
    }
}
