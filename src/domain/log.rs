//! The status of one log row: how one attempt of one step ended.

/// How one attempt of a step ended, as its log row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStatus {
    /// The action did what it should.
    Succeeded,
    /// A transient error; the step will be tried again.
    Retrying,
    /// The step failed for good, and with it the execution.
    Failed,
}

impl LogStatus {
    /// The spelling stored in `execution_logs.status` and used as a metric
    /// label.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Succeeded => "SUCCEEDED",
            LogStatus::Retrying => "RETRYING",
            LogStatus::Failed => "FAILED",
        }
    }
}
