//! What a step may read, checked when a definition is written, so that a
//! typo fails the write instead of sending a message with a hole in it.
//!
//! A step reads through `{{ path }}` placeholders in any string of its
//! configuration, and a `condition` through the `field` of its tests.
//! Every path starts at a root of the template scope:
//!
//! - `contact.{id, external_id, email, phone, timezone, tags}` and
//!   `contact.attributes.*` (attributes are free-form: a missing one renders
//!   empty, or as its `| default:`);
//! - `execution.{id, workflow_id, attempt}` and `execution.metadata.*`;
//! - `steps.<id>.*`: the response of step `<id>`, which must run before
//!   this step on every path through the branches. A path that passes a
//!   step on only some branches may still read it with `| default: "..."`
//!   (and a condition may test it with `exists` / `not_exists`).
//!
//! Branches only go forward, so "before on every path" is computed in one
//! pass in step order: what surely ran before a step is what surely ran
//! before each of its predecessors, plus that predecessor, intersected.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::definition::{Definition, OnError, ValidationError};
use crate::action::condition::{Op, Test};
use crate::action::{Action, Next, template};

const CONTACT_FIELDS: [&str; 7] = [
    "id",
    "external_id",
    "email",
    "phone",
    "timezone",
    "attributes",
    "tags",
];
const EXECUTION_FIELDS: [&str; 4] = ["id", "workflow_id", "metadata", "attempt"];
/// Fields with values below them: free-form objects, and the tag list by
/// index. Any path below them is fine.
const OPEN_FIELDS: [&str; 3] = ["attributes", "metadata", "tags"];
/// Keys of a step that are not its configuration.
const STEP_KEYS: [&str; 5] = ["id", "type", "next", "retry", "on_error"];

/// Which earlier steps run before each step.
struct Before {
    /// On every path; `None` for a step no path reaches.
    surely: Vec<Option<BTreeSet<usize>>>,
    /// On some path.
    maybe: Vec<BTreeSet<usize>>,
}

/// Checks every reference of every step of `def`.
///
/// # Errors
/// The first bad reference, naming the step and the field that holds it.
pub fn check(def: &Definition) -> Result<(), ValidationError> {
    let before = before(def);
    for (i, step) in def.steps.iter().enumerate() {
        let fail = |field: String, message: String| ValidationError {
            step: Some(step.id.clone()),
            field: format!("steps[{i}].{field}"),
            message,
        };
        let mut strings = Vec::new();
        if let Json::Object(obj) = &step.raw {
            for (k, v) in obj {
                // A condition's `if` holds paths, not templates: below.
                let is_test = matches!(step.action, Action::Condition(_)) && k == "if";
                if !STEP_KEYS.contains(&k.as_str()) && !is_test {
                    collect_strings(v, k.clone(), &mut strings);
                }
            }
        }
        for (field, text) in strings {
            for inner in template::placeholders(text) {
                let expr = template::parse_expr(inner)
                    .map_err(|m| fail(field.clone(), format!("`{{{{{inner}}}}}`: {m}")))?;
                let lenient = expr.default.is_some();
                path(def, &before, i, expr.path, lenient)
                    .map_err(|m| fail(field.clone(), format!("`{{{{{inner}}}}}`: {m}")))?;
            }
        }
        if let Action::Condition(c) = &step.action {
            let mut fields = Vec::new();
            tested_fields(&c.test, "if".into(), &mut fields);
            for (field, path_text, op) in fields {
                let lenient = matches!(op, Op::Exists | Op::NotExists);
                path(def, &before, i, path_text, lenient)
                    .map_err(|m| fail(field, format!("`{path_text}`: {m}")))?;
            }
        }
    }
    Ok(())
}

