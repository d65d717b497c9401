//! The real services behind actions' side effects, together: the
//! PostgreSQL [`Outbox`] (the default for email and SMS), [`Smtp`], the
//! Twilio-style [`HttpSms`], the guarded [`webhook::Client`], and the ARQ
//! queue for `arq` steps. [`Providers`] implements [`action::Effects`] with
//! them; which ones run is configuration ([`Providers::from_config`]).

pub mod batch;
pub mod breaker;
pub mod http_sms;
pub mod limit;
pub mod outbox;
pub mod smtp;
pub mod webhook;
pub mod webhook_batch;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec};
use serde_json::Value as Json;
use sqlx::PgPool;

use crate::action::{self, ActionError, Delivery, Effects, ErrorClass, Input, arq, email, sms};
use crate::config::{EmailProviderKind, EngineConfig, SmsProviderKind, Switch};
use crate::queue::{self, BreakerPolicy, EnqueueOptions, JobStatus, Value};
pub use breaker::Breakers;
pub use http_sms::HttpSms;
pub use limit::{Admit, Limiter, Permit};
pub use outbox::Outbox;
pub use smtp::Smtp;

/// Timeout of a call to the HTTP SMS API.
const SMS_TIMEOUT: Duration = Duration::from_secs(30);

/// A provider that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting it needs is missing or does not parse.
    #[error("{0}")]
    Config(String),
    /// The HTTP client (TLS) could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Delivers emails. Implementations: [`Outbox`] (default) and [`Smtp`].
#[async_trait::async_trait]
pub trait EmailProvider: Send + Sync {
    /// Delivers `msg`; returns a receipt for the step's log (recipient masked).
    ///
    /// # Errors
    /// Transient when a retry may succeed, permanent when it cannot.
    async fn send(&self, msg: &email::Message, delivery: &Delivery) -> Result<Json, ActionError>;

    /// The key of its circuit breaker (`smtp:<host>`); `None` for a
    /// provider that needs none.
    fn breaker_key(&self) -> Option<String> {
        None
    }
}

/// Delivers SMS. Implementations: [`Outbox`] (default) and [`HttpSms`].
#[async_trait::async_trait]
pub trait SmsProvider: Send + Sync {
    /// Delivers `msg`; returns a receipt for the step's log (number masked).
    ///
    /// # Errors
    /// Transient when a retry may succeed, permanent when it cannot.
    async fn send(&self, msg: &sms::Message, delivery: &Delivery) -> Result<Json, ActionError>;

    /// The key of its circuit breaker (`sms:<account>`); `None` for a
    /// provider that needs none.
    fn breaker_key(&self) -> Option<String> {
        None
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
    /// A circuit breaker per provider.
    pub breakers: Breakers,
    /// Per-account rate limits.
    pub limits: Limiter,
    /// Webhook calls of steps that batch them.
    pub webhook_batches: webhook_batch::Batches,
    /// Items per batched call by provider, for the process's registry.
    pub batch_sizes: HistogramVec,
}

impl Effects for Providers {
    async fn send_email(
        &self,
        msg: &email::Message,
        input: &Input<'_>,
    ) -> Result<Json, ActionError> {
        let key = self.email.breaker_key();
        let delivery = input.delivery();
        let send = self.email.send(msg, &delivery);
        self.breakers.guard(key.as_deref(), send).await
    }

    async fn send_sms(&self, msg: &sms::Message, input: &Input<'_>) -> Result<Json, ActionError> {
        let key = self.sms.breaker_key();
        let delivery = input.delivery();
        let send = self.sms.send(msg, &delivery);
        self.breakers.guard(key.as_deref(), send).await
    }

