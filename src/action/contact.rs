//! `update_contact`, `add_tag`, `remove_tag`, and the completing `goal` /
//! `end`. Contact changes are returned as [`Change`] and committed by the
//! engine in the step's checkpoint transaction, so they happen exactly once.
//!
//! ```json
//! {"id": "stage", "type": "update_contact", "attributes": {"stage": "onboarded", "score": "{{steps.score.result}}"}}
//! {"id": "vip", "type": "add_tag", "tag": "vip"}
//! {"id": "converted", "type": "goal", "name": "trial_converted"}
//! ```

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{ActionError, FieldError, Input, Next, Outcome, template};
use crate::domain::Change;

/// Configuration of an `update_contact` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    /// New email (template).
    #[serde(default)]
    pub email: Option<String>,
    /// New phone (template).
    #[serde(default)]
    pub phone: Option<String>,
    /// New IANA timezone (template).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Attributes to set; values are JSON templates.
    #[serde(default)]
    pub attributes: Map<String, Json>,
    /// Attribute keys to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl UpdateContact {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.email.is_none()
            && self.phone.is_none()
            && self.timezone.is_none()
            && self.attributes.is_empty()
            && self.unset.is_empty()
        {
            return Err(FieldError::new(
                "attributes",
                "nothing to update: give email, phone, timezone, attributes or unset",
            ));
        }
        if let Some(tz) = &self.timezone
            && !tz.contains("{{")
        {
            tz.parse::<chrono_tz::Tz>().map_err(|_| {
                FieldError::new("timezone", format!("`{tz}` is not an IANA timezone"))
            })?;
        }
        for (field, t) in [
            ("email", &self.email),
            ("phone", &self.phone),
            ("timezone", &self.timezone),
        ] {
            if let Some(t) = t {
                template::check(t).map_err(|m| FieldError::new(field, m))?;
            }
        }
        Ok(())
    }

    pub(super) fn run(&self, input: &Input<'_>) -> Result<Outcome, ActionError> {
        let render = |field, text: &Option<String>| {
            text.as_deref()
                .map(|t| super::render(field, t, input.scope))
                .transpose()
        };
        let attributes = template::render_map(&self.attributes, input.scope)
            .map_err(|e| ActionError::too_large("attributes", e))?;
        let timezone =
            render("timezone", &self.timezone)?.filter(|tz| tz.parse::<chrono_tz::Tz>().is_ok());
        let mut updated: Vec<String> = attributes
            .keys()
            .map(|k| format!("attributes.{k}"))
            .collect();
        for (name, v) in [
            ("email", &self.email),
            ("phone", &self.phone),
            ("timezone", &self.timezone),
        ] {
            if v.is_some() {
                updated.push(name.to_owned());
            }
        }
        Ok(Outcome::Done {
            response: json!({"updated": updated, "unset": self.unset}),
            next: Next::Following,
            change: Some(Change::Update {
                email: render("email", &self.email)?,
                phone: render("phone", &self.phone)?,
                timezone,
                attributes,
                unset: self.unset.clone(),
            }),
        })
    }
}

/// Configuration of `add_tag` / `remove_tag`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// The tag.
    pub tag: String,
}

impl Tag {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        let t = self.tag.trim();
        if t.is_empty() || t.len() > 100 {
            return Err(FieldError::new("tag", "must be 1 to 100 characters"));
        }
        Ok(())
    }

    pub(super) fn run(&self, _input: &Input<'_>, add: bool) -> Outcome {
        let tag = self.tag.trim().to_owned();
        Outcome::Done {
            response: json!({ if add { "added" } else { "removed" }: tag }),
            next: Next::Following,
            change: Some(if add {
                Change::AddTag(tag)
            } else {
                Change::RemoveTag(tag)
            }),
        }
    }
}

/// Configuration of a `goal` step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Name for analytics.
    #[serde(default)]
    pub name: Option<String>,
}

/// `end` takes no fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}
