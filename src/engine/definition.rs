//! Workflow definitions: immutable, versioned JSON, validated when written.
//!
//! ```json
//! {"steps": [
//!   {"id": "welcome", "type": "send_email", "subject": "Welcome", "body": "Hi {{contact.attributes.first_name}}"},
//!   {"id": "pause", "type": "wait", "duration": "2d"},
//!   {"id": "pro?", "type": "condition", "if": {"tag": "pro"}, "then": "upsell", "else": "done"},
//!   {"id": "upsell", "type": "send_sms", "body": "20% off today", "retry": {"max_attempts": 3}},
//!   {"id": "done", "type": "end"}
//! ]}
//! ```
//!
//! Every step has a unique `id` and a `type`; `next` (any step) and
//! condition targets name later steps only, so every execution ends.
//! `retry` overrides fields of the retry policy for retryable errors
//! ([`super::retry`]); `on_error` says what a failure does (`fail`,
//! `continue`, or `{"goto": "<later step>"}`). What each step's templates
//! read is checked too ([`super::reference`]).

use serde_json::{Map, Value as Json};

use super::retry::RetryOverride;
use crate::action::{Action, FieldError, Next};

/// Most steps a definition may have.
pub const MAX_STEPS: usize = 500;
/// Largest definition, serialized, in bytes.
pub const MAX_BYTES: usize = 256 * 1024;

/// A validation failure, naming the step and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", step.as_ref().map(|s| format!("step `{s}`: ")).unwrap_or_default())]
pub struct ValidationError {
    /// The step's id (or its position when it has none).
    pub step: Option<String>,
    /// Path of the field from the definition root, e.g. `steps[2].url`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// What a step's failure (a permanent error, or its attempts spent) does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnError {
    /// The execution fails (the default).
    #[default]
    Fail,
    /// The failure is logged and the execution goes on with the step that
    /// would have followed.
    Continue,
    /// The failure is logged and the execution goes on at this later step.
    Goto(String),
}

