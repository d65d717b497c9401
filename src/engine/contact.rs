//! The contact mirror: contacts are written only here, after the domain's
//! rules ([`crate::domain::contact`]) accept their fields, and erased here
//! (the erasure path of a data-protection request).

use uuid::Uuid;

use super::plan::{self, Event, Status};
use super::{Engine, Error, Result};
use crate::domain::contact::{self as rules, Fields};
use crate::store;
use crate::store::contact::{Contact, Erased, NewContact, Patch};

impl Engine {
    /// Creates a contact.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field; [`Error::ContactExists`] for a
    /// taken `external_id`; store errors.
    pub async fn create_contact(&self, account_id: Uuid, c: &NewContact) -> Result<Contact> {
        rules::check_fields(&Fields {
            external_id: c.external_id.as_deref(),
            email: c.email.as_deref(),
            phone: c.phone.as_deref(),
            timezone: c.timezone.as_deref(),
            attributes: Some(&c.attributes),
            tags: Some(c.tags.as_slice()),
        })?;
        store::contact::insert(&self.pool, account_id, c)
            .await
            .map_err(duplicate)
    }

    /// Changes the fields `patch` names.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::ContactNotFound`],
    /// [`Error::ContactExists`]; store errors.
    pub async fn update_contact(
        &self,
        account_id: Uuid,
        id: Uuid,
        patch: &Patch,
    ) -> Result<Contact> {
        rules::check_fields(&Fields {
            external_id: patch.external_id.as_deref(),
            email: patch.email.as_deref(),
            phone: patch.phone.as_deref(),
            timezone: patch.timezone.as_deref(),
            attributes: patch.attributes.as_ref(),
            tags: patch.tags.as_deref(),
        })?;
        store::contact::update(&self.pool, account_id, id, patch)
            .await
            .map_err(duplicate)?
            .ok_or(Error::ContactNotFound)
    }
}

impl Engine {
    /// Erases the contact: its personal data goes, its running executions
    /// are cancelled, and every execution of it keeps its shape with its
    /// context, metadata, errors, log responses and outbox messages
    /// redacted. Reads no longer see the contact.
    ///
    /// # Errors
    /// [`Error::ContactNotFound`] (also when erased already); store errors.
    pub async fn erase_contact(&self, account_id: Uuid, id: Uuid) -> Result<Erased> {
        let from = plan::sources(Event::Cancel);
        let to = plan::transition(Status::Running, Event::Cancel)?;
        let erased = store::contact::erase(&self.pool, account_id, id, &from, to, plan::CANCELLED)
            .await?
            .ok_or(Error::ContactNotFound)?;
        self.observe_cancelled(&erased.cancelled);
        Ok(erased)
    }
}

fn duplicate(e: store::Error) -> Error {
    if e.is_unique_violation() {
        Error::ContactExists
    } else {
        e.into()
    }
}
