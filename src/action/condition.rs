//! `condition`: if/else on contact fields, tags, earlier step outputs.
//!
//! ```json
//! {"id": "is_pro", "type": "condition",
//!  "if": {"all": [{"field": "contact.attributes.plan", "op": "eq", "value": "pro"}, {"tag": "vip"}]},
//!  "then": "pro_path", "else": "basic_path"}
//! ```
//!
//! A missing `then` / `else` goes on with the following step. Targets must
//! lie after the condition (checked with the whole definition), so every
//! workflow ends.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{FieldError, Input, Next, Outcome, template};

/// Configuration of a `condition` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The test.
    #[serde(rename = "if")]
    pub test: Test,
    /// Step id when true; default the following step.
    #[serde(default)]
    pub then: Option<String>,
    /// Step id when false; default the following step.
    #[serde(default, rename = "else")]
    pub otherwise: Option<String>,
}

/// A boolean test.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Test {
    /// Every test holds.
    All {
        /// The tests.
        all: Vec<Test>,
    },
    /// Some test holds.
    Any {
        /// The tests.
        any: Vec<Test>,
    },
    /// The test does not hold.
    Not {
        /// The test.
        not: Box<Test>,
    },
    /// The contact has this tag.
    Tag {
        /// The tag.
        tag: String,
    },
    /// Compare a value of the scope.
    Field {
        /// Dotted path, e.g. `contact.attributes.plan`, `steps.lookup.status`.
        field: String,
        /// The comparison.
        op: Op,
        /// The operand (not used by `exists` / `not_exists`).
        #[serde(default)]
        value: Json,
    },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (numbers compared as numbers).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than (numbers, or strings lexically).
    Gt,
    /// Greater or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less or equal.
    Lte,
    /// A string contains, or an array has, the value.
    Contains,
    /// The field equals one of the values in an array.
    In,
    /// The field is present and not null.
    Exists,
    /// The field is absent or null.
    NotExists,
}

impl Condition {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        self.test.validate("if")
    }

    pub(super) fn targets(&self) -> Vec<(&'static str, &str)> {
        let mut t = Vec::new();
        if let Some(s) = &self.then {
            t.push(("then", s.as_str()));
        }
        if let Some(s) = &self.otherwise {
            t.push(("else", s.as_str()));
        }
        t
    }

    pub(super) fn exits(&self) -> Vec<Next> {
        vec![next(&self.then), next(&self.otherwise)]
    }

    pub(super) fn run(&self, input: &Input<'_>) -> Outcome {
        let result = self.test.eval(input.scope, input.tags);
        let target = if result { &self.then } else { &self.otherwise };
        Outcome::Done {
            response: json!({"result": result, "next": target}),
            next: next(target),
            change: None,
        }
    }
}

/// Where a branch goes: its target, or on with the following step.
fn next(target: &Option<String>) -> Next {
    target.clone().map_or(Next::Following, Next::Step)
}

impl Test {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        match self {
            Test::All { all: tests } | Test::Any { any: tests } => {
                if tests.is_empty() {
                    return Err(FieldError::new(at, "needs at least one test"));
                }
                tests
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, t)| t.validate(&format!("{at}[{i}]")))
            }
            Test::Not { not } => not.validate(&format!("{at}.not")),
            Test::Tag { tag } if tag.trim().is_empty() => {
                Err(FieldError::new(format!("{at}.tag"), "must not be empty"))
            }
            Test::Field { field, op, value } => {
                if field.trim().is_empty() {
                    return Err(FieldError::new(format!("{at}.field"), "must not be empty"));
                }
                if *op == Op::In && !value.is_array() {
                    return Err(FieldError::new(
                        format!("{at}.value"),
                        "`in` needs an array",
                    ));
                }
                Ok(())
            }
            Test::Tag { .. } => Ok(()),
        }
    }

    fn eval(&self, scope: &Json, tags: &[String]) -> bool {
        match self {
            Test::All { all } => all.iter().all(|t| t.eval(scope, tags)),
            Test::Any { any } => any.iter().any(|t| t.eval(scope, tags)),
            Test::Not { not } => !not.eval(scope, tags),
            Test::Tag { tag } => tags.iter().any(|t| t == tag),
            Test::Field { field, op, value } => {
                let actual = template::lookup(scope, field).filter(|v| !v.is_null());
                compare(actual, *op, value)
            }
        }
    }
}

fn equal(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Json, b: &Json) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Json::Number(_), Json::Number(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare(actual: Option<&Json>, op: Op, value: &Json) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (op, actual) {
        (Op::Exists, a) => a.is_some(),
        (Op::NotExists, a) => a.is_none(),
        (Op::Ne, None) => true,
        (_, None) => false,
        (Op::Eq, Some(a)) => equal(a, value),
        (Op::Ne, Some(a)) => !equal(a, value),
        (Op::Gt, Some(a)) => order(a, value) == Some(Greater),
        (Op::Gte, Some(a)) => matches!(order(a, value), Some(Greater | Equal)),
        (Op::Lt, Some(a)) => order(a, value) == Some(Less),
        (Op::Lte, Some(a)) => matches!(order(a, value), Some(Less | Equal)),
        (Op::Contains, Some(Json::String(s))) => value.as_str().is_some_and(|v| s.contains(v)),
        (Op::Contains, Some(Json::Array(items))) => items.iter().any(|i| equal(i, value)),
        (Op::Contains, Some(_)) => false,
        (Op::In, Some(a)) => value
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| equal(a, v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(v: Json) -> Test {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tests_combine_fields_tags_and_logic() {
        let scope =
            json!({"contact": {"attributes": {"plan": "pro", "score": 42, "langs": ["en", "fr"]}}});
        let tags = vec!["vip".to_string()];
        let cases = [
            (
                json!({"field": "contact.attributes.plan", "op": "eq", "value": "pro"}),
                true,
            ),
            (
                json!({"field": "contact.attributes.score", "op": "gte", "value": 42.0}),
                true,
            ),
            (
                json!({"field": "contact.attributes.score", "op": "lt", "value": 10}),
                false,
            ),
            (
                json!({"field": "contact.attributes.langs", "op": "contains", "value": "fr"}),
                true,
            ),
            (
                json!({"field": "contact.attributes.plan", "op": "in", "value": ["free", "pro"]}),
                true,
            ),
            (
                json!({"field": "contact.attributes.missing", "op": "not_exists"}),
                true,
            ),
            (
                json!({"field": "contact.attributes.missing", "op": "eq", "value": null}),
                false,
            ),
            (json!({"tag": "vip"}), true),
            (
                json!({"all": [{"tag": "vip"}, {"not": {"tag": "churned"}}]}),
                true,
            ),
            (
                json!({"any": [{"tag": "churned"}, {"field": "contact.attributes.plan", "op": "ne", "value": "pro"}]}),
                false,
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(test(t.clone()).eval(&scope, &tags), expected, "{t}");
        }
    }

    #[test]
    fn an_in_test_needs_an_array() {
        let c: Condition =
            serde_json::from_value(json!({"if": {"field": "x", "op": "in", "value": 1}})).unwrap();
        assert_eq!(c.validate().unwrap_err().field, "if.value");
    }
}
