//! Checkpoints ([`commit`]): the execution row, in one statement with the
//! log rows of the steps it commits and their net contact change, written
//! together or not at all (the row alone when there is nothing else). One statement is one
//! round trip and, outside a transaction, its own transaction: a step that
//! calls a provider costs PostgreSQL one commit, not BEGIN, a statement per
//! row and COMMIT.
//!
//! The row is written optimistically: `WHERE revision = <the revision
//! read>`, bumping it, so a decision taken on a stale read (a cancel racing
//! a checkpoint, a second worker handed the same job) fails instead of
//! overwriting. The log rows and the contact change are written only when
//! the row was (they read the `saved` CTE): a checkpoint that lost a race
//! writes nothing.

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json as SqlJson;
use sqlx::{Execute, PgConnection};

use super::execution::Execution;
use super::group::{Group, Row};
use super::log::NewLog;
use super::{Result, column};
use crate::domain::ErrorClass;
use crate::domain::contact::NetChange;

/// The assignments of every mutable column of an execution, `$3`..`$21`
/// as [`bind_state`] binds them (`$1` the id, `$2` the revision read).
macro_rules! save_set {
    () => {
        "status = $3, current_step_index = $4, current_step_id = $5, attempt = $6, context = $7, \
         waiting_reason = $8, resume_at = $9, next_attempt_at = $10, lease_owner = $11, lease_expires_at = $12, \
         error = $13, started_at = $14, completed_at = $15, step_state = $16, wake_seq = $17, \
         first_attempt = $18, error_class = $19, fingerprint = $20, step_started_at = $21, \
         revision = revision + 1, updated_at = now()"
    };
}

/// Binds `$1`..`$21` of a statement that writes `e` with [`save_set`].
fn bind_state<'q, O>(
    q: QueryAs<'q, sqlx::Postgres, O, PgArguments>,
    e: &'q Execution,
) -> QueryAs<'q, sqlx::Postgres, O, PgArguments> {
    q.bind(e.id)
        .bind(e.revision)
        .bind(e.status.as_str())
        .bind(e.current_step_index)
        .bind(&e.current_step_id)
        .bind(e.attempt)
        .bind(&e.context)
        .bind(&e.waiting_reason)
        .bind(e.resume_at)
        .bind(e.next_attempt_at)
        .bind(&e.lease_owner)
        .bind(e.lease_expires_at)
        .bind(&e.error)
        .bind(e.started_at)
        .bind(e.completed_at)
        .bind(&e.step_state)
        .bind(e.wake_seq)
        .bind(e.first_attempt)
        .bind(e.error_class.map(ErrorClass::as_str))
        .bind(&e.fingerprint)
        .bind(e.step_started_at)
}

/// Takes the revision and time a save wrote into `e`; `false` when it
/// wrote nothing (the row changed underneath).
fn saved(e: &mut Execution, row: Option<Row>) -> bool {
    let Some((revision, updated_at)) = row else {
        return false;
    };
    e.revision = revision;
    e.updated_at = updated_at;
    true
}

/// The row alone.
const SAVE: &str = concat!(
    "UPDATE workflow_executions SET ",
    save_set!(),
    " WHERE id = $1 AND revision = $2 RETURNING revision, updated_at"
);

/// `$1`..`$21` the row ([`bind_state`]), `$22`..`$38` and `$49` the log
/// rows as arrays, `$39`..`$48` the contact change.
const CHECKPOINT: &str = concat!(
    "WITH saved AS (UPDATE workflow_executions SET ",
    save_set!(),
    " WHERE id = $1 AND revision = $2 RETURNING revision, updated_at), \
     logs AS (INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, \
       attempt, status, config, response, error, started_at, completed_at, duration_ms, error_class, \
       fingerprint, workflow_id, workflow_version, exec_ms) \
       SELECT l.* FROM UNNEST($22::uuid[], $23::uuid[], $24::int4[], $25::text[], $26::text[], \
         $27::int4[], $28::text[], $29::jsonb[], $30::jsonb[], $31::text[], $32::timestamptz[], \
         $33::timestamptz[], $34::int4[], $35::text[], $36::text[], $37::uuid[], $38::int4[], $49::int4[]) l \
       WHERE EXISTS (SELECT 1 FROM saved)), \
     contact AS (UPDATE contacts SET email = coalesce($42, email), phone = coalesce($43, phone), \
       timezone = coalesce($44, timezone), attributes = (attributes || $45) - $46::text[], \
       tags = ARRAY(SELECT t FROM unnest(tags) WITH ORDINALITY u(t, i) \
                    WHERE t <> ALL($48::text[]) ORDER BY i) \
           || ARRAY(SELECT a FROM unnest($47::text[]) WITH ORDINALITY v(a, j) \
                    WHERE a = ANY($48::text[]) OR a <> ALL(tags) ORDER BY j), \
       updated_at = now() \
       WHERE $39 AND id = $40 AND account_id = $41 AND EXISTS (SELECT 1 FROM saved)) \
     SELECT revision, updated_at FROM saved"
);

