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

/// Whether any string or object key in `v` holds a NUL. Allocates
/// nothing: the common answer, no, costs one read of the document.
pub fn has_nul(v: &Json) -> bool {
    match v {
        Json::String(s) => s.contains(NUL),
        Json::Array(items) => items.iter().any(has_nul),
        Json::Object(map) => map.iter().any(|(k, item)| k.contains(NUL) || has_nul(item)),
        _ => false,
    }
}

/// The path (`steps[2].url`, `attributes`, ...) of the first string or
/// object key in `v` that holds a NUL, below `root` (empty for none).
/// Paths are built only along the way to the NUL.
pub fn first_nul(v: &Json, root: &str) -> Option<String> {
    let display = || {
        if root.is_empty() {
            "body".to_owned()
        } else {
            root.to_owned()
        }
    };
    match v {
        Json::String(s) if s.contains(NUL) => Some(display()),
        Json::Array(items) => {
            let i = items.iter().position(has_nul)?;
            first_nul(&items[i], &format!("{root}[{i}]"))
        }
        Json::Object(map) => {
            let (k, item) = map
                .iter()
                .find(|(k, item)| k.contains(NUL) || has_nul(item))?;
            if k.contains(NUL) {
                return Some(display());
            }
            let path = if root.is_empty() {
                k.clone()
            } else {
                format!("{root}.{k}")
            };
            first_nul(item, &path)
        }
        _ => None,
    }
}

/// `v` with every NUL in strings and keys replaced by U+FFFD; `v` itself,
/// untouched, when it holds none.
pub fn scrub(v: Json) -> Json {
    if !has_nul(&v) {
        return v;
    }
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
