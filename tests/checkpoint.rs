//! Checkpoints on a real PostgreSQL: local steps in a row commit in one
//! checkpoint with a log row each, a step with a side effect commits before
//! the next one starts, a checkpoint that lost a race writes nothing, and
//! the one-statement contact change equals the changes made one by one.

mod common;

use std::time::Duration;

use common::flow::{Flow, logs};
use flowpilot::domain::Change;
use flowpilot::domain::contact::NetChange;
use flowpilot::store;
use serde_json::{Map, json};
use sqlx::PgPool;
use uuid::Uuid;

/// How many transactions wrote the log rows of `id` (rows written by one
/// transaction share its `xmin`), in step order.
async fn transactions(pool: &PgPool, id: Uuid) -> Vec<Vec<i32>> {
    let rows: Vec<(String, Vec<i32>)> = sqlx::query_as(
        "SELECT xmin::text, array_agg(step_index ORDER BY id) FROM execution_logs \
         WHERE execution_id = $1 GROUP BY xmin::text ORDER BY min(id)",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(_, steps)| steps).collect()
}

fn workflow(base: &str) -> serde_json::Value {
    json!({"steps": [
        {"id": "tag", "type": "add_tag", "tag": "lead"},
        {"id": "untag", "type": "remove_tag", "tag": "cold"},
        {"id": "plan", "type": "update_contact", "attributes": {"plan": "pro", "seats": 3}},
        {"id": "is_lead", "type": "condition", "if": {"tag": "lead"}, "then": "notify", "else": "done"},
        {"id": "notify", "type": "webhook", "url": format!("{base}/hook"),
         "body": {"tags": "{{ contact.tags }}", "plan": "{{ contact.attributes.plan }}"}},
        {"id": "seats", "type": "update_contact", "unset": ["seats"]},
        {"id": "done", "type": "add_tag", "tag": "done"},
    ]})
}

#[sqlx::test]
async fn local_steps_in_a_row_commit_together_and_a_side_effect_commits_before_the_next_step(
    pool: PgPool,
) {
    let flow = Flow::start(pool.clone()).await;
    let contact = flow.contact("ada@example.com", false).await;
    sqlx::query("UPDATE contacts SET tags = '{cold,vip}' WHERE id = $1")
        .bind(contact)
        .execute(&pool)
        .await
        .unwrap();
    let id = flow
        .start_execution(flow.workflow(workflow(&flow.base)).await, contact)
        .await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;

    let rows = logs(&pool, id).await;
    let steps: Vec<(i32, &str, &str, i32)> = rows
        .iter()
        .map(|r| (r.0, r.1.as_str(), r.3.as_str(), r.4))
        .collect();
    assert_eq!(
        steps,
        [
            (0, "tag", "SUCCEEDED", 1),
            (1, "untag", "SUCCEEDED", 1),
            (2, "plan", "SUCCEEDED", 1),
            (3, "is_lead", "SUCCEEDED", 1),
            (4, "notify", "SUCCEEDED", 1),
            (5, "seats", "SUCCEEDED", 1),
            (6, "done", "SUCCEEDED", 1),
        ]
    );
    // The four local steps commit with the webhook's checkpoint; the two
    // after it with the last one.
    assert_eq!(
        transactions(&pool, id).await,
        [vec![0, 1, 2, 3, 4], vec![5, 6]]
    );
    // The webhook saw the contact as the local steps before it left it,
    // though none of them had committed yet.
    let hooks = flow.receiver.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].body["plan"], "pro");
    assert_eq!(hooks[0].body["tags"], json!(["vip", "lead"]));
    let (tags, attributes): (Vec<String>, serde_json::Value) =
        sqlx::query_as("SELECT tags, attributes FROM contacts WHERE id = $1")
            .bind(contact)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tags, ["vip", "lead", "done"]);
    assert_eq!(attributes, json!({"first_name": "Ada", "plan": "pro"}));
    let context: serde_json::Value =
        sqlx::query_scalar("SELECT context FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    for step in ["tag", "untag", "plan", "is_lead", "notify", "seats", "done"] {
        assert!(context.get(step).is_some(), "{step} in {context}");
    }
    flow.stop().await;
}

#[sqlx::test]
async fn with_one_step_per_checkpoint_every_step_commits_on_its_own(pool: PgPool) {
    let flow = Flow::start_tuned(
        pool.clone(),
        &common::redis_url(),
        &common::unique("test-queue"),
        true,
        |s| s.steps_per_checkpoint = 1,
    )
    .await;
    let contact = flow.contact("ada@example.com", false).await;
    let id = flow
        .start_execution(flow.workflow(workflow(&flow.base)).await, contact)
        .await;
    flow.wait_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_eq!(
        transactions(&pool, id).await,
        (0..7).map(|i| vec![i]).collect::<Vec<_>>()
    );
    flow.stop().await;
}

