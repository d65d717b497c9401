//! Wires the subsystems for each subcommand: connect, run until the root
//! token is cancelled, drain, close. The only place besides `main` that uses
//! `anyhow`.

use std::process::ExitCode;

use anyhow::Context;
use tracing::info;

use crate::config::{Cli, Command, DbConfig, RedisConfig, WorkerConfig};
use crate::queue::Client;
use crate::worker::{self, Registry, Worker};
use crate::{shutdown, store, telemetry};

/// Exit code for usage errors and commands not available yet (as clap's).
const USAGE: u8 = 2;

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
        Command::Worker { redis, worker } => {
            if let Err(msg) = worker.validate() {
                return Ok(usage(&msg));
            }
            run_worker(&redis, &worker).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { db, redis, worker } => {
            if let Err(msg) = worker.validate() {
                return Ok(usage(&msg));
            }
            let pool = connect_db(&db).await?;
            store::migrate(&pool).await.context("migrating")?;
            info!("database migrated");
            run_worker(&redis, &worker).await?;
            pool.close().await;
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

async fn run_worker(redis: &RedisConfig, config: &WorkerConfig) -> anyhow::Result<()> {
    let RedisConfig {
        redis_url,
        serializer,
    } = redis;
    let client = Client::connect(redis_url, *serializer)
        .await
        .context("connecting to Redis (REDIS_URL)")?;
    client.ping().await.context("pinging Redis (REDIS_URL)")?;
    let mut registry = Registry::new();
    worker::diagnostic::register(&mut registry);
    let token = shutdown::on_signal()?;
    Worker::new(client, registry, config.settings())
        .run(token)
        .await
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
