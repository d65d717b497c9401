//! The default email and SMS provider: the `outbox` table.

use serde_json::{Value as Json, json};
use sqlx::PgPool;

use super::{EmailProvider, SmsProvider};
use crate::action::{self, ActionError, Delivery, email, sms};
use crate::store;

/// The default email and SMS provider: records each message once per
/// idempotency key in the `outbox` table, for a relay (or the CRM) to
/// deliver.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
}

impl Outbox {
    /// An outbox in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Outbox { pool }
    }

    async fn record(
        &self,
        d: &Delivery,
        channel: &str,
        recipient: &str,
        subject: Option<&str>,
        body: &str,
    ) -> Result<Json, ActionError> {
        let (id, recorded) = store::outbox::record(
            &self.pool,
            &store::outbox::NewMessage {
                account_id: d.account_id,
                execution_id: d.execution_id,
                channel,
                recipient,
                subject,
                body,
                idempotency_key: &d.idempotency_key,
            },
        )
        .await
        .map_err(|e| ActionError::transient(format!("outbox: {e}")))?;
        Ok(json!({
            "provider": "outbox",
            "outbox_id": id,
            "to": action::mask(recipient),
            "duplicate": !recorded,
        }))
    }
}

#[async_trait::async_trait]
impl EmailProvider for Outbox {
    async fn send(&self, msg: &email::Message, d: &Delivery) -> Result<Json, ActionError> {
        self.record(d, "email", &msg.to, Some(&msg.subject), &msg.body)
            .await
    }
}

#[async_trait::async_trait]
impl SmsProvider for Outbox {
    async fn send(&self, msg: &sms::Message, d: &Delivery) -> Result<Json, ActionError> {
        self.record(d, "sms", &msg.to, None, &msg.body).await
    }
}