#[sqlx::test]
async fn a_checkpoint_that_lost_a_race_writes_no_log_row_and_no_contact_change(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "tag", "type": "add_tag", "tag": "x"}]}))
        .await;
    let id = flow.start_execution(workflow, contact).await;
    let tags_before = store::contact::get(&pool, flow.account, contact)
        .await
        .unwrap()
        .unwrap()
        .tags;
    let mut stale = store::execution::get(&pool, id).await.unwrap().unwrap();
    sqlx::query("UPDATE workflow_executions SET revision = revision + 1 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let config = json!({});
    let log = store::log::NewLog {
        execution_id: id,
        workflow_id: stale.workflow_id,
        workflow_version: stale.workflow_version,
        account_id: stale.account_id,
        step_index: 0,
        step_id: "tag",
        action_type: "add_tag",
        attempt: 1,
        status: flowpilot::domain::LogStatus::Succeeded,
        config: &config,
        response: None,
        error: None,
        error_class: None,
        fingerprint: None,
        started_at: chrono::Utc::now(),
        completed_at: chrono::Utc::now(),
        exec_ms: 0,
    };
    let change = NetChange::of(&[Change::AddTag("x".into())]);
    let mut conn = pool.acquire().await.unwrap();
    let written = store::checkpoint::commit(&mut conn, &mut stale, &[log], change.as_ref())
        .await
        .unwrap();
    assert!(!written);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM execution_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let tags: Vec<String> = sqlx::query_scalar("SELECT tags FROM contacts WHERE id = $1")
        .bind(contact)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((rows, tags), (0, tags_before));
    flow.stop().await;
}

/// A random change among a few tags and attributes, so that sequences
/// add, remove and re-add the same ones.
fn random_change(rng: &mut fastrand::Rng) -> Change {
    let name = |rng: &mut fastrand::Rng| ["a", "b", "c", "d"][rng.usize(..4)].to_owned();
    match rng.usize(..4) {
        0 => Change::AddTag(name(rng)),
        1 => Change::RemoveTag(name(rng)),
        _ => {
            let mut attributes = Map::new();
            let mut unset = Vec::new();
            for _ in 0..rng.usize(..3) {
                attributes.insert(name(rng), json!(rng.u8(..)));
            }
            for _ in 0..rng.usize(..2) {
                unset.push(name(rng));
            }
            Change::Update {
                email: rng.bool().then(|| format!("{}@example.com", name(rng))),
                phone: None,
                timezone: rng.bool().then(|| "Europe/Paris".to_owned()),
                attributes,
                unset,
            }
        }
    }
}

#[sqlx::test]
async fn the_net_change_of_a_checkpoint_leaves_the_contact_as_the_changes_one_by_one(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let workflow = flow
        .workflow(json!({"steps": [{"id": "tag", "type": "add_tag", "tag": "x"}]}))
        .await;
    let mut rng = fastrand::Rng::with_seed(20261127);
    for case in 0..200 {
        let contact = flow.contact(&format!("c{case}@example.com"), false).await;
        sqlx::query(
            "UPDATE contacts SET tags = '{b,d}', attributes = '{\"a\": 0, \"c\": 0}' WHERE id = $1",
        )
        .bind(contact)
        .execute(&pool)
        .await
        .unwrap();
        let mut expected = store::contact::get(&pool, flow.account, contact)
            .await
            .unwrap()
            .unwrap();
        let changes: Vec<Change> = (0..rng.usize(1..8))
            .map(|_| random_change(&mut rng))
            .collect();
        for c in &changes {
            expected.apply(c);
        }
        let id = flow.start_execution(workflow, contact).await;
        let mut e = store::execution::get(&pool, id).await.unwrap().unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let net = NetChange::of(&changes);
        assert!(
            store::checkpoint::commit(&mut conn, &mut e, &[], net.as_ref())
                .await
                .unwrap()
        );
        let got = store::contact::get(&pool, flow.account, contact)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&got.tags, &got.attributes.0, &got.email, &got.timezone),
            (
                &expected.tags,
                &expected.attributes.0,
                &expected.email,
                &expected.timezone
            ),
            "case {case}: {changes:?}"
        );
    }
    flow.stop().await;
}
