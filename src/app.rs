//! Wires the subsystems for each subcommand: connect, run until the root
//! token is cancelled, drain, close. The only place besides `main` that uses
//! `anyhow`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tracing::info;

use crate::action::email::EmailProvider;
use crate::action::sms::SmsProvider;
use crate::action::{email, sms, webhook};
use crate::config::{
    AccountCommand, ApiConfig, ApikeyCommand, Cli, Command, DbConfig, EmailProviderKind,
    EngineConfig, RedisConfig, SmsProviderKind, WorkerConfig,
};
use crate::engine::definition::RetryPolicy;
use crate::engine::effects::{Outbox, Providers};
use crate::engine::maintenance::Maintenance;
use crate::engine::{self, Engine};
use crate::metrics::{ApiMetrics, EngineMetrics, WorkerMetrics};
use crate::queue::Client;
use crate::worker::{self, Registry, Worker};
use crate::{api, controller, shutdown, store, telemetry};
use tokio::task::JoinSet;

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
    let log_filter = telemetry::init(&telemetry)?;
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
            serve(pool, &redis, Some(&worker), &engine, None, log_filter, None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            db,
            redis,
            worker,
            engine,
            api,
            seed_demo,
            demo_api_key,
        } => {
            if let Err(msg) = worker.validate().and_then(|()| engine.validate()) {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            store::migrate(&pool).await.context("migrating")?;
            info!("database migrated");
            let demo = seed_demo.then_some(Demo {
                api_key: demo_api_key.as_deref(),
            });
            serve(
                pool,
                &redis,
                Some(&worker),
                &engine,
                Some(&api),
                log_filter,
                demo,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api {
            db,
            redis,
            api,
            engine,
        } => {
            if let Err(msg) = engine.validate() {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            serve(pool, &redis, None, &engine, Some(&api), log_filter, None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Account {
            command: AccountCommand::Create { db, name },
        } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                return Ok(usage("--name: must be 1 to 200 characters"));
            }
            let pool = connect_db(&db).await?;
            let account = store::account::create(&pool, name).await?;
            println!("{}", json!({"id": account.id, "name": account.name}));
            Ok(ExitCode::SUCCESS)
        }
        Command::Apikey {
            command:
                ApikeyCommand::Create {
                    db,
                    account,
                    name,
                    admin,
                },
        } => {
            let pool = connect_db(&db).await?;
            if !store::api_key::account_exists(&pool, account).await? {
                return Ok(usage(&format!("--account: no account {account}")));
            }
            let (key, id) = create_api_key(&pool, account, &name, admin).await?;
            println!(
                "{}",
                json!({"id": id, "account_id": account, "admin": admin, "key": key})
            );
            eprintln!("flowpilot: store the key now; only its hash is kept");
            Ok(ExitCode::SUCCESS)
        }
        Command::Controller {
            db,
            redis,
            engine,
            controller,
        } => {
            if let Err(msg) = engine.validate() {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            run_controller(pool, &redis, &engine, &controller).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            print!("{}", crate::crd::yaml()?);
            Ok(ExitCode::SUCCESS)
        }
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
    job_timeout: Duration,
    config: &EngineConfig,
    registry: Option<&prometheus::Registry>,
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
        stale_queued_after,
        log_retention_months,
    } = config.clone();
    crate::tls::install_crypto_provider();
    let outbox = Arc::new(Outbox::new(pool.clone()));
    let email: Arc<dyn EmailProvider> = match email_provider {
        EmailProviderKind::Outbox => outbox.clone(),
        EmailProviderKind::Smtp => {
            let url = smtp_url.context("--smtp-url")?;
            Arc::new(email::Smtp::new(&url, &email_from).map_err(anyhow::Error::msg)?)
        }
    };
    let sms: Arc<dyn SmsProvider> = match sms_provider {
        SmsProviderKind::Outbox => outbox,
        SmsProviderKind::Http => Arc::new(sms::HttpSms::new(
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
        queue: queue.clone(),
        email,
        sms,
        webhook: webhook::Client::new(webhook::Guard::new(webhook_allow))?,
    };
    let settings = engine::Settings {
        lease: job_timeout + LEASE_MARGIN,
        run_budget: job_timeout / 2,
        retry: RetryPolicy {
            max_attempts: retry_max_attempts,
            initial: retry_backoff,
            max: retry_max_backoff,
        },
        maintenance_interval,
        stale_queued_after,
        log_retention_months,
        queue_prefix: redis.queue_prefix.clone(),
        ..engine::Settings::default()
    };
    let mut engine = Engine::new(pool, queue, providers, settings);
    if let Some(r) = registry {
        engine = engine.with_metrics(EngineMetrics::register(r)?);
    }
    Ok(Arc::new(engine))
}

/// `flowpilot dev --seed-demo`: seed the demo before serving.
struct Demo<'a> {
    /// An API key to register for the demo account.
    api_key: Option<&'a str>,
}

/// Runs the subsystems asked for (the worker with the maintenance loop,
/// the API) until a signal; one that stops early stops the others and fails
/// the process.
async fn serve(
    pool: sqlx::PgPool,
    redis: &RedisConfig,
    worker: Option<&WorkerConfig>,
    config: &EngineConfig,
    api: Option<&ApiConfig>,
    log_filter: telemetry::LogFilter,
    demo: Option<Demo<'_>>,
) -> anyhow::Result<()> {
    // Ports first: a taken one stops the process before anything starts.
    let listener = match (api, worker.and_then(|w| w.admin_listen)) {
        (Some(a), _) => Some((true, api::bind("API", a.listen).await?)),
        (None, Some(addr)) => Some((false, api::bind("admin", addr).await?)),
        (None, None) => None,
    };
    let client = connect_redis(redis).await?;
    // Leases follow the worker's job timeout; without a worker (the API
    // alone), the default one.
    let job_timeout = worker.map_or(crate::worker::Settings::default().job_timeout, |w| {
        w.job_timeout
    });
    let registry = prometheus::Registry::new();
    let engine = build_engine(
        pool.clone(),
        client.clone(),
        redis,
        job_timeout,
        config,
        Some(&registry),
    )?;
    if let Some(d) = demo {
        seed(&engine, redis, d.api_key).await?;
    }
    let token = shutdown::on_signal()?;
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    if let Some(w) = worker {
        let mut functions = Registry::new();
        worker::diagnostic::register(&mut functions);
        engine.register(&mut functions);
        let metrics = Arc::new(WorkerMetrics::register(&registry)?);
        let run = Worker::new(client.clone(), functions, w.settings(&redis.queue_prefix))
            .with_metrics(metrics)
            .run(token.clone());
        tasks.spawn(async move { ("worker", run.await) });
        let run = Maintenance::new(Arc::clone(&engine)).run(token.clone());
        tasks.spawn(async move { ("maintenance", run.await) });
    }
    let state = api::AppState {
        engine: Arc::clone(&engine),
        queue: client.clone(),
        metrics: Arc::new(ApiMetrics::register(&registry)?),
        registry,
        log_filter: Some(log_filter),
    };
    match listener {
        Some((true, listener)) => {
            let run = api::serve(listener, state, token.clone());
            tasks.spawn(async move { ("api", run.await) });
        }
        Some((false, listener)) => {
            let run = api::serve_router(listener, api::admin_router(state), token.clone());
            tasks.spawn(async move { ("admin", run.await) });
        }
        None => {}
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        // The first subsystem to stop stops the others.
        token.cancel();
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => failure = failure.or(Some(e.context(format!("{name} stopped")))),
            Err(e) => failure = failure.or(Some(anyhow::anyhow!("a subsystem panicked: {e}"))),
        }
    }
    pool.close().await;
    failure.map_or(Ok(()), Err)
}

/// The controller: admin endpoints at once, reconcilers only while this
/// replica holds the Lease; losing it stops the process (Kubernetes
/// restarts it as a candidate), and so does the admin server stopping,
/// whether the controller leads or waits.
async fn run_controller(
    pool: sqlx::PgPool,
    redis: &RedisConfig,
    config: &EngineConfig,
    c: &crate::config::ControllerConfig,
) -> anyhow::Result<()> {
    let listener = api::bind("admin", c.admin_listen).await?;
    let client = connect_redis(redis).await?;
    let engine = build_engine(
        pool.clone(),
        client.clone(),
        redis,
        crate::worker::Settings::default().job_timeout,
        config,
        None,
    )?;
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let token = shutdown::on_signal()?;
    let registry = prometheus::Registry::new();
    let ctx = Arc::new(controller::Context {
        client: kube.clone(),
        engine: Arc::clone(&engine),
        queue: client.clone(),
        reporter: kube::runtime::events::Reporter {
            controller: controller::FIELD_MANAGER.into(),
            instance: c.identity.clone(),
        },
        settings: controller::Settings {
            worker_image: c.worker_image.clone(),
            status_interval: c.status_interval,
            scale_interval: c.scale_interval,
        },
        metrics: controller::Metrics::register(&registry)?,
    });
    let admin = api::admin_router(api::AppState {
        engine,
        queue: client,
        metrics: Arc::new(ApiMetrics::register(&registry)?),
        registry,
        log_filter: None,
    });
    let mut admin_task = tokio::spawn(api::serve_router(listener, admin, token.clone()));
    let admin_stopped = |r: std::result::Result<anyhow::Result<()>, tokio::task::JoinError>| {
        r.context("admin server panicked")
            .and_then(|r| r.context("admin server stopped"))
            .and_then(|()| anyhow::bail!("admin server stopped"))
    };

    let identity = c
        .identity
        .clone()
        .unwrap_or_else(|| format!("flowpilot-controller-{}", uuid::Uuid::new_v4().simple()));
    let elector = controller::lease::Elector::new(
        kube,
        &c.lease_namespace,
        &c.lease_name,
        &identity,
        c.lease_duration,
    );
    let renew = c.lease_duration / 3;
    // Wait to lead.
    loop {
        if elector.try_lead().await.unwrap_or(false) {
            break;
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            r = &mut admin_task => {
                token.cancel();
                return admin_stopped(r);
            }
            () = tokio::time::sleep(renew) => {}
        }
    }
    let mut reconcilers = tokio::spawn(controller::run(
        ctx,
        c.watch_namespace.clone(),
        token.clone(),
    ));
    let mut lost = None;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            r = &mut reconcilers => {
                token.cancel();
                r.context("controller panicked")??;
                break;
            }
            r = &mut admin_task => {
                token.cancel();
                if !reconcilers.is_finished() {
                    reconcilers.await.context("controller panicked")??;
                }
                return admin_stopped(r);
            }
            () = tokio::time::sleep(renew) => match elector.try_lead().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => { lost = Some(anyhow::anyhow!("lost the leader Lease")); token.cancel(); }
                // Unrenewed for a whole lease, another replica may lead: step down.
                Err(e) if renewed.elapsed() >= c.lease_duration => {
                    lost = Some(anyhow::anyhow!("could not renew the leader Lease: {e}"));
                    token.cancel();
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            },
        }
    }
    if !reconcilers.is_finished() {
        reconcilers.await.context("controller panicked")??;
    }
    admin_task.await.context("admin server panicked")??;
    pool.close().await;
    lost.map_or(Ok(()), Err)
}

/// Creates a key for `account`: `fp_` and 64 hex digits (256 random bits);
/// returns the key and its id.
///
/// # Errors
/// No randomness, database errors.
pub async fn create_api_key(
    pool: &sqlx::PgPool,
    account: uuid::Uuid,
    name: &str,
    admin: bool,
) -> anyhow::Result<(String, uuid::Uuid)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = format!("fp_{}", hex::encode(secret));
    let id = store::api_key::insert(
        pool,
        account,
        name,
        &key[..11],
        &api::extract::hash_key(&key),
        admin,
    )
    .await?;
    Ok((key, id))
}

