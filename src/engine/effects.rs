//! `Providers`: the engine's implementation of [`action::Effects`] with
//! real providers behind the provider traits: the PostgreSQL [`Outbox`]
//! (default) or SMTP for email, the outbox or a Twilio-style HTTP API for
//! SMS, the guarded webhook client, and the ARQ queue for `arq` steps.

use std::sync::Arc;

use serde_json::{Value as Json, json};
use sqlx::PgPool;

use crate::action::email::EmailProvider;
use crate::action::sms::SmsProvider;
use crate::action::{self, ActionError, Delivery, Effects, Input, arq, email, sms, webhook};
use crate::queue::{self, EnqueueOptions, JobStatus, Value};
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

/// The side effects of actions, wired to real services.
#[derive(Clone)]
pub struct Providers {
    /// Redis (arq steps).
    pub queue: queue::Client,
    /// Email provider.
    pub email: Arc<dyn EmailProvider>,
    /// SMS provider.
    pub sms: Arc<dyn SmsProvider>,
    /// Webhook client with the address guard.
    pub webhook: webhook::Client,
}

impl Effects for Providers {
    async fn send_email(
        &self,
        msg: &email::Message,
        input: &Input<'_>,
    ) -> Result<Json, ActionError> {
        self.email.send(msg, &input.delivery()).await
    }

    async fn send_sms(&self, msg: &sms::Message, input: &Input<'_>) -> Result<Json, ActionError> {
        self.sms.send(msg, &input.delivery()).await
    }

    async fn call(&self, req: &webhook::Request) -> Result<webhook::Response, ActionError> {
        self.webhook.call(req).await
    }

    async fn enqueue(&self, job: &arq::Enqueue) -> Result<(), ActionError> {
        let args = job.args.iter().map(Value::from_json).collect();
        let kwargs = job
            .kwargs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from_json(v)))
            .collect();
        self.queue
            .enqueue(
                &job.function,
                args,
                kwargs,
                EnqueueOptions {
                    job_id: Some(job.job_id.clone()),
                    queue: Some(job.queue.clone()),
                    ..EnqueueOptions::default()
                },
            )
            .await
            // `None` is a duplicate: a re-run of this attempt enqueued it already.
            .map(|_| ())
            .map_err(|e| ActionError::transient(format!("enqueue arq job: {e}")))
    }

    async fn job_state(&self, queue: &str, job_id: &str) -> Result<arq::JobState, ActionError> {
        let transient = |e: queue::Error| ActionError::transient(format!("arq job state: {e}"));
        if let Some(r) = self.queue.result(job_id).await.map_err(transient)? {
            return Ok(arq::JobState::Done {
                success: r.success,
                result: r.result.to_json(),
            });
        }
        Ok(
            match self.queue.status(queue, job_id).await.map_err(transient)? {
                // The result may have landed between the two reads.
                JobStatus::Complete => arq::JobState::Pending,
                JobStatus::NotFound => arq::JobState::Missing,
                JobStatus::Queued | JobStatus::Deferred | JobStatus::InProgress => {
                    arq::JobState::Pending
                }
            },
        )
    }
}