impl OnError {
    fn parse(v: &Json) -> Result<OnError, String> {
        const EXPECTED: &str = "must be `fail`, `continue` or {\"goto\": \"<step id>\"}";
        match v {
            Json::String(s) if s == "fail" => Ok(OnError::Fail),
            Json::String(s) if s == "continue" => Ok(OnError::Continue),
            Json::Object(o) if o.len() == 1 => match o.get("goto") {
                Some(Json::String(id)) => Ok(OnError::Goto(id.clone())),
                _ => Err(EXPECTED.into()),
            },
            _ => Err(EXPECTED.into()),
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Stable id.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// Explicit next step id.
    pub next: Option<String>,
    /// Its retry policy's fields, where they override the engine's.
    pub retry: Option<RetryOverride>,
    /// What its failure does.
    pub on_error: OnError,
    /// The step as written, for logs (templates, not rendered values).
    pub raw: Json,
}

/// A parsed, valid definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Steps in order.
    pub steps: Vec<Step>,
}

fn err(
    step: Option<&str>,
    field: impl Into<String>,
    message: impl Into<String>,
) -> ValidationError {
    ValidationError {
        step: step.map(str::to_owned),
        field: field.into(),
        message: message.into(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '?' | '.'))
}

impl Definition {
    /// Parses and validates a definition.
    ///
    /// # Errors
    /// The first problem found, naming the step and field.
    pub fn parse(doc: &Json) -> Result<Definition, ValidationError> {
        let Json::Object(root) = doc else {
            return Err(err(
                None,
                "definition",
                "must be a JSON object with a `steps` array",
            ));
        };
        let size = doc.to_string().len();
        if size > MAX_BYTES {
            return Err(err(
                None,
                "definition",
                format!("is {size} bytes as JSON; at most {MAX_BYTES} allowed"),
            ));
        }
        if let Some(field) = crate::store::text::first_nul(doc, "") {
            return Err(err(None, field, crate::store::text::NUL_MESSAGE));
        }
        if let Some(k) = root
            .keys()
            .find(|k| !matches!(k.as_str(), "steps" | "description"))
        {
            return Err(err(
                None,
                k.clone(),
                "unknown field (expected `steps`, `description`)",
            ));
        }
        let Some(Json::Array(raw_steps)) = root.get("steps") else {
            return Err(err(None, "steps", "must be an array of steps"));
        };
        if raw_steps.is_empty() || raw_steps.len() > MAX_STEPS {
            return Err(err(
                None,
                "steps",
                format!("must have 1 to {MAX_STEPS} steps"),
            ));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(raw_steps.len());
        for (i, raw) in raw_steps.iter().enumerate() {
            let at = |f: &str| format!("steps[{i}].{f}");
            let Json::Object(obj) = raw else {
                return Err(err(None, format!("steps[{i}]"), "must be an object"));
            };
            let id = match obj.get("id") {
                Some(Json::String(id)) if valid_id(id) => id.clone(),
                Some(_) => {
                    return Err(err(
                        None,
                        at("id"),
                        "must be 1-64 letters, digits, `_`, `-`, `.` or `?`",
                    ));
                }
                None => return Err(err(None, at("id"), "missing")),
            };
            let step = Some(id.as_str());
            if steps.iter().any(|s| s.id == id) {
                return Err(err(step, at("id"), format!("duplicate step id `{id}`")));
            }
            let kind = match obj.get("type") {
                Some(Json::String(k)) => k.clone(),
                _ => return Err(err(step, at("type"), "missing (one of the action types)")),
            };
            let next = match obj.get("next") {
                None | Some(Json::Null) => None,
                Some(Json::String(n)) => Some(n.clone()),
                Some(_) => return Err(err(step, at("next"), "must be a step id")),
            };
            let retry = obj
                .get("retry")
                .map(|r| {
                    RetryOverride::parse(r)
                        .map_err(|(f, m)| err(step, at(&format!("retry.{f}")), m))
                })
                .transpose()?;
            let on_error = obj
                .get("on_error")
                .map(|v| OnError::parse(v).map_err(|m| err(step, at("on_error"), m)))
                .transpose()?
                .unwrap_or_default();
            let config: Map<String, Json> = obj
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "id" | "type" | "next" | "retry" | "on_error")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let action = Action::parse(&kind, Json::Object(config))
                .map_err(|FieldError { field, message }| err(step, at(&field), message))?;
            steps.push(Step {
                id,
                action,
                next,
                retry,
                on_error,
                raw: raw.clone(),
            });
        }
        let def = Definition { steps };
        def.check_targets()?;
        super::reference::check(&def)?;
        Ok(def)
    }

