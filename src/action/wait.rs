//! `wait`: park the execution for a duration or until a time, optionally
//! moved into a send window in the contact's timezone. A waiting execution
//! holds no worker slot: it is a row in PostgreSQL and a deferred job.
//!
//! ```json
//! {"id": "pause", "type": "wait", "duration": "2d",
//!  "window": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}}
//! {"id": "renewal", "type": "wait", "until": "{{contact.attributes.renewal_at}}"}
//! ```

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, NaiveTime, SubsecRound, TimeZone, Timelike,
    Utc, Weekday,
};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::json;

use super::{ActionError, ErrorClass, FieldError, Input, Next, Outcome, template};

/// Longest wait a step may ask for.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Configuration of a `wait` step: exactly one of `duration` and `until`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// How long, e.g. `30s`, `2d`, `1w`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Until an RFC 3339 time (or a template that renders to one).
    #[serde(default)]
    pub until: Option<String>,
    /// Only resume inside this window of the contact's local time.
    #[serde(default)]
    pub window: Option<Window>,
}

/// A daily window in the contact's timezone; `start` > `end` crosses midnight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive.
    pub end: String,
    /// Allowed weekdays (`mon` .. `sun`); default every day.
    #[serde(default)]
    pub days: Option<Vec<String>>,
}

/// A parsed window.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: NaiveTime,
    end: NaiveTime,
    days: [bool; 7],
}

impl Window {
    fn parse(&self) -> Result<Span, FieldError> {
        let time = |field: &str, s: &str| {
            NaiveTime::parse_from_str(s, "%H:%M")
                .map_err(|_| FieldError::new(format!("window.{field}"), "must be HH:MM"))
        };
        let start = time("start", &self.start)?;
        let end = time("end", &self.end)?;
        if start == end {
            return Err(FieldError::new(
                "window.end",
                "must differ from window.start",
            ));
        }
        let mut days = [self.days.is_none(); 7];
        for d in self.days.iter().flatten() {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| {
                    FieldError::new(
                        "window.days",
                        format!("`{d}` is not one of {}", DAYS.join(", ")),
                    )
                })?;
            days[i] = true;
        }
        if !days.iter().any(|d| *d) {
            return Err(FieldError::new("window.days", "must name at least one day"));
        }
        Ok(Span { start, end, days })
    }
}

impl Span {
    fn contains(&self, day: Weekday, t: NaiveTime) -> bool {
        let in_time = if self.start < self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        };
        // A window crossing midnight belongs to the day it started on.
        let day = if self.start > self.end && t < self.end {
            day.pred()
        } else {
            day
        };
        in_time && self.days[day.num_days_from_monday() as usize]
    }
}

/// The first instant at or after `t` inside `span` in `tz`.
fn next_in_window(t: DateTime<Utc>, tz: Tz, span: Span) -> DateTime<Utc> {
    let local = t.with_timezone(&tz);
    if span.contains(local.weekday(), local.time()) {
        return t;
    }
    // Try each window start over the next 8 days (DST gaps skip forward).
    for offset in 0..=8 {
        let date = local.date_naive() + ChronoDuration::days(offset);
        let naive = date.and_time(span.start);
        let Some(candidate) = tz.from_local_datetime(&naive).earliest().or_else(|| {
            tz.from_local_datetime(&(naive + ChronoDuration::hours(1)))
                .earliest()
        }) else {
            continue;
        };
        let c = candidate.with_timezone(&Utc);
        if c >= t && span.days[date.weekday().num_days_from_monday() as usize] {
            return c;
        }
    }
    t
}

