//! Wires the subsystems for each subcommand: connect, run until the root
//! token is cancelled, drain, close. The only place besides `main` that uses
//! `anyhow`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tracing::info;

use crate::action::{email, sms, webhook};
use crate::config::{
    Cli, Command, DbConfig, EmailProviderKind, EngineConfig, RedisConfig, SmsProviderKind,
    WorkerConfig,
};
use crate::engine::definition::RetryPolicy;
use crate::engine::effects::{EmailProvider, Providers, SmsProvider};
use crate::engine::maintenance::Maintenance;
use crate::engine::{self, Engine};
use crate::queue::Client;
use crate::worker::{self, Registry, Worker};
use crate::{shutdown, store, telemetry};

/// Exit code for usage errors and commands not available yet (as clap's).
const USAGE: u8 = 2;
/// Margin of a lease over the job timeout (as arq's in-progress key).
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Runs the parsed command line.
///
/// # Errors
/// Startup failures (unreachable database or Redis, failed migration) and a
/// subsystem that stops with an error.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { telemetry, command } = cli;
    let _log_filter = telemetry::init(&telemetry)?;
    match command {
        Command::Migrate { db } => {
            let pool = connect_db(&db).await?;
            store::migrate(&pool).await.context("migrating")?;
            let partitions = store::partition::list(&pool).await?;
            info!(?partitions, "database migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            db,
            redis,
            worker,
            engine,
        } => {
            if let Err(msg) = worker.validate().and_then(|()| engine.validate()) {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            serve(pool, &redis, &worker, &engine).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            db,
            redis,
            worker,
            engine,
            seed_demo,
        } => {
            if let Err(msg) = worker.validate().and_then(|()| engine.validate()) {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            store::migrate(&pool).await.context("migrating")?;
            info!("database migrated");
            if seed_demo {
                let client = connect_redis(&redis).await?;
                let e = build_engine(pool.clone(), client, &redis, &worker, &engine)?;
                seed(&e, &redis.redis_url).await?;
            }
            serve(pool, &redis, &worker, &engine).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api => Ok(not_yet("api", "HTTP API v1")),
        Command::Controller => Ok(not_yet("controller", "Kubernetes")),
        Command::Crds => Ok(not_yet("crds", "Kubernetes")),
    }
}

async fn connect_db(db: &DbConfig) -> anyhow::Result<sqlx::PgPool> {
    let DbConfig {
        database_url,
        db_max_connections,
    } = db;
    store::connect(database_url, *db_max_connections)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL)")
}

async fn connect_redis(redis: &RedisConfig) -> anyhow::Result<Client> {
    let RedisConfig {
        redis_url,
        serializer,
        queue_prefix: _,
    } = redis;
    let client = Client::connect(redis_url, *serializer)
        .await
        .context("connecting to Redis (REDIS_URL)")?;
    client.ping().await.context("pinging Redis (REDIS_URL)")?;
    Ok(client)
}

/// The engine with the providers the configuration names.
///
/// # Errors
/// When a provider cannot be set up.
pub fn build_engine(
    pool: sqlx::PgPool,
    queue: Client,
    redis: &RedisConfig,
    worker: &WorkerConfig,
    config: &EngineConfig,
) -> anyhow::Result<Arc<Engine>> {
    let EngineConfig {
        webhook_allow,
        email_provider,
        smtp_url,
        email_from,
        sms_provider,
        sms_base_url,
        sms_account_sid,
        sms_auth_token,
        sms_from,
        retry_max_attempts,
        retry_backoff,
        retry_max_backoff,
        maintenance_interval,
        log_retention_months,
    } = config.clone();
    crate::tls::install_crypto_provider();
    let email = match email_provider {
        EmailProviderKind::Outbox => EmailProvider::Outbox,
        EmailProviderKind::Smtp => {
            let url = smtp_url.context("--smtp-url")?;
            EmailProvider::Smtp(Box::new(
                email::Smtp::new(&url, &email_from).map_err(anyhow::Error::msg)?,
            ))
        }
    };
    let sms = match sms_provider {
        SmsProviderKind::Outbox => SmsProvider::Outbox,
        SmsProviderKind::Http => SmsProvider::Http(sms::HttpSms::new(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            &sms_base_url.context("--sms-base-url")?,
            &sms_account_sid.context("--sms-account-sid")?,
            &sms_auth_token.context("--sms-auth-token")?,
            &sms_from.context("--sms-from")?,
        )),
    };
    let providers = Providers {
        pool: pool.clone(),
        queue: queue.clone(),
        email,
        sms,
        webhook: webhook::Client::new(webhook::Guard::new(webhook_allow))?,
    };
    let settings = engine::Settings {
        lease: worker.job_timeout + LEASE_MARGIN,
        run_budget: worker.job_timeout / 2,
        retry: RetryPolicy {
            max_attempts: retry_max_attempts,
            initial: retry_backoff,
            max: retry_max_backoff,
        },
        maintenance_interval,
        log_retention_months,
        queue_prefix: redis.queue_prefix.clone(),
        ..engine::Settings::default()
    };
    Ok(Arc::new(Engine::new(pool, queue, providers, settings)))
}

/// Runs the worker and the maintenance loop until a signal; a subsystem
/// that stops early stops the other and fails the process.
async fn serve(
    pool: sqlx::PgPool,
    redis: &RedisConfig,
    worker: &WorkerConfig,
    config: &EngineConfig,
) -> anyhow::Result<()> {
    let client = connect_redis(redis).await?;
    let engine = build_engine(pool.clone(), client.clone(), redis, worker, config)?;
    let mut registry = Registry::new();
    worker::diagnostic::register(&mut registry);
    engine.register(&mut registry);
    let token = shutdown::on_signal()?;
    let mut worker_task = tokio::spawn(
        Worker::new(client, registry, worker.settings(&redis.queue_prefix)).run(token.clone()),
    );
    let mut maintenance_task =
        tokio::spawn(Maintenance::new(Arc::clone(&engine)).run(token.clone()));
    let first = tokio::select! {
        r = &mut worker_task => ("worker", r),
        r = &mut maintenance_task => ("maintenance", r),
    };
    if !token.is_cancelled() {
        token.cancel();
    }
    let (other_name, other) = if first.0 == "worker" {
        ("maintenance", maintenance_task.await)
    } else {
        ("worker", worker_task.await)
    };
    pool.close().await;
    for (name, result) in [first, (other_name, other)] {
        result
            .with_context(|| format!("{name} task panicked"))?
            .with_context(|| format!("{name} stopped"))?;
    }
    Ok(())
}

/// The demo: an account, a contact and an active workflow, created once.
async fn seed(engine: &Engine, redis_url: &str) -> anyhow::Result<()> {
    let pool = engine.pool();
    let account = match store::account::find_by_name(pool, "demo").await? {
        Some(a) => a,
        None => store::account::create(pool, "demo").await?,
    };
    let contact = match store::contact::get_by_external_id(pool, account.id, "demo-contact").await?
    {
        Some(c) => c,
        None => {
            store::contact::insert(
                pool,
                account.id,
                &store::contact::NewContact {
                    external_id: Some("demo-contact".into()),
                    email: Some("ada@example.com".into()),
                    phone: Some("+15550100001".into()),
                    timezone: Some("Europe/London".into()),
                    attributes: json!({"first_name": "Ada", "plan": "pro"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    tags: vec!["trial".into()],
                    opted_out: false,
                },
            )
            .await?
        }
    };
    let workflow = match store::workflow::find_by_name(pool, account.id, "demo onboarding").await? {
        Some(w) => w,
        None => {
            let definition = json!({"steps": [
                {"id": "welcome", "type": "send_email", "subject": "Welcome, {{contact.attributes.first_name}}",
                 "body": "Thanks for trying flowpilot."},
                {"id": "pause", "type": "wait", "duration": "5s"},
                {"id": "pro?", "type": "condition",
                 "if": {"field": "contact.attributes.plan", "op": "eq", "value": "pro"}, "else": "done"},
                {"id": "stage", "type": "update_contact", "attributes": {"stage": "onboarded"}},
                {"id": "tag", "type": "add_tag", "tag": "onboarded"},
                {"id": "nudge", "type": "send_sms", "body": "Your trial is set up, {{contact.attributes.first_name}}."},
                {"id": "done", "type": "goal", "name": "onboarded"}
            ]});
            engine
                .create_workflow(
                    account.id,
                    "demo onboarding",
                    Some("seeded by flowpilot dev"),
                    true,
                    &definition,
                )
                .await?
        }
    };
    println!(
        "\nDemo seeded: account {account} ({name}), contact {contact} (ada@example.com), workflow {workflow} (\"demo onboarding\", 7 steps).\n\
         Start an execution from Python arq ({redis_url}):\n\
         \n    await redis.enqueue_job('execute_workflow', '{workflow}', '{contact}')\n\
         \nthen watch it: psql \"$DATABASE_URL\" -c \"SELECT step_index, step_id, action_type, status, duration_ms FROM execution_logs ORDER BY id DESC LIMIT 10\"\n",
        account = account.id,
        name = account.name,
        contact = contact.id,
        workflow = workflow.id,
    );
    Ok(())
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("flowpilot: {msg}");
    ExitCode::from(USAGE)
}

fn not_yet(command: &str, issue: &str) -> ExitCode {
    usage(&format!(
        "`{command}` is not available in this build yet (it arrives with the \"{issue}\" work)"
    ))
}
