//! What a contact may hold, and a change to one. The one owner of contact
//! validation: the API checks the fields a caller sends with
//! [`check_fields`], the engine checks what an `update_contact` or
//! `add_tag` step would make of a contact with [`check_change`].

use serde_json::{Map, Value as Json};

/// Longest `external_id`, in characters: it is indexed (unique per
/// account), and a btree entry must fit in a third of a page.
pub const MAX_EXTERNAL_ID: usize = 255;
/// Longest email address, in characters (64 for the local part, 255 for
/// the domain, and the `@`); indexed.
pub const MAX_EMAIL: usize = 320;
/// Longest phone number, in characters (E.164 needs 16; room for
/// formatting).
pub const MAX_PHONE: usize = 64;
/// Most tags on a contact.
pub const MAX_TAGS: usize = 100;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 100;
/// Largest attributes object, serialized, in bytes: what every step of
/// every execution of the contact reads and what `update_contact` grows.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// A change to the contact row, made by a step and committed in that
/// step's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set fields and merge attributes.
    Update {
        /// New email, if given.
        email: Option<String>,
        /// New phone, if given.
        phone: Option<String>,
        /// New IANA timezone, if given.
        timezone: Option<String>,
        /// Attributes merged into the existing ones.
        attributes: Map<String, Json>,
        /// Attribute keys removed.
        unset: Vec<String>,
    },
    /// Add a tag (no-op when present).
    AddTag(String),
    /// Remove a tag (no-op when absent).
    RemoveTag(String),
}

/// The net effect of changes made one after another, as one relative
/// update: a checkpoint that commits several steps writes the contact
/// once, and a change made meanwhile by someone else (the API) survives
/// as it would have between the steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetChange {
    /// New email, if any step set one (the last wins).
    pub email: Option<String>,
    /// New phone, likewise.
    pub phone: Option<String>,
    /// New timezone, likewise.
    pub timezone: Option<String>,
    /// Attributes set, with the value the last step gave them.
    pub set: Map<String, Json>,
    /// Attributes whose last change removed them.
    pub unset: Vec<String>,
    /// Tags whose last change added them, in the order added.
    pub add: Vec<String>,
    /// Tags removed by some change (a tag removed then added again is in
    /// both: it moves to the end, as it would have).
    pub remove: Vec<String>,
}

impl NetChange {
    /// The net effect of `changes` in order; `None` when there are none.
    pub fn of<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Option<NetChange> {
        let mut net: Option<NetChange> = None;
        for change in changes {
            net.get_or_insert_with(NetChange::default).push(change);
        }
        net
    }

    fn push(&mut self, change: &Change) {
        match change {
            Change::Update {
                email,
                phone,
                timezone,
                attributes,
                unset,
            } => {
                let last = |old: &mut Option<String>, new: &Option<String>| {
                    if new.is_some() {
                        old.clone_from(new);
                    }
                };
                last(&mut self.email, email);
                last(&mut self.phone, phone);
                last(&mut self.timezone, timezone);
                for (k, v) in attributes {
                    self.unset.retain(|u| u != k);
                    self.set.insert(k.clone(), v.clone());
                }
                for k in unset {
                    self.set.remove(k);
                    if !self.unset.contains(k) {
                        self.unset.push(k.clone());
                    }
                }
            }
            Change::AddTag(tag) => {
                if !self.add.contains(tag) {
                    self.add.push(tag.clone());
                }
            }
            Change::RemoveTag(tag) => {
                self.add.retain(|t| t != tag);
                if !self.remove.contains(tag) {
                    self.remove.push(tag.clone());
                }
            }
        }
    }
}

/// Contact fields a caller sends; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// The CRM's id.
    pub external_id: Option<&'a str>,
    /// Email.
    pub email: Option<&'a str>,
    /// Phone.
    pub phone: Option<&'a str>,
    /// IANA timezone.
    pub timezone: Option<&'a str>,
    /// Attributes (replacing the old ones).
    pub attributes: Option<&'a Map<String, Json>>,
    /// Tags (replacing the old ones).
    pub tags: Option<&'a [String]>,
}