impl Wait {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        match (&self.duration, &self.until) {
            (Some(d), None) => {
                let d = humantime::parse_duration(d)
                    .map_err(|e| FieldError::new("duration", e.to_string()))?;
                if d > MAX_WAIT {
                    return Err(FieldError::new("duration", "must be at most 366 days"));
                }
            }
            (None, Some(u)) => {
                if u.contains("{{") {
                    template::check(u).map_err(|m| FieldError::new("until", m))?;
                } else {
                    DateTime::parse_from_rfc3339(u).map_err(|e| {
                        FieldError::new("until", format!("not an RFC 3339 time: {e}"))
                    })?;
                }
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "until",
                    "give either duration or until, not both",
                ));
            }
            (None, None) => return Err(FieldError::new("duration", "give duration or until")),
        }
        if let Some(w) = &self.window {
            w.parse()?;
        }
        Ok(())
    }

    pub(super) fn target(&self, input: &Input<'_>) -> Result<DateTime<Utc>, ActionError> {
        let mut t = match (&self.duration, &self.until) {
            (Some(d), _) => {
                let d = humantime::parse_duration(d)
                    .map_err(|e| ActionError::invalid_config(format!("duration: {e}")))?;
                input.now
                    + ChronoDuration::from_std(d)
                        .map_err(|e| ActionError::invalid_config(e.to_string()))?
            }
            (None, Some(u)) => {
                let text = super::render("until", u, input.scope)?;
                DateTime::parse_from_rfc3339(text.trim())
                    .map_err(|_| {
                        ActionError::invalid_config(format!(
                            "until: `{text}` is not an RFC 3339 time"
                        ))
                    })?
                    .with_timezone(&Utc)
            }
            (None, None) => input.now,
        };
        if let Some(w) = &self.window {
            let span = w
                .parse()
                .map_err(|e| ActionError::invalid_config(e.to_string()))?;
            let tz: Tz = input.timezone.parse().unwrap_or(Tz::UTC);
            t = next_in_window(t.max(input.now), tz, span);
        }
        Ok(t)
    }

    pub(super) fn run(&self, input: &Input<'_>) -> Result<Outcome, ActionError> {
        let until = match input
            .state
            .and_then(|s| s.get("until"))
            .and_then(|u| u.as_str())
        {
            Some(u) => DateTime::parse_from_rfc3339(u)
                .map_err(|e| {
                    ActionError::new(ErrorClass::Internal, format!("stored wait state: {e}"))
                })?
                .with_timezone(&Utc),
            // PostgreSQL keeps microseconds: so must the deadline, or a
            // resume at the stored time would find it a few ns early.
            None => self.target(input)?.trunc_subsecs(6),
        };
        if until <= input.now {
            // The contact's local hour when the wait ended: analytics
            // count waits that end outside sending hours (suggestions).
            let tz: Tz = input.timezone.parse().unwrap_or(Tz::UTC);
            let local_hour = input.now.with_timezone(&tz).hour();
            return Ok(Outcome::Done {
                response: json!({"waited_until": until.to_rfc3339(), "local_hour": local_hour}),
                next: Next::Following,
                change: None,
            });
        }
        Ok(Outcome::Park {
            until,
            reason: "wait",
            state: json!({"until": until.to_rfc3339()}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: &str, end: &str, days: Option<Vec<&str>>) -> Span {
        Window {
            start: start.into(),
            end: end.into(),
            days: days.map(|d| d.into_iter().map(String::from).collect()),
        }
        .parse()
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_time_inside_the_window_is_kept() {
        let t = utc("2026-11-26T10:00:00Z"); // Thursday
        assert_eq!(next_in_window(t, Tz::UTC, span("09:00", "17:00", None)), t);
    }

    #[test]
    fn after_hours_moves_to_the_next_allowed_morning_in_the_contacts_timezone() {
        // 23:30 UTC Thursday is 18:30 in New York: next 09:00 New York is Friday 14:00 UTC.
        let t = utc("2026-11-26T23:30:00Z");
        let tz: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            next_in_window(t, tz, span("09:00", "17:00", None)),
            utc("2026-11-27T14:00:00Z")
        );
        // Weekdays only: Saturday 10:00 UTC moves to Monday 09:00 UTC.
        let weekdays = span(
            "09:00",
            "17:00",
            Some(vec!["mon", "tue", "wed", "thu", "fri"]),
        );
        assert_eq!(
            next_in_window(utc("2026-11-28T10:00:00Z"), Tz::UTC, weekdays),
            utc("2026-11-30T09:00:00Z")
        );
    }

    #[test]
    fn a_window_crossing_midnight_contains_the_small_hours() {
        let night = span("22:00", "02:00", None);
        let t = utc("2026-11-27T01:00:00Z");
        assert_eq!(next_in_window(t, Tz::UTC, night), t);
        assert_eq!(
            next_in_window(utc("2026-11-27T03:00:00Z"), Tz::UTC, night),
            utc("2026-11-27T22:00:00Z")
        );
    }

    #[test]
    fn bad_waits_name_their_field() {
        let w = |v| {
            serde_json::from_value::<Wait>(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(w(json!({})), "duration");
        assert_eq!(w(json!({"duration": "soon"})), "duration");
        assert_eq!(
            w(json!({"duration": "1s", "until": "2030-01-01T00:00:00Z"})),
            "until"
        );
        assert_eq!(
            w(json!({"duration": "1s", "window": {"start": "9", "end": "17:00"}})),
            "window.start"
        );
        assert_eq!(
            w(
                json!({"duration": "1s", "window": {"start": "09:00", "end": "17:00", "days": ["funday"]}})
            ),
            "window.days"
        );
    }
}
