//! The engine's settings as configured: providers, webhook safety,
//! retries, maintenance. `engine::Settings::from_config` and
//! `provider::Providers::from_config` read them.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::positive_duration;
use crate::domain::{Limits, Rate, RetryOverride};

/// Email delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmailProviderKind {
    /// Record messages in the `outbox` table.
    Outbox,
    /// Send over SMTP (`--smtp-url`).
    Smtp,
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// SMS delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmsProviderKind {
    /// Record messages in the `outbox` table.
    Outbox,
    /// POST to a Twilio-style HTTP API (`--sms-base-url`).
    Http,
}

/// The engine: providers, safety, retries, maintenance.
#[derive(Debug, Clone, Args)]
pub struct EngineConfig {
    /// Internal addresses webhooks may call anyway, comma-separated IPs,
    /// CIDR networks or host names (e.g. `10.1.0.0/16,hooks.internal`).
    /// Default none: loopback, private, link-local and metadata addresses
    /// are refused.
    #[arg(long, env = "FLOWPILOT_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<Allowed>,
    /// Email provider. Default `outbox`: messages land in the `outbox`
    /// table for your relay, so nothing is sent by accident.
    #[arg(long, env = "FLOWPILOT_EMAIL_PROVIDER", value_enum, default_value_t = EmailProviderKind::Outbox)]
    pub email_provider: EmailProviderKind,
    /// SMTP server for `--email-provider smtp`:
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://...`
    /// (TLS), or `smtp://host:25` (plain, for a local relay).
    #[arg(long, env = "FLOWPILOT_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Default sender of emails. Default `flowpilot@localhost`.
    #[arg(
        long,
        env = "FLOWPILOT_EMAIL_FROM",
        default_value = "flowpilot@localhost"
    )]
    pub email_from: String,
    /// Most messages the outbox provider records in one insert: messages
    /// sent while an insert is in flight go together in the next (no
    /// added wait). 1 records each alone. Default 100.
    #[arg(long, env = "FLOWPILOT_OUTBOX_BATCH", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub outbox_batch: u16,
    /// SMS provider. Default `outbox`.
    #[arg(long, env = "FLOWPILOT_SMS_PROVIDER", value_enum, default_value_t = SmsProviderKind::Outbox)]
    pub sms_provider: SmsProviderKind,
    /// Base URL of the HTTP SMS API, e.g. `https://api.twilio.com`.
    #[arg(long, env = "FLOWPILOT_SMS_BASE_URL")]
    pub sms_base_url: Option<String>,
    /// Account SID (basic-auth user) of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_ACCOUNT_SID")]
    pub sms_account_sid: Option<String>,
    /// Auth token (basic-auth password) of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_AUTH_TOKEN", hide_env_values = true)]
    pub sms_auth_token: Option<String>,
    /// Sender number of the HTTP SMS API.
    #[arg(long, env = "FLOWPILOT_SMS_FROM")]
    pub sms_from: Option<String>,
    /// Attempts of a step with transient errors, the first included. Default 5.
    #[arg(long, env = "FLOWPILOT_RETRY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=50))]
    pub retry_max_attempts: i32,
    /// Backoff before the first retry (doubling, with jitter). Default 10s.
    #[arg(long, env = "FLOWPILOT_RETRY_BACKOFF", default_value = "10s", value_parser = positive_duration)]
    pub retry_backoff: Duration,
    /// Longest backoff between retries. Default 1h.
    #[arg(long, env = "FLOWPILOT_RETRY_MAX_BACKOFF", default_value = "1h", value_parser = positive_duration)]
    pub retry_max_backoff: Duration,
    /// Retry policy of `send_email` steps, field by field over the built-in
    /// one (`max_attempts=6,backoff=30s,max_backoff=30m,max_elapsed=24h`),
    /// e.g. `max_attempts=3,max_elapsed=2h`. A step's own `retry` wins.
    #[arg(long, env = "FLOWPILOT_RETRY_EMAIL")]
    pub retry_email: Option<RetryOverride>,
    /// Retry policy of `send_sms` steps, over the built-in one
    /// (`max_attempts=6,backoff=30s,max_backoff=30m,max_elapsed=24h`).
    #[arg(long, env = "FLOWPILOT_RETRY_SMS")]
    pub retry_sms: Option<RetryOverride>,
    /// Retry policy of `webhook` steps, over the built-in one
    /// (`max_attempts=8,backoff=10s,max_backoff=1h,max_elapsed=24h`).
    #[arg(long, env = "FLOWPILOT_RETRY_WEBHOOK")]
    pub retry_webhook: Option<RetryOverride>,
    /// Retry policy of `arq` steps, over the built-in one
    /// (`max_attempts=3,backoff=30s,max_backoff=10m,max_elapsed=6h`).
    #[arg(long, env = "FLOWPILOT_RETRY_ARQ")]
    pub retry_arq: Option<RetryOverride>,
    /// How often the maintenance loop looks for due and lost executions.
    /// Default 1s.
    #[arg(long, env = "FLOWPILOT_MAINTENANCE_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub maintenance_interval: Duration,
    /// QUEUED executions untouched this long are checked against Redis:
    /// one whose job is gone (lost with Redis, or ended without running)
    /// gets a fresh job. Default 30s, well past the moment between a row's
    /// insert and its first enqueue.
    #[arg(long, env = "FLOWPILOT_STALE_QUEUED_AFTER", default_value = "30s", value_parser = positive_duration)]
    pub stale_queued_after: Duration,
    /// Waits and retry backoffs due within this long hold a deferred job in
    /// Redis; later ones stay in PostgreSQL only, and the timer pump (in
    /// the maintenance loop) enqueues them as they come within it. Default
    /// 60s.
    #[arg(long, env = "FLOWPILOT_TIMER_HORIZON", default_value = "60s", value_parser = positive_duration)]
    pub timer_horizon: Duration,
    /// Circuit breakers per provider (webhook host, SMTP server, SMS
    /// account), shared by every worker through Redis. Default `on`.
    #[arg(long, env = "FLOWPILOT_BREAKERS", value_enum, default_value_t = Switch::On)]
    pub breakers: Switch,
    /// A breaker opens when this share of a provider's calls in the window
    /// fail (timeouts, connection errors, 5xx). Default 0.5.
    #[arg(long, env = "FLOWPILOT_BREAKER_FAILURE_RATIO", default_value_t = 0.5, value_parser = ratio)]
    pub breaker_failure_ratio: f64,
    /// ...once the window holds at least this many calls. Default 20.
    #[arg(long, env = "FLOWPILOT_BREAKER_MIN_CALLS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_min_calls: u32,
    /// The window the failure ratio is counted over. Default 30s.
    #[arg(long, env = "FLOWPILOT_BREAKER_WINDOW", default_value = "30s", value_parser = positive_duration)]
    pub breaker_window: Duration,
    /// How long an open breaker keeps calls back before it lets probes
    /// through. Default 30s.
    #[arg(long, env = "FLOWPILOT_BREAKER_OPEN", default_value = "30s", value_parser = positive_duration)]
    pub breaker_open: Duration,
    /// Calls let through at once while half-open. Default 3.
    #[arg(long, env = "FLOWPILOT_BREAKER_PROBES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub breaker_probes: u32,
    /// Calls per second at which work held by an open breaker comes back
    /// once it closes. Default 20.
    #[arg(long, env = "FLOWPILOT_BREAKER_RAMP", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub breaker_ramp: u32,
    /// Drop execution log partitions older than this many months; 0 keeps
    /// them forever. Default 0.
    #[arg(long, env = "FLOWPILOT_LOG_RETENTION_MONTHS", default_value_t = 0)]
    pub log_retention_months: u32,
    /// Executions an enrollment starts per second and account, however
    /// many contacts it enrolls at once. Default 100.
    #[arg(long, env = "FLOWPILOT_ENROLL_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub enroll_rate: u32,
    /// How long a worker holds a bulk operation between two batches before
    /// another may take it over (its worker died). Default 30s.
    #[arg(long, env = "FLOWPILOT_OPERATION_LEASE", default_value = "30s", value_parser = positive_duration)]
    pub operation_lease: Duration,
    /// How often alert rules are evaluated (one process evaluates).
    /// Default 5s.
    #[arg(long, env = "FLOWPILOT_ALERT_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub alert_interval: Duration,
    /// How often each worker process looks for alert deliveries due.
    /// Default 1s.
    #[arg(long, env = "FLOWPILOT_ALERT_DISPATCH_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub alert_dispatch_interval: Duration,
    /// Each account's fair share of execution starts: past it (sustained
    /// rate, burst), its new executions run at low priority, behind other
    /// accounts' but still at once when workers are free; `off` to start
    /// every execution at the priority asked. Default `50/s:500`.
    #[arg(long, env = "FLOWPILOT_FAIR_SHARE", default_value = "50/s:500")]
    pub fair_share: FairShare,
    /// Group commit: checkpoints of concurrent executions share
    /// transactions, this many at once (0, the default: each commits
    /// alone). Fewer commits for PostgreSQL; worth it where a commit's
    /// WAL flush is slow (network storage).
    #[arg(long, env = "FLOWPILOT_COMMIT_LANES", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=32))]
    pub commit_lanes: u8,
    /// Default rate limit of every outbound call (email, SMS, webhook) of
    /// each account: `RATE/s`, `RATE/m` or `RATE/h`, optionally `:BURST`
    /// (`100/s:200`). An account's own limits (`PUT /api/v1/limits`) take
    /// precedence. Default none.
    #[arg(long, env = "FLOWPILOT_LIMIT_ACCOUNT")]
    pub limit_account: Option<Rate>,
    /// Default rate limit of each account's emails. Default none.
    #[arg(long, env = "FLOWPILOT_LIMIT_EMAIL")]
    pub limit_email: Option<Rate>,
    /// Default rate limit of each account's SMS. Default none.
    #[arg(long, env = "FLOWPILOT_LIMIT_SMS")]
    pub limit_sms: Option<Rate>,
    /// Default rate limit of each account's webhook calls, per host.
    /// Default none.
    #[arg(long, env = "FLOWPILOT_LIMIT_WEBHOOK")]
    pub limit_webhook: Option<Rate>,
    /// Default cap of each account's executions running at once (1 to
    /// 1,000,000). Default none.
    #[arg(long, env = "FLOWPILOT_LIMIT_RUNNING",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::domain::limit::MAX_RUNNING)))]
    pub limit_running: Option<u32>,
}

