//! `flowpilot dev --seed-demo`: an account, a contact and an active
//! workflow, created once, an API key for them if one is given, and what
//! to try next, printed.

use serde_json::json;

use crate::config::RedisConfig;
use crate::runtime::Runtime;
use crate::store::{self, contact::NewContact};
use crate::{auth, engine};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The engine refused the demo's contact or workflow.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// The API key.
    #[error(transparent)]
    Auth(#[from] auth::Error),
}

/// Seeds the demo (what is there already is kept) and prints how to run it.
///
/// # Errors
/// Database errors.
pub async fn seed(rt: &Runtime, redis: &RedisConfig, api_key: Option<&str>) -> Result<(), Error> {
    let pool = &rt.pool;
    let engine = &rt.engine;
    let account = match store::account::find_by_name(pool, "demo").await? {
        Some(a) => a,
        None => store::account::create(pool, "demo").await?,
    };
    let contact = match store::contact::get_by_external_id(pool, account.id, "demo-contact").await?
    {
        Some(c) => c,
        None => {
            engine
                .create_contact(
                    account.id,
                    &NewContact {
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
        auth::register_once(pool, account.id, "demo", key).await?;
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