/// Checks one path read by step `at`; `lenient` when a missing value is
/// expected (a default, an `exists` test).
fn path(
    def: &Definition,
    before: &Before,
    at: usize,
    path: &str,
    lenient: bool,
) -> Result<(), String> {
    let mut parts = path.split('.').map(str::trim);
    let root = parts.next().unwrap_or_default();
    let field = parts.next();
    let deeper = parts.next().is_some();
    let known = |fields: &[&str], root: &str| -> Result<(), String> {
        match field {
            None => Ok(()),
            Some(f) if !fields.contains(&f) => Err(format!(
                "`{root}` has no field `{f}` (it has {})",
                fields.join(", ")
            )),
            Some(f) if deeper && !OPEN_FIELDS.contains(&f) => {
                Err(format!("`{root}.{f}` has no fields"))
            }
            Some(_) => Ok(()),
        }
    };
    match root {
        "contact" => known(&CONTACT_FIELDS, root),
        "execution" => known(&EXECUTION_FIELDS, root),
        "steps" => {
            let Some(id) = field.filter(|f| !f.is_empty()) else {
                return Err("name a step: `steps.<step id>`".into());
            };
            let Some(target) = def.index_of(id) else {
                return Err(format!("no step has the id `{id}`"));
            };
            let Some(surely) = &before.surely[at] else {
                // No path reaches this step: nothing it reads can be wrong
                // at run time, and the step itself may be work in progress.
                return Ok(());
            };
            if target == at {
                return Err(format!(
                    "`{id}` is this step; its response is not there yet"
                ));
            }
            if target > at {
                return Err(format!("step `{id}` runs after this one"));
            }
            if surely.contains(&target) || (lenient && before.maybe[at].contains(&target)) {
                return Ok(());
            }
            if before.maybe[at].contains(&target) {
                return Err(format!(
                    "step `{id}` runs before this one on some paths only; \
                     add `| default: \"...\"` to read it where it did not run"
                ));
            }
            Err(format!("step `{id}` never runs before this one"))
        }
        other => Err(format!(
            "unknown root `{other}` (expected contact, execution or steps)"
        )),
    }
}

