//! Why an attempt failed, in the words operators group and filter by. The
//! class decides what happens next: retry after a backoff, wait for a
//! provider without spending an attempt, or fail (the README has the table
//! of which provider answer maps to which class).

use std::fmt;
use std::str::FromStr;

/// The class of a failed or retried attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A failure a later attempt may not meet: a connection error, a 5xx.
    Transient,
    /// No answer in time.
    Timeout,
    /// The provider asked us to slow down (429, or 503 with `Retry-After`).
    RateLimited,
    /// The provider's circuit breaker is open: not called, no attempt spent.
    ProviderUnavailable,
    /// The provider refused for good (a 4xx, a rejected message).
    Permanent,
    /// The step's configuration cannot work (a refused address, a bad
    /// method, a template that renders past the cap).
    InvalidConfig,
    /// The contact's data cannot work (no email, no phone, an invalid
    /// recipient).
    ContactData,
    /// The execution was cancelled.
    Cancelled,
    /// A fault of flowpilot's own (a stored state it cannot read).
    Internal,
}

/// All classes, for exhaustive tests and API validation.
pub const ALL_ERROR_CLASSES: [ErrorClass; 9] = [
    ErrorClass::Transient,
    ErrorClass::Timeout,
    ErrorClass::RateLimited,
    ErrorClass::ProviderUnavailable,
    ErrorClass::Permanent,
    ErrorClass::InvalidConfig,
    ErrorClass::ContactData,
    ErrorClass::Cancelled,
    ErrorClass::Internal,
];

impl ErrorClass {
    /// The spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Timeout => "timeout",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::ProviderUnavailable => "provider_unavailable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::InvalidConfig => "invalid_config",
            ErrorClass::ContactData => "contact_data",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Internal => "internal",
        }
    }

    /// Whether another attempt may succeed (after a backoff, or once the
    /// provider is back).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Transient
                | ErrorClass::Timeout
                | ErrorClass::RateLimited
                | ErrorClass::ProviderUnavailable
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_ERROR_CLASSES
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = ALL_ERROR_CLASSES.iter().map(|c| c.as_str()).collect();
                format!("`{s}` is not an error class ({})", all.join(", "))
            })
    }
}

/// A stored class this engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error class `{0}`")]
pub struct UnknownErrorClass(pub String);

impl TryFrom<String> for ErrorClass {
    type Error = UnknownErrorClass;
    fn try_from(s: String) -> Result<Self, UnknownErrorClass> {
        s.parse().map_err(|_| UnknownErrorClass(s))
    }
}

/// What groups like failures: the workflow, its version, the step, the
/// class and the message with ids, numbers and addresses normalised, hashed
/// to 16 hex digits (FNV-1a, 64 bits: stable across processes and
/// releases, unlike std's hasher).
pub fn fingerprint(
    workflow_id: &str,
    version: i32,
    step_id: &str,
    class: ErrorClass,
    message: &str,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let normal = normalise(message);
    let version = version.to_string();
    for part in [
        workflow_id,
        version.as_str(),
        step_id,
        class.as_str(),
        normal.as_str(),
    ] {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// `message` with what differs between like failures replaced: UUIDs and
/// long hex runs by `<id>`, email addresses by `<email>`, digit runs by
/// `<n>`.
pub fn normalise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for word in split_keep(message) {
        if word.contains('@') && word.chars().any(|c| c.is_ascii_alphabetic()) {
            out.push_str("<email>");
        } else if is_id(word) {
            out.push_str("<id>");
        } else {
            let mut in_digits = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !in_digits {
                        out.push_str("<n>");
                    }
                    in_digits = true;
                } else {
                    in_digits = false;
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Words and the separators between them, in order.
fn split_keep(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '@' | '.' | '+');
    let mut in_word = None;
    for (i, c) in s.char_indices() {
        let w = is_word(c);
        if in_word != Some(w) {
            if i > start {
                parts.push(&s[start..i]);
            }
            start = i;
            in_word = Some(w);
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// A UUID, or a run of at least 12 hex digits with a digit in it.
fn is_id(word: &str) -> bool {
    let hex: String = word.chars().filter(|c| *c != '-').collect();
    hex.len() >= 12
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && hex.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_from_their_spelling_and_only_waiting_ones_retry() {
        for c in ALL_ERROR_CLASSES {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(c));
        }
        assert!("flaky".parse::<ErrorClass>().is_err());
        let retried: Vec<_> = ALL_ERROR_CLASSES
            .into_iter()
            .filter(|c| c.retryable())
            .collect();
        assert_eq!(
            retried,
            [
                ErrorClass::Transient,
                ErrorClass::Timeout,
                ErrorClass::RateLimited,
                ErrorClass::ProviderUnavailable
            ]
        );
    }

    #[test]
    fn like_failures_share_a_fingerprint_and_unlike_ones_do_not() {
        let fp = |step: &str, class, msg: &str| fingerprint("wf", 1, step, class, msg);
        let a = fp(
            "crm",
            ErrorClass::Transient,
            "webhook answered HTTP 503 after 1234 ms for 0b7c1d9e-8f3a-4c2b-9d1e-5f6a7b8c9d0e",
        );
        let b = fp(
            "crm",
            ErrorClass::Transient,
            "webhook answered HTTP 502 after 17 ms for 7e57d004-2b97-4e7a-b45f-5387367791cd",
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            fp("crm", ErrorClass::Permanent, "webhook answered HTTP 503")
        );
        assert_ne!(
            a,
            fp("other", ErrorClass::Transient, "webhook answered HTTP 503")
        );
        assert_eq!(
            normalise("no phone for ada@example.com (contact 42)"),
            "no phone for <email> (contact <n>)"
        );
    }
}
