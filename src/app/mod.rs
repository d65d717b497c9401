//! Runs each subcommand: connect, build the [`Runtime`], run until the root
//! token is cancelled, drain, close. With `main`, the only place that uses
//! `anyhow`: it adds what the process was doing to each error.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tracing::info;

use crate::config::{
    AccountCommand, ApiConfig, ApikeyCommand, Cli, Command, ControllerConfig, DbConfig,
    EngineConfig, RedisConfig, WorkerConfig,
};
use crate::runtime::{Runtime, Tasks};

mod bulk;
use crate::{api, auth, controller, demo, shutdown, store, telemetry};

/// Exit code for usage errors (as clap's).
const USAGE: u8 = 2;
/// Longest account name, in characters.
const MAX_ACCOUNT_NAME: usize = 200;

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
            let serve = Serve {
                worker: Some(&worker),
                api: None,
                log_filter,
                demo: None,
            };
            serve.run(connect_db(&db).await?, &redis, &engine).await?;
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
            let serve = Serve {
                worker: Some(&worker),
                api: Some(&api),
                log_filter,
                demo: seed_demo.then_some(demo_api_key.as_deref()),
            };
            serve.run(pool, &redis, &engine).await?;
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
            let serve = Serve {
                worker: None,
                api: Some(&api),
                log_filter,
                demo: None,
            };
            serve.run(connect_db(&db).await?, &redis, &engine).await?;
        }
        Command::Account {
            command: AccountCommand::Create { db, name },
        } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_ACCOUNT_NAME {
                return Ok(usage(&format!(
                    "--name: must be 1 to {MAX_ACCOUNT_NAME} characters"
                )));
            }
            let pool = connect_db(&db).await?;
            let account = store::account::create(&pool, name).await?;
            audit_cli(
                &pool,
                Some(account.id),
                "account create",
                &account.id.to_string(),
            )
            .await;
            println!("{}", json!({"id": account.id, "name": account.name}));
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
            let (key, id) = auth::mint(&pool, account, &name, admin).await?;
            audit_cli(&pool, Some(account), "apikey create", &id.to_string()).await;
            println!(
                "{}",
                json!({"id": id, "account_id": account, "admin": admin, "key": key})
            );
            eprintln!("flowpilot: store the key now; only its hash is kept");
        }
        Command::Apikey {
            command: ApikeyCommand::List { db, account },
        } => {
            let keys = auth::Keys::new(connect_db(&db).await?);
            for k in keys.list(account).await? {
                println!("{}", key_json(&k));
            }
        }
        Command::Apikey {
            command: ApikeyCommand::Revoke { db, id },
        } => {
            let pool = connect_db(&db).await?;
            match auth::Keys::new(pool.clone()).revoke(id).await? {
                Some(k) => {
                    audit_cli(&pool, Some(k.account_id), "apikey revoke", &id.to_string()).await;
                    println!("{}", key_json(&k));
                }
                None => return Ok(usage(&format!("--id: no API key {id}"))),
            }
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
        }
        Command::Executions { command } => return bulk::executions(command).await,
        Command::Enroll(args) => return bulk::enroll(args).await,
        Command::Operations { command } => return bulk::operations(command).await,
        Command::Crds => print!("{}", crate::crd::yaml()?),
    }
    Ok(ExitCode::SUCCESS)
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

/// What `worker`, `api` and `dev` serve.
struct Serve<'a> {
    /// The worker and the maintenance loop, when asked for.
    worker: Option<&'a WorkerConfig>,
    /// The API, when asked for.
    api: Option<&'a ApiConfig>,
    log_filter: telemetry::LogFilter,
    /// `--seed-demo`, with the demo's API key if one is given.
    demo: Option<Option<&'a str>>,
}

