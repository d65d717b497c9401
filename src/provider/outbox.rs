//! The default email and SMS provider: the `outbox` table.
//!
//! Messages sent while an insert is in flight go together in the next one
//! (one statement for up to [`Outbox::batched`]'s `max`), so a busy worker
//! makes one round trip for many messages and an idle one waits for none.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::batch::{Batcher, Rule};
use super::{EmailProvider, SmsProvider};
use crate::action::{self, ActionError, Delivery, email, sms};
use crate::store::{self, outbox::NewMessage};

/// Inserts of batches in flight at once (one per core of a small database).
const INSERTS: usize = 2;

/// The default email and SMS provider: records each message once per
/// idempotency key in the `outbox` table, for a relay (or the CRM) to
/// deliver.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    /// Inserts of many messages; `None` inserts each alone.
    batches: Option<(Batcher<(), Message, Recorded>, Rule)>,
}

/// A message waiting for its batch's insert.
pub struct Message {
    account_id: Option<Uuid>,
    execution_id: Option<Uuid>,
    channel: &'static str,
    recipient: String,
    subject: Option<String>,
    body: String,
    idempotency_key: String,
}

/// Its id and whether this insert recorded it (`false`: a re-run).
type Recorded = Result<(Uuid, bool), String>;

impl Message {
    fn row(&self) -> NewMessage<'_> {
        NewMessage {
            account_id: self.account_id,
            execution_id: self.execution_id,
            channel: self.channel,
            recipient: &self.recipient,
            subject: self.subject.as_deref(),
            body: &self.body,
            idempotency_key: &self.idempotency_key,
        }
    }
}

impl Outbox {
    /// An outbox in `pool`'s database, one insert per message.
    pub fn new(pool: PgPool) -> Self {
        Outbox {
            pool,
            batches: None,
        }
    }

    /// An outbox in `pool`'s database inserting up to `max` messages in one
    /// statement (1: one each); `sizes` observes the messages per insert.
    pub fn batched(pool: PgPool, max: usize, sizes: Option<prometheus::Histogram>) -> Self {
        if max <= 1 {
            return Outbox::new(pool);
        }
        let db = pool.clone();
        let mut batcher = Batcher::new(Arc::new(move |(), messages: Vec<Message>| {
            let db = db.clone();
            async move {
                let rows: Vec<_> = messages.iter().map(Message::row).collect();
                match store::outbox::record_many(&db, &rows).await {
                    Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e.to_string()); messages.len()],
                }
            }
            .boxed()
        }));
        if let Some(sizes) = sizes {
            batcher = batcher.with_metrics(sizes);
        }
        let rule = Rule {
            max,
            within: Duration::ZERO,
            calls: INSERTS,
        };
        Outbox {
            pool,
            batches: Some((batcher, rule)),
        }
    }

    async fn record(
        &self,
        d: &Delivery,
        channel: &'static str,
        recipient: &str,
        subject: Option<&str>,
        body: &str,
    ) -> Result<Json, ActionError> {
        let failed = |e: String| ActionError::transient(format!("outbox: {e}"));
        let m = Message {
            account_id: d.account_id,
            execution_id: d.execution_id,
            channel,
            recipient: recipient.to_owned(),
            subject: subject.map(str::to_owned),
            body: body.to_owned(),
            idempotency_key: d.idempotency_key.clone(),
        };
        let (id, recorded) = match &self.batches {
            Some((batcher, rule)) => batcher
                .submit((), *rule, m)
                .await
                .unwrap_or_else(|| Err("the batched insert was lost".into()))
                .map_err(failed)?,
            None => store::outbox::record(&self.pool, &m.row())
                .await
                .map_err(|e| failed(e.to_string()))?,
        };
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
