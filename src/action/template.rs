//! `{{ path }}` templates over the execution's scope:
//! `contact.email`, `contact.attributes.first_name`, `contact.tags`,
//! `execution.id`, `execution.metadata.campaign`, `steps.<step id>.<field>`.
//!
//! A string that is exactly one placeholder renders to the value itself
//! (so `"{{steps.score.value}}"` stays a number in a JSON body); anywhere
//! else values are interpolated as text. A missing value renders empty,
//! or as the default in `{{ contact.attributes.first_name | default: "there" }}`.

use serde_json::Value as Json;

/// Looks a dotted path up in `scope` (array items by index).
pub fn lookup<'a>(scope: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(scope, |v, key| match v {
        Json::Object(map) => map.get(key),
        Json::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// One `{{ ... }}` expression: a path and an optional default.
fn eval(scope: &Json, expr: &str) -> Json {
    let (path, default) = match expr.split_once('|') {
        Some((p, rest)) => {
            let d = rest.trim().strip_prefix("default:").map(|d| {
                let d = d.trim();
                d.strip_prefix('"')
                    .and_then(|d| d.strip_suffix('"'))
                    .unwrap_or(d)
                    .to_owned()
            });
            (p.trim(), d)
        }
        None => (expr.trim(), None),
    };
    match lookup(scope, path) {
        Some(v) if !v.is_null() => v.clone(),
        _ => default.map_or(Json::Null, Json::String),
    }
}

fn as_text(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a template string to text.
pub fn render_str(template: &str, scope: &Json) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&as_text(&eval(scope, &rest[start + 2..start + 2 + len])));
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Renders every string inside a JSON value; a string that is exactly one
/// placeholder becomes the value it names.
pub fn render_json(template: &Json, scope: &Json) -> Json {
    match template {
        Json::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
                && !inner.contains("{{")
            {
                return eval(scope, inner);
            }
            Json::String(render_str(s, scope))
        }
        Json::Array(items) => Json::Array(items.iter().map(|i| render_json(i, scope)).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_json(v, scope)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Checks that every `{{` in `template` is closed, for validation at write time.
///
/// # Errors
/// A message saying what is unbalanced.
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        match rest[start + 2..].find("}}") {
            Some(len) if rest[start + 2..start + 2 + len].trim().is_empty() => {
                return Err("empty `{{ }}` placeholder".into());
            }
            Some(len) => rest = &rest[start + 2 + len + 2..],
            None => return Err("`{{` without a closing `}}`".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Json {
        json!({
            "contact": {"email": "a@example.com", "attributes": {"first_name": "Ada", "score": 7}, "tags": ["vip"]},
            "steps": {"lookup": {"body": {"items": [10, 20]}}},
        })
    }

    #[test]
    fn placeholders_interpolate_text_and_keep_whole_values_typed() {
        let s = scope();
        assert_eq!(
            render_str("Hi {{ contact.attributes.first_name }}!", &s),
            "Hi Ada!"
        );
        assert_eq!(render_str("{{contact.tags}}", &s), "[\"vip\"]");
        assert_eq!(
            render_json(
                &json!({"score": "{{contact.attributes.score}}", "n": "{{steps.lookup.body.items.1}}"}),
                &s
            ),
            json!({"score": 7, "n": 20})
        );
    }

    #[test]
    fn missing_values_render_empty_or_as_their_default() {
        let s = scope();
        assert_eq!(render_str("Hi {{contact.attributes.nick}}.", &s), "Hi .");
        assert_eq!(
            render_str("Hi {{ contact.attributes.nick | default: \"there\" }}.", &s),
            "Hi there."
        );
        assert_eq!(render_json(&json!("{{nope}}"), &s), Json::Null);
    }

    #[test]
    fn unbalanced_placeholders_are_reported() {
        assert!(check("ok {{a}} ok").is_ok());
        assert!(check("bad {{a").is_err());
        assert!(check("bad {{  }}").is_err());
    }
}