impl Serve<'_> {
    /// Runs what is asked for until a signal; one subsystem that stops
    /// early stops the others and fails the process.
    async fn run(
        self,
        pool: sqlx::PgPool,
        redis: &RedisConfig,
        engine: &EngineConfig,
    ) -> anyhow::Result<()> {
        // Ports first: a taken one stops the process before anything starts.
        let listener = match (self.api, self.worker.and_then(|w| w.admin_listen)) {
            (Some(a), _) => Some((true, api::bind("API", a.listen).await?)),
            (None, Some(addr)) => Some((false, api::bind("admin", addr).await?)),
            (None, None) => None,
        };
        let rt = Runtime::from_config(pool, redis, engine, self.worker)
            .await
            .context("connecting to Redis (REDIS_URL) and setting up the engine")?;
        if let Some(key) = self.demo {
            demo::seed(&rt, redis, key).await?;
        }
        let mut tasks = Tasks::new(shutdown::on_signal()?);
        rt.spawn_change_listener(&mut tasks);
        if self.worker.is_some() {
            rt.spawn_worker(&mut tasks)?;
        }
        let state = rt.api_state(Some(self.log_filter));
        match listener {
            Some((true, listener)) => {
                let serve = api::serve(listener, state, tasks.token());
                tasks.spawn("api", async move { Ok(serve.await?) });
            }
            Some((false, listener)) => {
                let serve = api::serve_router(listener, api::admin_router(state), tasks.token());
                tasks.spawn("admin", async move { Ok(serve.await?) });
            }
            None => {}
        }
        let stopped = tasks.wait().await;
        rt.pool.close().await;
        Ok(stopped?)
    }
}

/// The controller: admin endpoints at once, reconcilers only while this
/// replica holds the Lease; losing it stops the process (Kubernetes
/// restarts it as a candidate), and so does the admin server stopping,
/// whether the controller leads or waits.
async fn run_controller(
    pool: sqlx::PgPool,
    redis: &RedisConfig,
    engine: &EngineConfig,
    c: &ControllerConfig,
) -> anyhow::Result<()> {
    let listener = api::bind("admin", c.admin_listen).await?;
    let rt = Runtime::from_config(pool, redis, engine, None)
        .await
        .context("connecting to Redis (REDIS_URL) and setting up the engine")?;
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let token = shutdown::on_signal()?;
    let identity = c
        .identity
        .clone()
        .unwrap_or_else(|| format!("flowpilot-controller-{}", uuid::Uuid::new_v4().simple()));
    let ctx = Arc::new(controller::Context::new(
        kube.clone(),
        Arc::clone(&rt.engine),
        rt.queue.clone(),
        controller::Settings::from_config(c),
        &identity,
        controller::Metrics::register(&rt.registry)?,
    ));
    let admin = api::admin_router(rt.api_state(None));
    let mut admin_task = tokio::spawn(api::serve_router(listener, admin, token.clone()));
    let elector = controller::lease::Elector::new(
        kube,
        &c.lease_namespace,
        &c.lease_name,
        &identity,
        c.lease_duration,
    );
    let lead = elector.lead(
        &token,
        controller::run(ctx, c.watch_namespace.clone(), token.clone()),
    );
    tokio::pin!(lead);
    let (led, admin, admin_first) = tokio::select! {
        led = &mut lead => {
            token.cancel();
            (led, (&mut admin_task).await, false)
        }
        admin = &mut admin_task => {
            let early = !token.is_cancelled();
            token.cancel();
            (lead.await, admin, early)
        }
    };
    rt.pool.close().await;
    led?.transpose()?;
    admin
        .context("admin server panicked")?
        .context("admin server stopped")?;
    if admin_first {
        anyhow::bail!("admin server stopped");
    }
    Ok(())
}

/// Appends a CLI admin command that succeeded to the audit trail; a trail
/// that cannot be written is said on stderr, the command stands.
async fn audit_cli(pool: &sqlx::PgPool, account: Option<uuid::Uuid>, action: &str, target: &str) {
    let entry = store::audit::NewEntry {
        account_id: account,
        key_id: None,
        actor: store::audit::Actor::Cli,
        action,
        target: Some(target),
        result: 0,
    };
    if let Err(e) = store::audit::Audit::new(pool.clone()).append(&entry).await {
        eprintln!("flowpilot: the audit trail was not written: {e}");
    }
}

/// A key as the CLI prints it (never the key itself).
fn key_json(k: &store::api_key::ApiKey) -> serde_json::Value {
    json!({"id": k.id, "account_id": k.account_id, "name": k.name, "prefix": k.prefix,
           "admin": k.is_admin, "created_at": k.created_at, "revoked_at": k.revoked_at})
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("flowpilot: {msg}");
    ExitCode::from(USAGE)
}
