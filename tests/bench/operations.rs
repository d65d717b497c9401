//! Bulk operations at size:
//!
//!   cargo bench --bench operations      # needs DATABASE_URL, REDIS_URL (`make services`)
//!   FLOWPILOT_BENCH_CONTACTS=100000 FLOWPILOT_BENCH_FAILED=10000 cargo bench --bench operations
//!
//! In a scratch database: (1) an enrollment of 100,000 contact ids (a
//! fifth of them already in the workflow, so the `never` policy has work
//! to do) worked through by the engine's own batches, timed from the first
//! batch to the last commit: enrollments per second into PostgreSQL;
//! (2) a bulk retry of 10,000 FAILED executions end to end, with a real
//! worker running them: from the request to the operation's end, and to
//! the last execution's completion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowpilot::engine::Settings;
use flowpilot::engine::operation::{Bulk, Contacts, EnrollRequest};
use flowpilot::queue::{Client, Serializer, keys};
use flowpilot::runtime::Tasks;
use flowpilot::store::{self, bulk::Reenroll, execution::Filter};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod scratch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = scratch::redis_url()?;
    let contacts: i64 = scratch::env("FLOWPILOT_BENCH_CONTACTS", 100_000);
    let failed: i64 = scratch::env("FLOWPILOT_BENCH_FAILED", 10_000);

    let db = scratch::Scratch::create(25).await?;
    let pool = db.pool.clone();
    store::partition::ensure_ahead(&pool, chrono::Utc::now()).await?;
    let prefix = format!("bench-{}", Uuid::new_v4().simple());
    let queue = Client::connect(&redis, Serializer::Pickle).await?;
    let runtime = scratch::runtime(
        &pool,
        &queue,
        Settings {
            queue_prefix: prefix.clone(),
            run_budget: Duration::from_secs(600),
            ..Settings::default()
        },
        flowpilot::worker::Settings {
            queues: keys::priority_queues(&prefix),
            max_jobs: 20,
            poll_delay: Duration::from_millis(5),
            ..flowpilot::worker::Settings::default()
        },
    )?;
    let engine = Arc::clone(&runtime.engine);
    let account = store::account::create(&pool, "bench").await?.id;
    let workflow = engine
        .create_workflow(
            account,
            "bench",
            None,
            true,
            &json!({"steps": [{"id": "in", "type": "goal", "name": "entered"}]}),
        )
        .await?
        .id;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO contacts (account_id, email, tags) \
         SELECT $1, 'c' || g || '@example.com', ARRAY['bench'] FROM generate_series(1, $2) g RETURNING id",
    )
    .bind(account)
    .bind(contacts)
    .fetch_all(&pool)
    .await?;
    // A fifth already in the workflow (finished): `never` skips them.
    sqlx::query(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, completed_at) \
         SELECT $1, $2, 1, id, 'COMPLETED', now() FROM unnest($3::uuid[]) WITH ORDINALITY t(id, n) WHERE n % 5 = 0",
    )
    .bind(account)
    .bind(workflow)
    .bind(&ids)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;

    // (1) Enrollment, worked through by this process alone (no worker yet).
    let op = engine
        .enroll(EnrollRequest {
            account_id: account,
            workflow_id: workflow,
            contacts: Contacts::Ids(ids.clone()),
            policy: Reenroll::Never,
            priority: Default::default(),
            metadata: json!({}),
            created_by: None,
        })
        .await?;
    let began = Instant::now();
    engine.run_operation(op.id).await?;
    let took = began.elapsed().as_secs_f64();
    let op = store::operation::get(&pool, account, op.id)
        .await?
        .expect("the operation");
    println!(
        "enroll: {} contact ids, policy never: {} enrolled, {} skipped (already in), state {}, in {:.2} s: {:.0} contacts/s, {:.0} executions inserted/s",
        op.total,
        op.done,
        op.skipped,
        op.state,
        took,
        f64::from(op.total) / took,
        f64::from(op.done) / took
    );

    // (2) Bulk retry of FAILED executions, end to end with a worker.
    sqlx::query("UPDATE workflow_executions SET status = 'CANCELLED', completed_at = now(), waiting_reason = NULL, resume_at = NULL WHERE status = 'WAITING'")
        .execute(&pool)
        .await?;
    sqlx::query(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, attempt, \
           current_step_id, error, error_class, fingerprint, completed_at) \
         SELECT $1, $2, 1, id, 'FAILED', 1, 'in', 'boom', 'permanent', 'abcdefabcdefabcd', now() \
         FROM unnest($3::uuid[]) WITH ORDINALITY t(id, n) WHERE n <= $4",
    )
    .bind(account)
    .bind(workflow)
    .bind(&ids)
    .bind(failed)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let mut tasks = Tasks::new(CancellationToken::new());
    runtime.spawn_worker(&mut tasks)?;
    let began = Instant::now();
    let op = engine
        .bulk_start(
            account,
            Bulk::Retry,
            Filter {
                workflow_id: Some(workflow),
                fingerprint: Some("abcdefabcdefabcd".into()),
                ..Filter::default()
            },
            None,
        )
        .await?;
    let mut op_done = None;
    loop {
        let now = store::operation::get(&pool, account, op.id)
            .await?
            .expect("op");
        if op_done.is_none() && now.is_finished() {
            op_done = Some((began.elapsed().as_secs_f64(), now.done));
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')",
        )
        .fetch_one(&pool)
        .await?;
        if op_done.is_some() && open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = began.elapsed().as_secs_f64();
    let (op_secs, retried) = op_done.unwrap_or_default();
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_executions WHERE status = 'COMPLETED' AND first_attempt = 1 \
           AND current_step_id = 'in' AND started_at IS NOT NULL AND source = 'api'",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "bulk retry: {failed} FAILED executions: operation ended in {op_secs:.2} s ({retried} retried, {:.0}/s); all {completed} completed {all:.2} s after the request ({:.0}/s end to end)",
        f64::from(retried) / op_secs,
        completed as f64 / all
    );
    tasks.token().cancel();
    tasks.wait().await?;
    db.finish().await
}