/// A field a contact may not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (`tags[3]` for one tag).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Checks the fields a caller sends.
///
/// # Errors
/// [`Invalid`] naming the first field at fault.
pub fn check_fields(f: &Fields<'_>) -> Result<(), Invalid> {
    let bad = |field: &str, message: String| {
        Err(Invalid {
            field: field.to_owned(),
            message,
        })
    };
    for (field, value, max) in [
        ("external_id", f.external_id, MAX_EXTERNAL_ID),
        ("email", f.email, MAX_EMAIL),
        ("phone", f.phone, MAX_PHONE),
    ] {
        if value.is_some_and(|v| v.chars().count() > max) {
            return bad(field, format!("must be at most {max} characters"));
        }
    }
    if let Some(tz) = f.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        return bad("timezone", format!("`{tz}` is not an IANA timezone"));
    }
    if f.email.is_some_and(|e| !e.contains('@')) {
        return bad("email", "not an email address".into());
    }
    if let Some(tags) = f.tags {
        if tags.len() > MAX_TAGS {
            return bad("tags", format!("at most {MAX_TAGS} tags"));
        }
        if let Some(i) = tags
            .iter()
            .position(|t| t.trim().is_empty() || t.chars().count() > MAX_TAG)
        {
            return bad(
                &format!("tags[{i}]"),
                format!("must be 1 to {MAX_TAG} characters, not only spaces"),
            );
        }
    }
    if let Some(a) = f.attributes {
        let size = attributes_size(a);
        if size > MAX_ATTRIBUTES_BYTES {
            return bad(
                "attributes",
                format!("is {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} allowed"),
            );
        }
    }
    Ok(())
}

/// Checks that `change` leaves a contact with `attributes` and `tags`
/// within the limits; the error says which it would pass.
///
/// # Errors
/// A message for people.
pub fn check_change(change: &Change, attributes: &Json, tags: &[String]) -> Result<(), String> {
    match change {
        Change::Update {
            email,
            phone,
            attributes: set,
            unset,
            ..
        } => {
            for (field, value, max) in [("email", email, MAX_EMAIL), ("phone", phone, MAX_PHONE)] {
                let n = value.as_ref().map_or(0, |v| v.chars().count());
                if n > max {
                    return Err(format!(
                        "the contact's {field} would be {n} characters; at most {max} allowed"
                    ));
                }
            }
            let mut merged = attributes.as_object().cloned().unwrap_or_default();
            merged.extend(set.clone());
            for key in unset {
                merged.remove(key);
            }
            let size = attributes_size(&merged);
            if size > MAX_ATTRIBUTES_BYTES {
                return Err(format!(
                    "the contact's attributes would be {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} allowed"
                ));
            }
            Ok(())
        }
        Change::AddTag(tag) if !tags.contains(tag) && tags.len() >= MAX_TAGS => Err(format!(
            "the contact has {MAX_TAGS} tags already; no more can be added"
        )),
        Change::AddTag(_) | Change::RemoveTag(_) => Ok(()),
    }
}

/// Serialized size of an attributes object, in bytes.
fn attributes_size(a: &Map<String, Json>) -> usize {
    // A map of JSON values always serializes.
    serde_json::to_string(a).map_or(0, |s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_name_the_first_one_at_fault() {
        let tags = vec!["ok".to_owned(), " ".to_owned()];
        let err = check_fields(&Fields {
            tags: Some(&tags),
            ..Fields::default()
        })
        .unwrap_err();
        assert_eq!(err.field, "tags[1]");
        let err = check_fields(&Fields {
            email: Some("nobody"),
            ..Fields::default()
        })
        .unwrap_err();
        assert_eq!(err.field, "email");
        assert!(check_fields(&Fields::default()).is_ok());
    }

    #[test]
    fn a_change_past_the_limits_says_which() {
        let big = json!("x".repeat(MAX_ATTRIBUTES_BYTES));
        let change = Change::Update {
            email: None,
            phone: None,
            timezone: None,
            attributes: Map::from_iter([("a".to_owned(), big)]),
            unset: vec![],
        };
        let err = check_change(&change, &json!({}), &[]).unwrap_err();
        assert!(err.contains("attributes would be"), "{err}");
        let full: Vec<String> = (0..MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(check_change(&Change::AddTag("new".into()), &json!({}), &full).is_err());
        assert!(check_change(&Change::AddTag("1".into()), &json!({}), &full).is_ok());
    }
}