    fn check_targets(&self) -> Result<(), ValidationError> {
        for (i, step) in self.steps.iter().enumerate() {
            let mut targets: Vec<(String, &str)> = step
                .action
                .targets()
                .into_iter()
                .map(|(f, t)| (format!("steps[{i}].{f}"), t))
                .collect();
            if let Some(n) = &step.next {
                targets.push((format!("steps[{i}].next"), n));
            }
            if let OnError::Goto(t) = &step.on_error {
                targets.push((format!("steps[{i}].on_error.goto"), t));
            }
            for (field, target) in targets {
                match self.index_of(target) {
                    None => {
                        return Err(err(
                            Some(&step.id),
                            field,
                            format!("no step has the id `{target}`"),
                        ));
                    }
                    Some(t) if t <= i => {
                        return Err(err(
                            Some(&step.id),
                            field,
                            format!("`{target}` is not after this step (loops are not allowed)"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Position of the step `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// The step after `current` given the action's choice; `None` completes.
    pub fn next_index(&self, current: usize, next: &Next) -> Option<usize> {
        match next {
            Next::End => None,
            Next::Step(id) => self.index_of(id),
            Next::Following => match &self.steps[current].next {
                Some(id) => self.index_of(id),
                None => (current + 1 < self.steps.len()).then_some(current + 1),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_err(v: Json) -> ValidationError {
        Definition::parse(&v).unwrap_err()
    }

    #[test]
    fn a_full_definition_parses_with_branches_and_overrides() {
        let d = Definition::parse(&json!({"steps": [
            {"id": "a", "type": "send_email", "subject": "s", "body": "b"},
            {"id": "b", "type": "condition", "if": {"tag": "x"}, "then": "d"},
            {"id": "c", "type": "wait", "duration": "1s", "retry": {"max_attempts": 2, "backoff": "1s"}},
            {"id": "d", "type": "end"},
        ]}))
        .unwrap();
        assert_eq!(d.steps.len(), 4);
        assert_eq!(d.steps[2].retry.unwrap().max_attempts, Some(2));
        assert_eq!(d.next_index(0, &Next::Following), Some(1));
        assert_eq!(d.next_index(1, &Next::Step("d".into())), Some(3));
        assert_eq!(d.next_index(3, &Next::Following), None);
    }

    #[test]
    fn errors_name_the_step_and_the_field() {
        let e = parse_err(json!({"steps": [{"id": "hook", "type": "webhook", "url": "ftp://x"}]}));
        assert_eq!(
            (e.step.as_deref(), e.field.as_str()),
            (Some("hook"), "steps[0].url")
        );
        let e = parse_err(json!({"steps": [{"id": "x", "type": "teleport"}]}));
        assert_eq!(e.field, "steps[0].type");
        let e =
            parse_err(json!({"steps": [{"id": "a", "type": "end"}, {"id": "a", "type": "end"}]}));
        assert_eq!(e.field, "steps[1].id");
        let e = parse_err(json!({"steps": [{"id": "a", "type": "send_sms"}]}));
        assert_eq!(e.field, "steps[0].body", "{e}");
        let e = parse_err(json!({"steps": [{"type": "end"}]}));
        assert_eq!(e.field, "steps[0].id");
        let e = parse_err(json!({"steps": []}));
        assert_eq!(e.field, "steps");
        let e = parse_err(json!({"steps": [{"id": "a", "type": "end"}], "colour": "red"}));
        assert_eq!(e.field, "colour");
        let e =
            parse_err(json!({"steps": [{"id": "a", "type": "end", "retry": {"max_attempts": 0}}]}));
        assert_eq!(e.field, "steps[0].retry.max_attempts");
    }

    #[test]
    fn targets_must_exist_and_lie_ahead() {
        let e = parse_err(
            json!({"steps": [{"id": "a", "type": "condition", "if": {"tag": "t"}, "then": "zz"}]}),
        );
        assert_eq!(e.field, "steps[0].then");
        let e = parse_err(json!({"steps": [
            {"id": "a", "type": "end"},
            {"id": "b", "type": "condition", "if": {"tag": "t"}, "else": "a"}
        ]}));
        assert!(e.message.contains("loops"), "{e}");
        let e = parse_err(json!({"steps": [{"id": "a", "type": "end", "next": "a"}]}));
        assert_eq!(e.field, "steps[0].next");
    }

    #[test]
    fn the_readme_example_definition_is_valid() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Workflows").expect("a Workflows section")..];
        let start = section.find("```json\n").expect("a JSON example") + 8;
        let end = start + section[start..].find("```").unwrap();
        let doc: Json = serde_json::from_str(&section[start..end]).unwrap();
        let d = Definition::parse(&doc).unwrap();
        let kinds: Vec<&str> = d.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            [
                "send_email",
                "wait",
                "webhook",
                "condition",
                "arq",
                "update_contact",
                "send_sms",
                "goal"
            ]
        );
    }

    #[test]
    fn on_error_fails_continues_or_goes_to_a_later_step() {
        let d = Definition::parse(&json!({"steps": [
            {"id": "a", "type": "send_sms", "body": "b", "on_error": "continue"},
            {"id": "b", "type": "send_email", "subject": "s", "body": "b", "on_error": {"goto": "d"}},
            {"id": "c", "type": "end"},
            {"id": "d", "type": "end", "on_error": "fail"},
        ]}))
        .unwrap();
        assert_eq!(d.steps[0].on_error, OnError::Continue);
        assert_eq!(d.steps[1].on_error, OnError::Goto("d".into()));
        assert_eq!(d.steps[2].on_error, OnError::Fail);
        for (on_error, message) in [
            (json!({"goto": "a"}), "is not after this step"),
            (json!({"goto": "zz"}), "no step has the id"),
            (json!("retry"), "must be `fail`, `continue`"),
        ] {
            let e = parse_err(json!({"steps": [
                {"id": "a", "type": "end"},
                {"id": "b", "type": "end", "on_error": on_error},
            ]}));
            assert_eq!(e.step.as_deref(), Some("b"));
            assert!(e.field.starts_with("steps[1].on_error"), "{}", e.field);
            assert!(e.message.contains(message), "{}", e.message);
        }
    }
}
