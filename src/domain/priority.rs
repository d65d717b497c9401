//! Queue priority of an execution. Which Redis queue a priority maps to is
//! the engine's to say; this is only the word and its stored spelling.

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