/// Every string below `v` with its path from the step (`body.contact`,
/// `headers.X-Trace`, `args[0]`).
fn collect_strings<'a>(v: &'a Json, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Json::String(s) => out.push((at, s)),
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_strings(item, format!("{at}[{i}]"), out);
            }
        }
        Json::Object(map) => {
            for (k, item) in map {
                collect_strings(item, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every `field` a test reads, with where it is and its operator.
fn tested_fields<'a>(t: &'a Test, at: String, out: &mut Vec<(String, &'a str, Op)>) {
    match t {
        Test::All { all: tests } => {
            for (i, t) in tests.iter().enumerate() {
                tested_fields(t, format!("{at}.all[{i}]"), out);
            }
        }
        Test::Any { any: tests } => {
            for (i, t) in tests.iter().enumerate() {
                tested_fields(t, format!("{at}.any[{i}]"), out);
            }
        }
        Test::Not { not } => tested_fields(not, format!("{at}.not"), out),
        Test::Tag { .. } => {}
        Test::Field { field, op, .. } => out.push((format!("{at}.field"), field.as_str(), *op)),
    }
}

/// The steps that may run right after step `i`: where the run-time
/// routing ([`Definition::next_index`]) takes each of its exits, and where
/// its `on_error` goes on after a failure.
fn successors(def: &Definition, i: usize) -> Vec<usize> {
    let mut next: Vec<usize> = def.steps[i]
        .action
        .exits()
        .iter()
        .filter_map(|exit| def.next_index(i, exit))
        .collect();
    match &def.steps[i].on_error {
        OnError::Fail => {}
        OnError::Continue => next.extend(def.next_index(i, &Next::Following)),
        OnError::Goto(id) => next.extend(def.index_of(id)),
    }
    next.sort_unstable();
    next.dedup();
    next
}

fn before(def: &Definition) -> Before {
    let n = def.steps.len();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in successors(def, i) {
            preds[j].push(i);
        }
    }
    let mut surely: Vec<Option<BTreeSet<usize>>> = vec![None; n];
    let mut maybe: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    surely[0] = Some(BTreeSet::new());
    // Every edge goes forward, so each predecessor is final before its
    // successor is computed.
    for i in 1..n {
        for &p in &preds[i] {
            let Some(via) = surely[p].clone() else {
                continue; // an unreachable predecessor adds no path
            };
            let mut via = via;
            via.insert(p);
            surely[i] = Some(match surely[i].take() {
                None => via,
                Some(so_far) => so_far.intersection(&via).copied().collect(),
            });
            let mut m = maybe[p].clone();
            m.insert(p);
            maybe[i].extend(m);
        }
    }
    Before { surely, maybe }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::definition::Definition;

    fn error(steps: serde_json::Value) -> (String, String, String) {
        let e = Definition::parse(&json!({ "steps": steps })).unwrap_err();
        (e.step.unwrap_or_default(), e.field, e.message)
    }

    #[test]
    fn a_misspelled_root_or_field_is_refused_naming_the_step_and_field() {
        let (step, field, message) = error(json!([
            {"id": "hi", "type": "send_email", "to": "{{contakt.email}}", "subject": "s", "body": "b"}
        ]));
        assert_eq!((step.as_str(), field.as_str()), ("hi", "steps[0].to"));
        assert!(message.contains("unknown root `contakt`"), "{message}");
        let (_, field, message) = error(json!([
            {"id": "hi", "type": "send_sms", "body": "Hi {{contact.first_name}}"}
        ]));
        assert_eq!(field, "steps[0].body");
        assert!(message.contains("no field `first_name`"), "{message}");
        let (_, field, message) = error(json!([
            {"id": "hi", "type": "webhook", "url": "https://x.test", "headers": {"X-Id": "{{execution.uid}}"}}
        ]));
        assert_eq!(field, "steps[0].headers.X-Id");
        assert!(message.contains("no field `uid`"), "{message}");
        let (_, _, message) = error(json!([
            {"id": "hi", "type": "send_sms", "body": "{{contact.email | upper}}"}
        ]));
        assert!(message.contains("unknown filter"), "{message}");
    }

    #[test]
    fn a_step_read_must_run_before_on_every_path() {
        // A later step.
        let (step, field, message) = error(json!([
            {"id": "a", "type": "send_sms", "body": "{{steps.b.status}}"},
            {"id": "b", "type": "webhook", "url": "https://x.test"}
        ]));
        assert_eq!((step.as_str(), field.as_str()), ("a", "steps[0].body"));
        assert!(message.contains("runs after"), "{message}");
        // A step on one branch only.
        let branches = json!([
            {"id": "pro?", "type": "condition", "if": {"tag": "pro"}, "else": "sms"},
            {"id": "hook", "type": "webhook", "url": "https://x.test"},
            {"id": "sms", "type": "send_sms", "body": "status {{steps.hook.status}}"}
        ]);
        let (step, _, message) = error(branches);
        assert_eq!(step, "sms");
        assert!(message.contains("some paths only"), "{message}");
        // An unknown step.
        let (_, _, message) = error(json!([
            {"id": "a", "type": "send_sms", "body": "{{steps.nope.x}}"}
        ]));
        assert!(message.contains("no step has the id `nope`"), "{message}");
        // Itself.
        let (_, _, message) = error(json!([
            {"id": "a", "type": "send_sms", "body": "{{steps.a.x}}"}
        ]));
        assert!(message.contains("is this step"), "{message}");
    }

    #[test]
    fn what_surely_ran_and_what_is_read_leniently_is_accepted() {
        Definition::parse(&json!({"steps": [
            {"id": "lookup", "type": "webhook", "url": "https://x.test"},
            {"id": "pro?", "type": "condition", "if": {"field": "steps.lookup.body.plan", "op": "eq", "value": "pro"}, "else": "sms"},
            {"id": "hook", "type": "webhook", "url": "https://x.test", "body": {"id": "{{contact.id}}", "m": "{{execution.metadata.campaign}}"}},
            {"id": "sms", "type": "send_sms",
             "body": "{{contact.attributes.first_name | default: \"there\"}} {{steps.lookup.status}} {{steps.hook.status | default: \"-\"}}"},
            {"id": "check", "type": "condition", "if": {"field": "steps.hook.status", "op": "exists"}},
            {"id": "done", "type": "goal"}
        ]}))
        .unwrap();
        // Tags by index, attributes and metadata at any depth.
        Definition::parse(&json!({"steps": [
            {"id": "a", "type": "send_sms", "body": "{{contact.tags.0}} {{contact.attributes.a.b.c}}"}
        ]}))
        .unwrap();
    }

    #[test]
    fn a_condition_field_is_checked_like_a_template() {
        let (step, field, message) = error(json!([
            {"id": "c", "type": "condition", "if": {"all": [{"tag": "x"}, {"field": "contakt.plan", "op": "eq", "value": 1}]}},
            {"id": "d", "type": "end"}
        ]));
        assert_eq!(
            (step.as_str(), field.as_str()),
            ("c", "steps[0].if.all[1].field")
        );
        assert!(message.contains("unknown root"), "{message}");
    }
}
