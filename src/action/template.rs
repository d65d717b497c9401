//! `{{ path }}` templates over the execution's scope:
//! `contact.email`, `contact.attributes.first_name`, `contact.tags`,
//! `execution.id`, `execution.metadata.campaign`, `steps.<step id>.<field>`.
//!
//! A string that is exactly one placeholder renders to the value itself
//! (so `"{{steps.score.value}}"` stays a number in a JSON body); anywhere
//! else values are interpolated as text. A missing value renders empty,
//! or as the default in `{{ contact.attributes.first_name | default: "there" }}`.
//!
//! A rendered field may hold at most [`MAX_RENDERED_BYTES`]: a template
//! that copies a value into itself (an attribute doubled by each of a row
//! of `update_contact` steps) would otherwise grow without bound.

use serde_json::{Map, Value as Json};

/// Most bytes one rendered field (a string, or a JSON body or argument
/// list as serialized) may hold.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// A field that renders past [`MAX_RENDERED_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("renders to more than {MAX_RENDERED_BYTES} bytes (at least {size})")]
pub struct TooLarge {
    /// Bytes rendered when the limit was passed.
    pub size: usize,
}

/// Looks a dotted path up in `scope` (array items by index).
pub fn lookup<'a>(scope: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(scope, |v, key| match v {
        Json::Object(map) => map.get(key),
        Json::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// One `{{ ... }}` expression: a dotted path and an optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr<'a> {
    /// `contact.attributes.first_name`, `steps.lookup.body.id`, ...
    pub path: &'a str,
    /// What a missing value renders as (`| default: "there"`).
    pub default: Option<String>,
}

/// Parses the inside of a placeholder.
///
/// # Errors
/// A message for an empty path or a filter other than `default:`.
pub fn parse_expr(expr: &str) -> Result<Expr<'_>, String> {
    let (path, filter) = match expr.split_once('|') {
        Some((p, f)) => (p.trim(), Some(f.trim())),
        None => (expr.trim(), None),
    };
    if path.is_empty() {
        return Err("empty path".into());
    }
    let default = match filter {
        None => None,
        Some(f) => {
            let d = f
                .strip_prefix("default:")
                .ok_or_else(|| {
                    format!("unknown filter `{f}` (the one filter is `default: \"...\"`)")
                })?
                .trim();
            Some(
                d.strip_prefix('"')
                    .and_then(|d| d.strip_suffix('"'))
                    .unwrap_or(d)
                    .to_owned(),
            )
        }
    };
    Ok(Expr { path, default })
}

/// A piece of a template: literal text, or the inside of a `{{ ... }}`.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// `template` cut at its placeholders, in order; an unclosed `{{` is text.
fn pieces(template: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = template;
    let mut inside = None;
    std::iter::from_fn(move || {
        if let Some(p) = inside.take() {
            return Some(Piece::Placeholder(p));
        }
        if rest.is_empty() {
            return None;
        }
        let open = rest
            .find("{{")
            .and_then(|start| Some((start, rest[start + 2..].find("}}")?)));
        let Some((start, len)) = open else {
            return Some(Piece::Text(std::mem::take(&mut rest)));
        };
        let text = &rest[..start];
        inside = Some(&rest[start + 2..start + 2 + len]);
        rest = &rest[start + 2 + len + 2..];
        Some(Piece::Text(text))
    })
}

/// The insides of the placeholders of `template`, in order.
pub fn placeholders(template: &str) -> Vec<&str> {
    pieces(template)
        .filter_map(|p| match p {
            Piece::Placeholder(inner) => Some(inner),
            Piece::Text(_) => None,
        })
        .collect()
}

/// One `{{ ... }}` expression's value. Definitions are checked when
/// written; one stored before that check may hold a filter that does not
/// parse, which is ignored as it always was.
fn eval(scope: &Json, expr: &str) -> Json {
    let (path, default) = match parse_expr(expr) {
        Ok(e) => (e.path, e.default),
        Err(_) => (expr.split('|').next().unwrap_or_default().trim(), None),
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
///
/// # Errors
/// [`TooLarge`] past [`MAX_RENDERED_BYTES`], as soon as it is passed.
pub fn render_str(template: &str, scope: &Json) -> Result<String, TooLarge> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(expr) => out.push_str(&as_text(&eval(scope, expr))),
        }
        if out.len() > MAX_RENDERED_BYTES {
            return Err(TooLarge { size: out.len() });
        }
    }
    Ok(out)
}