/// The demo: an account, a contact and an active workflow, created once,
/// and `api_key` registered for the account if its hash is new.
async fn seed(engine: &Engine, redis: &RedisConfig, api_key: Option<&str>) -> anyhow::Result<()> {
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
    if let Some(key) = api_key {
        let hash = api::extract::hash_key(key);
        if store::api_key::find(pool, &hash).await?.is_none() {
            store::api_key::insert(
                pool,
                account.id,
                "demo",
                &key[..key.len().min(11)],
                &hash,
                false,
            )
            .await?;
        }
    }
    println!(
        "\nDemo seeded: account {account} ({name}), contact {contact} (ada@example.com), workflow {workflow} (\"demo onboarding\", 7 steps).\n\
         Start an execution from Python arq ({redis_url}), on flowpilot's normal queue:\n\
         \n    await redis.enqueue_job('execute_workflow', '{workflow}', '{contact}', _queue_name='{queue}')\n\
         \nthen watch it: psql \"$DATABASE_URL\" -c \"SELECT step_index, step_id, action_type, status, duration_ms FROM execution_logs ORDER BY id DESC LIMIT 10\"\n",
        account = account.id,
        name = account.name,
        contact = contact.id,
        workflow = workflow.id,
        redis_url = redis.redis_url,
        queue = redis.queue_prefix,
    );
    Ok(())
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("flowpilot: {msg}");
    ExitCode::from(USAGE)
}