/// A rate, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FairShare(pub Option<Rate>);

impl std::str::FromStr for FairShare {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "off" {
            return Ok(FairShare(None));
        }
        s.parse().map(|r| FairShare(Some(r)))
    }
}

impl EngineConfig {
    /// The default rate limits every account's own fall back to.
    pub fn default_limits(&self) -> Limits {
        Limits {
            account: self.limit_account,
            email: self.limit_email,
            sms: self.limit_sms,
            webhook: self.limit_webhook,
            webhook_hosts: Default::default(),
            running: self.limit_running,
        }
    }

    /// Cross-field checks.
    ///
    /// # Errors
    /// A message naming the missing flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.email_provider == EmailProviderKind::Smtp && self.smtp_url.is_none() {
            return Err("--email-provider smtp needs --smtp-url".into());
        }
        if self.sms_provider == SmsProviderKind::Http {
            for (flag, v) in [
                ("--sms-base-url", &self.sms_base_url),
                ("--sms-account-sid", &self.sms_account_sid),
                ("--sms-auth-token", &self.sms_auth_token),
                ("--sms-from", &self.sms_from),
            ] {
                if v.is_none() {
                    return Err(format!("--sms-provider http needs {flag}"));
                }
            }
        }
        if self.retry_max_backoff < self.retry_backoff {
            return Err("--retry-max-backoff must not be below --retry-backoff".into());
        }
        Ok(())
    }
}

/// An allow-list entry: a network or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Addresses in this network.
    Net(IpNet),
    /// This host name, whatever it resolves to.
    Host(String),
}

impl std::str::FromStr for Allowed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allowed::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Allowed::Net(IpNet::from(ip)));
        }
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Ok(Allowed::Host(s.to_ascii_lowercase()));
        }
        Err(format!(
            "`{s}` is neither an IP address, a CIDR network nor a host name"
        ))
    }
}

/// A share between 0 (exclusive) and 1 (inclusive).
fn ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if r > 0.0 && r <= 1.0 {
        Ok(r)
    } else {
        Err("must be above 0 and at most 1".into())
    }
}
