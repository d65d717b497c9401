//! `flowpilot executions retry|cancel`, `flowpilot enroll` and `flowpilot
//! operations get|cancel`: the API's bulk operations from the command line,
//! through the same engine calls, followed with a progress bar until they
//! end. Usage errors exit with code 2, an operation that ends cancelled or
//! failed with code 1.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::{audit_cli, connect_db, usage};
use crate::api::operation::Operation as View;
use crate::config::{BulkArgs, BulkTarget, EnrollArgs, ExecutionsCommand, OperationsCommand};
use crate::engine;
use crate::engine::operation::{Bulk, Contacts, EnrollRequest, MAX_TARGETS};
use crate::runtime::Runtime;
use crate::store::{self, bulk::ContactFilter, bulk::Reenroll, operation::Operation};

/// How often a followed operation is read.
const POLL: Duration = Duration::from_millis(250);
/// Exit code of an operation that ended cancelled or failed.
const NOT_COMPLETED: u8 = 1;

/// The engine of a bulk command, after checking the account.
async fn engine_for(t: &BulkTarget) -> anyhow::Result<Result<(Runtime, Uuid), ExitCode>> {
    if let Err(msg) = t.engine.validate() {
        return Ok(Err(usage(&msg)));
    }
    let pool = connect_db(&t.db).await?;
    if !store::api_key::account_exists(&pool, t.account).await? {
        return Ok(Err(usage(&format!("--account: no account {}", t.account))));
    }
    let rt = Runtime::from_config(pool, &t.redis, &t.engine, None)
        .await
        .context("connecting to Redis (REDIS_URL) and setting up the engine")?;
    Ok(Ok((rt, t.account)))
}

/// An engine refusal as a usage error naming the flag; other errors stay
/// errors.
fn refused(e: engine::Error) -> anyhow::Result<ExitCode> {
    match e {
        engine::Error::Invalid { field, message } => Ok(usage(&format!(
            "--{}: {message}",
            field.trim_start_matches("filter.").replace('_', "-")
        ))),
        e if !e.is_infrastructure() => Ok(usage(&e.to_string())),
        e => Err(e.into()),
    }
}