/// Renders every string inside a JSON value; a string that is exactly one
/// placeholder becomes the value it names.
///
/// # Errors
/// [`TooLarge`] when a string, or the whole value serialized, passes
/// [`MAX_RENDERED_BYTES`].
pub fn render_json(template: &Json, scope: &Json) -> Result<Json, TooLarge> {
    capped(render_value(template, scope)?)
}

/// [`render_json`] of each item, the list capped as one field (arq
/// arguments).
///
/// # Errors
/// As [`render_json`].
pub fn render_list(items: &[Json], scope: &Json) -> Result<Vec<Json>, TooLarge> {
    capped(render_items(items, scope)?)
}

/// [`render_json`] of each value, the map capped as one field (arq
/// keyword arguments, contact attributes).
///
/// # Errors
/// As [`render_json`].
pub fn render_map(map: &Map<String, Json>, scope: &Json) -> Result<Map<String, Json>, TooLarge> {
    capped(render_entries(map, scope)?)
}

/// `rendered` if its JSON fits [`MAX_RENDERED_BYTES`], counted without
/// building the text.
fn capped<T: serde::Serialize>(rendered: T) -> Result<T, TooLarge> {
    /// Counts what serde_json writes.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing JSON values into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, &rendered);
    if count.0 > MAX_RENDERED_BYTES {
        return Err(TooLarge { size: count.0 });
    }
    Ok(rendered)
}

fn render_value(template: &Json, scope: &Json) -> Result<Json, TooLarge> {
    Ok(match template {
        Json::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
                && !inner.contains("{{")
            {
                return Ok(eval(scope, inner));
            }
            Json::String(render_str(s, scope)?)
        }
        Json::Array(items) => Json::Array(render_items(items, scope)?),
        Json::Object(map) => Json::Object(render_entries(map, scope)?),
        other => other.clone(),
    })
}

fn render_items(items: &[Json], scope: &Json) -> Result<Vec<Json>, TooLarge> {
    items.iter().map(|i| render_value(i, scope)).collect()
}

fn render_entries(map: &Map<String, Json>, scope: &Json) -> Result<Map<String, Json>, TooLarge> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), render_value(v, scope)?)))
        .collect()
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
            render_str("Hi {{ contact.attributes.first_name }}!", &s).unwrap(),
            "Hi Ada!"
        );
        assert_eq!(render_str("{{contact.tags}}", &s).unwrap(), "[\"vip\"]");
        assert_eq!(
            render_json(
                &json!({"score": "{{contact.attributes.score}}", "n": "{{steps.lookup.body.items.1}}"}),
                &s
            )
            .unwrap(),
            json!({"score": 7, "n": 20})
        );
    }

    #[test]
    fn missing_values_render_empty_or_as_their_default() {
        let s = scope();
        assert_eq!(
            render_str("Hi {{contact.attributes.nick}}.", &s).unwrap(),
            "Hi ."
        );
        assert_eq!(
            render_str("Hi {{ contact.attributes.nick | default: \"there\" }}.", &s).unwrap(),
            "Hi there."
        );
        assert_eq!(render_json(&json!("{{nope}}"), &s).unwrap(), Json::Null);
    }

    #[test]
    fn a_field_that_renders_past_the_cap_is_refused() {
        let big = "x".repeat(40 * 1024);
        let s = json!({"contact": {"attributes": {"big": big}}});
        let twice = "{{contact.attributes.big}}{{contact.attributes.big}}";
        assert_eq!(
            render_str("{{contact.attributes.big}}", &s).unwrap().len(),
            40 * 1024
        );
        let err = render_str(twice, &s).unwrap_err();
        assert!(err.size > MAX_RENDERED_BYTES, "{err}");
        let err = render_json(
            &json!({"a": "{{contact.attributes.big}}", "b": "{{contact.attributes.big}}"}),
            &s,
        )
        .unwrap_err();
        assert!(err.size > MAX_RENDERED_BYTES, "{err}");
    }

    #[test]
    fn unbalanced_placeholders_are_reported() {
        assert!(check("ok {{a}} ok").is_ok());
        assert!(check("bad {{a").is_err());
        assert!(check("bad {{  }}").is_err());
    }
}
