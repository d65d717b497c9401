//! An account's rate limits: read, and replaced (checked, stored, then
//! announced so every worker's cached copy goes at once).

use uuid::Uuid;

use super::invalidate::Change;
use super::{Engine, Error};
use crate::domain::Limits;
use crate::store;

impl Engine {
    /// The limits `account` set itself (`{}`: all from the defaults).
    ///
    /// # Errors
    /// Database errors.
    pub async fn limits(&self, account: Uuid) -> Result<Limits, Error> {
        Ok(store::account::limits(&self.pool, account)
            .await?
            .unwrap_or_default())
    }

    /// Replaces `account`'s limits.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field of a rate that cannot be used;
    /// database errors.
    pub async fn set_limits(&self, account: Uuid, limits: &Limits) -> Result<(), Error> {
        if let Some((field, message)) = limits.problem() {
            return Err(Error::Invalid { field, message });
        }
        store::account::set_limits(&self.pool, account, limits).await?;
        self.changed(Change::Limits(account)).await;
        Ok(())
    }
}