/// Runs `flowpilot executions ...`.
///
/// # Errors
/// Unreachable database or Redis.
pub async fn executions(command: ExecutionsCommand) -> anyhow::Result<ExitCode> {
    let (
        kind,
        BulkArgs {
            target,
            filter,
            dry_run,
            follow,
        },
    ) = match command {
        ExecutionsCommand::Retry(args) => (Bulk::Retry, args),
        ExecutionsCommand::Cancel(args) => (Bulk::Cancel, args),
    };
    let (rt, account) = match engine_for(&target).await? {
        Ok(e) => e,
        Err(code) => return Ok(code),
    };
    let store_filter = store::execution::Filter {
        workflow_id: filter.workflow,
        workflow_version: filter.workflow_version,
        statuses: filter.status.clone(),
        error_class: filter.error_class,
        fingerprint: filter.fingerprint.clone(),
        current_step: filter.step.clone(),
        created_after: filter.created_after,
        created_before: filter.created_before,
        finished_after: filter.failed_after,
        finished_before: filter.failed_before,
        ..store::execution::Filter::default()
    };
    if dry_run {
        let preview = match rt.engine.bulk_preview(account, kind, store_filter).await {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let sample: Vec<Json> = preview
            .sample
            .iter()
            .map(|e| {
                json!({"id": e.id, "status": e.status.as_str(), "step": e.current_step_id,
                            "error_class": e.error_class.map(|c| c.as_str()), "error": e.error})
            })
            .collect();
        println!(
            "{}",
            json!({"dry_run": true, "count": preview.count, "sample": sample})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let op = match rt
        .engine
        .bulk_start(account, kind, store_filter, None)
        .await
    {
        Ok(op) => op,
        Err(e) => return refused(e),
    };
    let action = format!("executions {}", kind.as_str());
    audit_cli(&rt.pool, Some(account), &action, &op.id.to_string()).await;
    finish(&rt, op, follow.no_wait).await
}

/// Runs `flowpilot enroll`.
///
/// # Errors
/// Unreachable database or Redis; an unreadable contacts file.
pub async fn enroll(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let policy: Reenroll = match args.policy.parse() {
        Ok(p) => p,
        Err(m) => return Ok(usage(&format!("--policy: {m}"))),
    };
    let contacts = if let Some(path) = &args.contacts_file {
        match read_ids(path)? {
            Ok(ids) => Contacts::Ids(ids),
            Err(msg) => return Ok(usage(&format!("--contacts-file: {msg}"))),
        }
    } else {
        let mut attributes = Map::new();
        for a in &args.attribute {
            let Some((k, v)) = a.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Ok(usage(&format!("--attribute: `{a}` is not KEY=VALUE")));
            };
            let value = serde_json::from_str(v).unwrap_or_else(|_| Json::String(v.to_owned()));
            attributes.insert(k.to_owned(), value);
        }
        if args.tag.is_empty() && attributes.is_empty() {
            return Ok(usage(
                "give --contacts-file, or --tag / --attribute to pick contacts",
            ));
        }
        Contacts::Filter(ContactFilter {
            tags: args.tag.clone(),
            attributes: (!attributes.is_empty()).then_some(Json::Object(attributes)),
        })
    };
    let (rt, account) = match engine_for(&args.target).await? {
        Ok(e) => e,
        Err(code) => return Ok(code),
    };
    let op = match rt
        .engine
        .enroll(EnrollRequest {
            account_id: account,
            workflow_id: args.workflow,
            contacts,
            policy,
            priority: args.priority,
            metadata: json!({}),
            created_by: None,
        })
        .await
    {
        Ok(op) => op,
        Err(e) => return refused(e),
    };
    audit_cli(&rt.pool, Some(account), "enroll", &op.id.to_string()).await;
    finish(&rt, op, args.follow.no_wait).await
}

/// Runs `flowpilot operations ...`.
///
/// # Errors
/// Unreachable database or Redis.
pub async fn operations(command: OperationsCommand) -> anyhow::Result<ExitCode> {
    match command {
        OperationsCommand::Get { target, id, follow } => {
            let (rt, account) = match engine_for(&target).await? {
                Ok(e) => e,
                Err(code) => return Ok(code),
            };
            match store::operation::get(&rt.pool, account, id).await? {
                Some(op) => finish(&rt, op, !follow).await,
                None => Ok(usage(&format!("--id: no operation {id} in the account"))),
            }
        }
        OperationsCommand::Cancel { target, id } => {
            let (rt, account) = match engine_for(&target).await? {
                Ok(e) => e,
                Err(code) => return Ok(code),
            };
            match rt.engine.cancel_operation(account, id).await {
                Ok(op) => {
                    audit_cli(
                        &rt.pool,
                        Some(account),
                        "operations cancel",
                        &id.to_string(),
                    )
                    .await;
                    print(op);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ engine::Error::OperationNotFound) => Ok(usage(&format!("--id: {e}"))),
                Err(e) => refused(e),
            }
        }
    }
}

/// Prints `op` at once (`no_wait`), or follows it with a progress bar on
/// stderr until it ends and prints it then.
async fn finish(rt: &Runtime, op: Operation, no_wait: bool) -> anyhow::Result<ExitCode> {
    if no_wait {
        print(op);
        return Ok(ExitCode::SUCCESS);
    }
    let op = follow(&rt.pool, op).await?;
    let completed = op.state == "completed";
    print(op);
    Ok(if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_COMPLETED)
    })
}

/// Reads `op` every [`POLL`] until it ends, drawing its progress.
async fn follow(pool: &sqlx::PgPool, mut op: Operation) -> anyhow::Result<Operation> {
    let bar = ProgressBar::new(u64::try_from(op.total).unwrap_or_default());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:>9} [{bar:40}] {human_pos}/{human_len} ({rate}, {eta} left) {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", s.per_sec());
        })
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} {}", op.kind, op.state));
    loop {
        let seen = op.done + op.skipped + op.failed;
        bar.set_length(u64::try_from(op.total.max(seen)).unwrap_or_default());
        bar.set_position(u64::try_from(seen).unwrap_or_default());
        bar.set_prefix(format!(
            "done {} skipped {} failed {}",
            op.done, op.skipped, op.failed
        ));
        bar.set_message(op.state.clone());
        if op.is_finished() {
            break;
        }
        tokio::time::sleep(POLL).await;
        op = store::operation::get(pool, op.account_id, op.id)
            .await?
            .context("the operation disappeared")?;
    }
    bar.finish();
    if !bar.is_hidden() {
        // The operation's JSON goes to stdout: start it on a line of its own.
        eprintln!();
    }
    Ok(op)
}

fn print(op: Operation) {
    let view = View::from(op);
    println!("{}", serde_json::to_string(&view).unwrap_or_default());
}

/// Contact ids, one a line (blank lines and `#` comments skipped), from a
/// file or stdin (`-`); a message naming the line when one is not a UUID.
fn read_ids(path: &std::path::Path) -> anyhow::Result<Result<Vec<Uuid>, String>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Uuid::parse_str(line) {
            Ok(id) => ids.push(id),
            Err(_) => return Ok(Err(format!("line {}: `{line}` is not a UUID", n + 1))),
        }
    }
    if ids.is_empty() || ids.len() > MAX_TARGETS {
        return Ok(Err(format!("must hold 1 to {MAX_TARGETS} contact ids")));
    }
    Ok(Ok(ids))
}
