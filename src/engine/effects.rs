//! `Providers`: the engine's implementation of [`action::Effects`] with
//! real providers: the PostgreSQL outbox (default) or SMTP for email, the
//! outbox or a Twilio-style HTTP API for SMS, the guarded webhook client,
//! and the ARQ queue for `arq` steps.

use serde_json::{Value as Json, json};
use sqlx::PgPool;

use crate::action::{self, ActionError, Effects, Input, arq, email, sms, webhook};
use crate::queue::{self, EnqueueOptions, JobStatus, Value};
use crate::store;

/// Where emails go.
#[derive(Clone)]
pub enum EmailProvider {
    /// Recorded in the `outbox` table for a relay to deliver.
    Outbox,
    /// Sent over SMTP.
    Smtp(Box<email::Smtp>),
}

/// Where SMS go.
#[derive(Clone)]
pub enum SmsProvider {
    /// Recorded in the `outbox` table.
    Outbox,
    /// Posted to a Twilio-style HTTP API.
    Http(sms::HttpSms),
}

/// The side effects of actions, wired to real services.
#[derive(Clone)]
pub struct Providers {
    /// Database (outbox).
    pub pool: PgPool,
    /// Redis (arq steps).
    pub queue: queue::Client,
    /// Email provider.
    pub email: EmailProvider,
    /// SMS provider.
    pub sms: SmsProvider,
    /// Webhook client with the address guard.
    pub webhook: webhook::Client,
}

impl Providers {
    async fn outbox(
        &self,
        input: &Input<'_>,
        channel: &str,
        recipient: &str,
        subject: Option<&str>,
        body: &str,
    ) -> Result<Json, ActionError> {
        let key = input.idempotency_key();
        let (id, recorded) = store::outbox::record(
            &self.pool,
            &store::outbox::NewMessage {
                account_id: input.account_id,
                execution_id: input.execution_id,
                channel,
                recipient,
                subject,
                body,
                idempotency_key: &key,
            },
        )
        .await
        .map_err(|e| ActionError::Transient(format!("outbox: {e}")))?;
        Ok(json!({
            "provider": "outbox",
            "outbox_id": id,
            "to": action::mask(recipient),
            "duplicate": !recorded,
        }))
    }
}

impl Effects for Providers {
    async fn send_email(
        &self,
        msg: &email::Message,
        input: &Input<'_>,
    ) -> Result<Json, ActionError> {
        match &self.email {
            EmailProvider::Outbox => {
                self.outbox(input, "email", &msg.to, Some(&msg.subject), &msg.body)
                    .await
            }
            EmailProvider::Smtp(smtp) => smtp.send(msg, &input.idempotency_key()).await,
        }
    }

    async fn send_sms(&self, msg: &sms::Message, input: &Input<'_>) -> Result<Json, ActionError> {
        match &self.sms {
            SmsProvider::Outbox => self.outbox(input, "sms", &msg.to, None, &msg.body).await,
            SmsProvider::Http(http) => http.send(msg, &input.idempotency_key()).await,
        }
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
            .map_err(|e| ActionError::Transient(format!("enqueue arq job: {e}")))
    }

    async fn job_state(&self, queue: &str, job_id: &str) -> Result<arq::JobState, ActionError> {
        let transient = |e: queue::Error| ActionError::Transient(format!("arq job state: {e}"));
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
