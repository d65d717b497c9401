//! What PostgreSQL's `text` and `jsonb` cannot hold: the NUL character
//! (`\u0000`). Input from clients is refused with [`first_nul`] naming
//! where it is; data from third parties (a webhook's answer, an arq job's
//! result, a provider's error text) is kept with [`scrub`], each NUL
//! replaced by U+FFFD, so that one odd byte cannot fail a checkpoint again
//! and again.

use serde_json::Value as Json;

/// Why a string holding NUL is refused, as clients are told.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

const NUL: char = '\0';
const REPLACEMENT: char = '\u{fffd}';

/// The path (`steps[2].url`, `attributes`, ...) of the first string or
/// object key in `v` that holds a NUL, below `root` (empty for none).
pub fn first_nul(v: &Json, root: &str) -> Option<String> {
    match v {
        Json::String(s) if s.contains(NUL) => Some(display(root)),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_nul(item, &format!("{root}[{i}]"))),
        Json::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains(NUL) {
                return Some(display(root));
            }
            let path = if root.is_empty() {
                k.clone()
            } else {
                format!("{root}.{k}")
            };
            first_nul(item, &path)
        }),
        _ => None,
    }
}

fn display(root: &str) -> String {
    if root.is_empty() {
        "body".to_owned()
    } else {
        root.to_owned()
    }
}

/// `v` with every NUL in strings and keys replaced by U+FFFD.
pub fn scrub(v: Json) -> Json {
    match v {
        Json::String(s) => Json::String(scrub_str(s)),
        Json::Array(items) => Json::Array(items.into_iter().map(scrub).collect()),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, item)| (scrub_str(k), scrub(item)))
                .collect(),
        ),
        other => other,
    }
}

/// `s` with every NUL replaced by U+FFFD.
pub fn scrub_str(s: String) -> String {
    if s.contains(NUL) {
        s.replace(NUL, &REPLACEMENT.to_string())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_nul_is_found_by_path_in_values_and_keys() {
        let v = json!({"name": "ok", "definition": {"steps": [{"id": "a"}, {"url": "x\u{0}y"}]}});
        assert_eq!(
            first_nul(&v, "").as_deref(),
            Some("definition.steps[1].url")
        );
        let v = json!({"attributes": {"bad\u{0}key": 1}});
        assert_eq!(first_nul(&v, "").as_deref(), Some("attributes"));
        assert_eq!(first_nul(&json!("\u{0}"), "").as_deref(), Some("body"));
        assert_eq!(first_nul(&json!({"a": ["b", 1, null]}), ""), None);
    }

    #[test]
    fn scrubbing_replaces_every_nul_and_keeps_the_rest() {
        let v = json!({"k\u{0}": ["a\u{0}b", 2], "ok": "fine"});
        let s = scrub(v);
        assert_eq!(s, json!({"k\u{fffd}": ["a\u{fffd}b", 2], "ok": "fine"}));
        assert_eq!(first_nul(&s, ""), None);
    }
}
