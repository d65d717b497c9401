//! Foresight: what a step would do, told without running it, for the
//! estimates of an execution's completion (`engine::eta`).

use chrono::{DateTime, Utc};

use super::{Action, Input, Next, Outcome};

/// What can be known of a step's course without running it, for
/// estimates: a wait's deadline, a condition's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foresight {
    /// It ends at this time (a wait, its send window applied).
    Until(DateTime<Utc>),
    /// It goes there at once.
    Next(Next),
    /// It takes as long as it takes (a provider, a queue).
    Unknown,
}

impl Action {
    /// What this action would do if it ran at `input.now`, as far as that
    /// can be told without running it: nothing is sent, nothing changes.
    pub fn foresee(&self, input: &Input<'_>) -> Foresight {
        match self {
            Action::Wait(w) => w.target(input).map_or(Foresight::Unknown, Foresight::Until),
            Action::Condition(c) => match c.run(input) {
                Outcome::Done { next, .. } => Foresight::Next(next),
                _ => Foresight::Unknown,
            },
            Action::Goal(_) | Action::End => Foresight::Next(Next::End),
            Action::UpdateContact(_) | Action::AddTag(_) | Action::RemoveTag(_) => {
                Foresight::Next(Next::Following)
            }
            _ => Foresight::Unknown,
        }
    }
}