/// Writes every mutable column of `e` if nobody wrote the row since `e`
/// was read, with `logs` and `change` to `e`'s contact, in one statement;
/// bumps `e.revision` and `e.updated_at` on success. `false` (nothing
/// written) means the row changed underneath: re-read and decide again.
///
/// # Errors
/// Database errors, e.g. no log partition for the month.
pub async fn commit(
    conn: &mut PgConnection,
    e: &mut Execution,
    logs: &[NewLog<'_>],
    change: Option<&NetChange>,
) -> Result<bool> {
    let (sql, args) = statement(e, logs, change)?;
    let row = sqlx::query_as_with(sql, args)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(saved(e, row))
}

/// [`commit`] in a transaction shared with the checkpoints of other
/// executions that `group` commits meanwhile; returns once it committed.
///
/// # Errors
/// As [`commit`].
pub async fn commit_in(
    group: &Group,
    e: &mut Execution,
    logs: &[NewLog<'_>],
    change: Option<&NetChange>,
) -> Result<bool> {
    let (sql, args) = statement(e, logs, change)?;
    let row = group.run(sql, args).await?;
    Ok(saved(e, row))
}

/// The statement of a checkpoint and its arguments, owned (they may be
/// run by another task).
fn statement(
    e: &Execution,
    logs: &[NewLog<'_>],
    change: Option<&NetChange>,
) -> Result<(&'static str, PgArguments)> {
    let arguments = |mut q: QueryAs<'_, sqlx::Postgres, Row, PgArguments>| {
        q.take_arguments()
            .map_err(sqlx::Error::Encode)?
            .ok_or_else(|| sqlx::Error::Protocol("a checkpoint without arguments".into()))
    };
    if logs.is_empty() && change.is_none() {
        return Ok((SAVE, arguments(bind_state(sqlx::query_as(SAVE), e))?));
    }
    let none = NetChange::default();
    let c = change.unwrap_or(&none);
    let q = bind_state(sqlx::query_as(CHECKPOINT), e)
        .bind(column(logs, |l| l.execution_id))
        .bind(column(logs, |l| l.account_id))
        .bind(column(logs, |l| l.step_index))
        .bind(column(logs, |l| l.step_id))
        .bind(column(logs, |l| l.action_type))
        .bind(column(logs, |l| l.attempt))
        .bind(column(logs, |l| l.status.as_str()))
        .bind(column(logs, |l| SqlJson(l.config)))
        .bind(column(logs, |l| l.response.map(SqlJson)))
        .bind(column(logs, |l| l.error))
        .bind(column(logs, |l| l.started_at))
        .bind(column(logs, |l| l.completed_at))
        .bind(column(logs, |l| {
            (l.completed_at - l.started_at).num_milliseconds().max(0) as i32
        }))
        .bind(column(logs, |l| l.error_class.map(ErrorClass::as_str)))
        .bind(column(logs, |l| l.fingerprint))
        .bind(column(logs, |l| l.workflow_id))
        .bind(column(logs, |l| l.workflow_version))
        .bind(change.is_some())
        .bind(e.contact_id)
        .bind(e.account_id)
        .bind(&c.email)
        .bind(&c.phone)
        .bind(&c.timezone)
        .bind(SqlJson(&c.set))
        .bind(&c.unset)
        .bind(&c.add)
        .bind(&c.remove)
        .bind(column(logs, |l| {
            l.exec_ms.clamp(0, i64::from(i32::MAX)) as i32
        }));
    Ok((CHECKPOINT, arguments(q)?))
}
