//! The benchmarks' large record: one ten-step workflow version with
//! executions over the last 30 days and ten log rows each, seeded with SQL
//! (`cargo bench --bench analytics`, `--bench console`).

#![allow(dead_code)]

use flowpilot::store;
use sqlx::PgPool;
use uuid::Uuid;

pub const DEFINITION: &str = r#"{"steps": [
  {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Welcome"},
  {"id": "pause", "type": "wait", "duration": "1d"},
  {"id": "check", "type": "condition", "if": {"tag": "t1"}, "then": "crm"},
  {"id": "nudge", "type": "send_sms", "body": "Still there?"},
  {"id": "crm", "type": "webhook", "url": "https://crm.example.com/hook"},
  {"id": "follow", "type": "wait", "duration": "2h"},
  {"id": "mark", "type": "update_contact", "attributes": {"nurtured": "yes"}},
  {"id": "enrich", "type": "webhook", "url": "https://enrich.example.com/hook"},
  {"id": "final", "type": "send_email", "subject": "Thanks", "body": "Thanks"},
  {"id": "done", "type": "end"}
]}"#;

/// The action type of step `s<k>` in [`DEFINITION`], for the seeded rows.
const KINDS: &str = "ARRAY['send_email','wait','condition','send_sms','webhook','wait','update_contact','webhook','send_email','end']";
const IDS: &str =
    "ARRAY['welcome','pause','check','nudge','crm','follow','mark','enrich','final','done']";

/// Seeds 100,000 contacts, the workflow of [`DEFINITION`] and `executions`
/// executions of it with their log rows into `pool`'s database; returns
/// the account and the workflow.
///
/// Executions are inserted QUEUED, in batches of 100,000 (one
/// statement-level trigger event each), then ended as the engine's
/// checkpoints end them: 85% completed, 6% failed, 2% cancelled; the rest
/// stay open at a step. Ten attempts each: waits parked for their
/// duration, providers a few hundred ms, one in twelve webhook attempts
/// retried, failed executions' webhook failed for good (five
/// fingerprints).
///
/// # Errors
/// Database errors.
pub async fn nurture(pool: &PgPool, executions: i64) -> anyhow::Result<(Uuid, Uuid)> {
    let pool = pool.clone();
    let account = store::account::create(&pool, "bench").await?.id;
    sqlx::query(
        "INSERT INTO contacts (account_id, email, tags, timezone) \
         SELECT $1, 'c' || g || '@example.com', ARRAY['t' || (g % 3)], \
                (ARRAY['UTC','Europe/Paris','America/New_York','Asia/Tokyo'])[1 + g % 4] \
         FROM generate_series(1, 100000) g",
    )
    .bind(account)
    .execute(&pool)
    .await?;
    let workflow: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workflows (account_id, name, latest_version, is_active) VALUES ($1, 'nurture', 1, true) RETURNING id",
    )
    .bind(account)
    .fetch_one(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO workflow_versions (workflow_id, version, account_id, definition) VALUES ($1, 1, $2, $3::jsonb)",
    )
    .bind(workflow)
    .bind(account)
    .bind(DEFINITION)
    .execute(&pool)
    .await?;
    for from in (0..executions).step_by(100_000) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, \
               current_step_index, current_step_id, created_at) \
             SELECT $1, $2, 1, c.ids[1 + g % 100000], 'QUEUED', g % 10, ({IDS})[1 + g % 10], \
                    now() - (g::float8 / $4) * interval '29 days' \
             FROM generate_series($3, least($3 + 99999, $4 - 1)) g, \
                  (SELECT array_agg(id) AS ids FROM contacts) c"
        )))
        .bind(account)
        .bind(workflow)
        .bind(from)
        .bind(executions)
        .execute(&pool)
        .await?;
    }
    sqlx::query(
        "UPDATE workflow_executions SET \
           status = CASE WHEN n < 85 THEN 'COMPLETED' WHEN n < 91 THEN 'FAILED' WHEN n < 93 THEN 'CANCELLED' \
                         WHEN n < 97 THEN 'WAITING' ELSE 'QUEUED' END, \
           waiting_reason = CASE WHEN n BETWEEN 93 AND 96 THEN 'wait' END, \
           resume_at = CASE WHEN n BETWEEN 93 AND 96 THEN now() + interval '1 hour' END, \
           completed_at = CASE WHEN n < 93 THEN created_at + interval '1 day' END \
         FROM (SELECT id AS eid, abs(hashtext(id::text)) % 100 AS n FROM workflow_executions) x \
         WHERE id = x.eid",
    )
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO execution_logs (execution_id, account_id, step_index, step_id, action_type, attempt, status, \
           response, error, error_class, fingerprint, workflow_id, workflow_version, started_at, completed_at, \
           duration_ms, exec_ms, created_at) \
         SELECT e.id, e.account_id, s, ({IDS})[1 + s], k.kind, 1, st.status, \
           CASE WHEN k.kind = 'condition' THEN jsonb_build_object('result', h % 3 = 1) \
                WHEN k.kind = 'wait' THEN jsonb_build_object('local_hour', (h % 24)) END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN 'webhook answered HTTP ' || (500 + h % 5) END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN 'transient' END, \
           CASE WHEN st.status <> 'SUCCEEDED' THEN lpad(to_hex(h % 5), 16, '0') END, \
           e.workflow_id, 1, t.at, t.at + d.ms * interval '1 millisecond', d.ms, d.exec, \
           t.at + d.ms * interval '1 millisecond' \
         FROM workflow_executions e, generate_series(0, 9) s, \
           LATERAL (SELECT abs(hashtext(e.id::text || s)) AS h) hh, \
           LATERAL (SELECT ({KINDS})[1 + s] AS kind) k, \
           LATERAL (SELECT CASE WHEN k.kind = 'webhook' AND e.status = 'FAILED' AND s = 7 THEN 'FAILED' \
                                WHEN k.kind = 'webhook' AND h % 12 = 0 THEN 'RETRYING' ELSE 'SUCCEEDED' END AS status) st, \
           LATERAL (SELECT CASE WHEN s = 1 THEN 86400000 + h % 600000 WHEN s = 5 THEN 7200000 + h % 60000 \
                                WHEN k.kind IN ('send_email','send_sms','webhook') THEN 50 + h % 900 ELSE h % 3 END AS ms, \
                           CASE WHEN k.kind IN ('send_email','send_sms','webhook') THEN 50 + h % 900 ELSE h % 3 END AS exec) d, \
           LATERAL (SELECT e.created_at + s * interval '3 hours' AS at) t \
         WHERE t.at < now() - interval '1 hour'"
    )))
    .execute(&pool)
    .await?;
    Ok((account, workflow))
}

/// Folds the analytics rollups until nothing is left to fold; returns the
/// log rows and execution events folded.
///
/// # Errors
/// Database errors.
pub async fn fold_all(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    let (mut logs, mut events) = (0, 0);
    loop {
        let f = store::analytics::fold(pool, std::time::Duration::from_secs(3600)).await?;
        logs += f.logs;
        events += f.events;
        if f.logs == 0 && f.events == 0 {
            return Ok((logs, events));
        }
    }
}