    async fn call(
        &self,
        req: &action::webhook::Request,
    ) -> Result<action::webhook::Response, ActionError> {
        if let Some((key, rule, item)) = webhook_batch::part(req) {
            // The batch's call goes through the breaker, once.
            return self
                .webhook_batches
                .submit(key, rule, item)
                .await
                .unwrap_or_else(|| Err(ActionError::transient("the batched call was lost")));
        }
        let most = action::webhook::MAX_BODY;
        webhook::call_guarded(&self.webhook, &self.breakers, req, most).await
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

    async fn reserve(&self, channel: action::Channel<'_>, input: &Input<'_>) -> Duration {
        self.limits.reserve(input.account_id, channel).await
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

impl Providers {
    /// Providers over these services; webhook batches go through
    /// `webhook` behind `breakers`, their sizes observed in `batch_sizes`
    /// ([`batch_sizes`], where the outbox observes its own too).
    pub fn new(
        queue: queue::Client,
        email: Arc<dyn EmailProvider>,
        sms: Arc<dyn SmsProvider>,
        webhook: webhook::Client,
        breakers: Breakers,
        limits: Limiter,
        batch_sizes: HistogramVec,
    ) -> Providers {
        let webhook_batches = webhook_batch::batches(webhook.clone(), breakers.clone())
            .with_metrics(batch_sizes.with_label_values(&["webhook"]));
        Providers {
            queue,
            email,
            sms,
            webhook,
            breakers,
            limits,
            webhook_batches,
            batch_sizes,
        }
    }

    /// The providers `config` names: the outbox in `pool`'s database unless
    /// SMTP or an HTTP SMS API is configured; `queue` for `arq` steps.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or bad provider setting;
    /// [`Error::Http`] when an HTTP client cannot be built.
    pub fn from_config(
        config: &EngineConfig,
        pool: PgPool,
        queue: queue::Client,
        queue_prefix: &str,
    ) -> Result<Providers, Error> {
        // Before the first TLS client (SMTP, the SMS API's HTTP client).
        crate::tls::install_crypto_provider();
        let missing = |flag: &str| Error::Config(format!("{flag} is required"));
        let sizes = batch_sizes();
        let outbox = Arc::new(Outbox::batched(
            pool.clone(),
            usize::from(config.outbox_batch),
            Some(sizes.with_label_values(&["outbox"])),
        ));
        let email: Arc<dyn EmailProvider> = match config.email_provider {
            EmailProviderKind::Outbox => outbox.clone(),
            EmailProviderKind::Smtp => {
                let url = config
                    .smtp_url
                    .as_deref()
                    .ok_or_else(|| missing("--smtp-url"))?;
                Arc::new(Smtp::new(url, &config.email_from).map_err(Error::Config)?)
            }
        };
        let sms: Arc<dyn SmsProvider> = match config.sms_provider {
            SmsProviderKind::Outbox => outbox,
            SmsProviderKind::Http => {
                let need = |v: &Option<String>, flag: &str| v.clone().ok_or_else(|| missing(flag));
                Arc::new(HttpSms::new(
                    reqwest::Client::builder().timeout(SMS_TIMEOUT).build()?,
                    &need(&config.sms_base_url, "--sms-base-url")?,
                    &need(&config.sms_account_sid, "--sms-account-sid")?,
                    &need(&config.sms_auth_token, "--sms-auth-token")?,
                    &need(&config.sms_from, "--sms-from")?,
                ))
            }
        };
        let breakers = match config.breakers {
            Switch::On => Breakers::new(queue.clone(), queue_prefix, breaker_policy(config)),
            Switch::Off => Breakers::off(queue.clone()),
        };
        let webhook = webhook::Client::new(webhook::Guard::new(config.webhook_allow.clone()))?;
        let limits = Limiter::new(queue.clone(), pool, queue_prefix, config.default_limits());
        Ok(Providers::new(
            queue, email, sms, webhook, breakers, limits, sizes,
        ))
    }
}

/// `flowpilot_provider_batch_size`, not yet registered (the runtime
/// registers the one its providers hold).
pub fn batch_sizes() -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(
            "flowpilot_provider_batch_size",
            "Items per batched provider call by provider (outbox inserts, webhook batches); \
             its count is the calls made",
        )
        .buckets(vec![
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
        ]),
        &["provider"],
    )
    .expect("a valid histogram")
}

/// The breaker thresholds `config` names.
pub fn breaker_policy(config: &EngineConfig) -> BreakerPolicy {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    BreakerPolicy {
        failure_permille: (config.breaker_failure_ratio * 1000.0).round() as u32,
        min_calls: config.breaker_min_calls,
        window_ms: ms(config.breaker_window),
        open_ms: ms(config.breaker_open),
        probes: config.breaker_probes,
        spacing_ms: (1000 / u64::from(config.breaker_ramp.max(1))).max(1),
    }
}

/// The class and text of a failed HTTP call: a timeout, or another
/// transient failure (connection refused, reset, DNS).
pub(crate) fn http_failure(what: &str, e: &reqwest::Error) -> ActionError {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Transient
    };
    ActionError::new(class, format!("{what} {}", without_url(e)))
}

/// A reqwest error's text without the URL, which may carry credentials.
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}
