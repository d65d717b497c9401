//! An account's limits: how many outbound calls it may make, in all and
//! per channel (email, SMS, each webhook host), as a rate and a burst; and
//! how many of its executions may run at once.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Highest rate accepted, calls per second.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Lowest rate accepted: one call a day.
pub const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
/// Highest burst accepted.
pub const MAX_BURST: u32 = 1_000_000;
/// Most webhook hosts one account may name.
pub const MAX_HOSTS: usize = 1_000;
/// Highest cap of running executions accepted.
pub const MAX_RUNNING: u32 = 1_000_000;

/// A rate with a burst: `burst` calls may go at once, then one every
/// `1 / per_second` seconds (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained calls per second (`0.5` is one every two seconds).
    pub per_second: f64,
    /// Calls that may go at once; default one second's worth (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    /// The time one call takes from the budget.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }

    /// The burst, or one second's worth.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| (self.per_second.ceil() as u32).max(1))
    }

    /// Why the rate cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&self.per_second) {
            return Some(format!(
                "per_second must be between {MIN_PER_SECOND:.8} (one a day) and {MAX_PER_SECOND}"
            ));
        }
        if self.burst.is_some_and(|b| b == 0 || b > MAX_BURST) {
            return Some(format!("burst must be in [1, {MAX_BURST}]"));
        }
        None
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s:{}", self.per_second, self.burst())
    }
}

/// `RATE/s`, `RATE/m` or `RATE/h`, then optionally `:BURST`
/// (`100/s`, `600/m:50`).
impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected RATE/s, RATE/m or RATE/h, optionally :BURST");
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b.trim().parse::<u32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let (n, unit) = rate.trim().split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let per_second = match unit.trim() {
            "s" => n,
            "m" => n / 60.0,
            "h" => n / 3600.0,
            _ => return Err(bad()),
        };
        let r = Rate { per_second, burst };
        match r.problem() {
            Some(p) => Err(format!("`{s}`: {p}")),
            None => Ok(r),
        }
    }
}

/// An account's limits; an absent one falls back to the installation's
/// default for it (none by default: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Every outbound call of the account (email, SMS, webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Rate>,
    /// Emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Rate>,
    /// SMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<Rate>,
    /// Webhook calls, counted per host (each host its own budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Rate>,
    /// Per-host overrides of `webhook` (`crm.example.com`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook_hosts: BTreeMap<String, Rate>,
    /// Most executions of the account running at once (taking steps on a
    /// worker; waiting ones do not count). One over the cap stays queued
    /// until a run of the account ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub running: Option<u32>,
}

impl Limits {
    /// The first problem found, as `(field, message)`.
    pub fn problem(&self) -> Option<(String, String)> {
        for (field, rate) in [
            ("account", &self.account),
            ("email", &self.email),
            ("sms", &self.sms),
            ("webhook", &self.webhook),
        ] {
            if let Some(p) = rate.as_ref().and_then(Rate::problem) {
                return Some((field.to_owned(), p));
            }
        }
        if self.running.is_some_and(|n| n == 0 || n > MAX_RUNNING) {
            return Some(("running".into(), format!("must be in [1, {MAX_RUNNING}]")));
        }
        if self.webhook_hosts.len() > MAX_HOSTS {
            return Some(("webhook_hosts".into(), format!("at most {MAX_HOSTS} hosts")));
        }
        for (host, rate) in &self.webhook_hosts {
            if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_whitespace()) {
                return Some((
                    "webhook_hosts".into(),
                    format!("`{host}` is not a host name"),
                ));
            }
            if let Some(p) = rate.problem() {
                return Some((format!("webhook_hosts.{host}"), p));
            }
        }
        None
    }

    /// These limits, each absent one taken from `defaults`.
    pub fn over(&self, defaults: &Limits) -> Limits {
        let mut hosts = defaults.webhook_hosts.clone();
        hosts.extend(self.webhook_hosts.clone());
        Limits {
            account: self.account.or(defaults.account),
            email: self.email.or(defaults.email),
            sms: self.sms.or(defaults.sms),
            webhook: self.webhook.or(defaults.webhook),
            webhook_hosts: hosts,
            running: self.running.or(defaults.running),
        }
    }

    /// The limit of calls to webhook `host`.
    pub fn webhook_host(&self, host: &str) -> Option<Rate> {
        self.webhook_hosts.get(host).copied().or(self.webhook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_minute_and_hour_with_an_optional_burst() {
        let r: Rate = "600/m:50".parse().unwrap();
        assert_eq!((r.per_second, r.burst()), (10.0, 50));
        let r: Rate = "2/s".parse().unwrap();
        assert_eq!((r.interval(), r.burst()), (Duration::from_millis(500), 2));
        let r: Rate = "36/h".parse().unwrap();
        assert_eq!((r.interval(), r.burst()), (Duration::from_secs(100), 1));
        for bad in [
            "", "10", "10/d", "x/s", "0/s", "-1/s", "10/s:0", "10/s:x", "inf/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn an_account_s_limits_fall_back_to_the_defaults_one_by_one() {
        let defaults = Limits {
            email: Some("10/s".parse().unwrap()),
            webhook: Some("5/s".parse().unwrap()),
            ..Limits::default()
        };
        let mine = Limits {
            email: Some("1/s".parse().unwrap()),
            webhook_hosts: [("crm.example.com".to_owned(), "50/s".parse().unwrap())].into(),
            ..Limits::default()
        };
        let eff = mine.over(&defaults);
        assert_eq!(eff.email.unwrap().per_second, 1.0);
        assert_eq!(
            eff.webhook_host("crm.example.com").unwrap().per_second,
            50.0
        );
        assert_eq!(eff.webhook_host("other.example").unwrap().per_second, 5.0);
        assert!(eff.sms.is_none() && eff.account.is_none());
        let bad = Limits {
            sms: Some(Rate {
                per_second: 0.0,
                burst: None,
            }),
            ..Limits::default()
        };
        assert_eq!(bad.problem().unwrap().0, "sms");
    }
}
