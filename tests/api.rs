//! The real router against real PostgreSQL (a fresh database per test) and
//! Redis, driven in-process. Every response of every test is checked
//! against the router's own `/openapi.json` before the test ends.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use common::flow::Flow;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

use common::api::Api;

fn six_steps(flow: &Flow) -> Json {
    flow.six_steps()
}

#[sqlx::test]
async fn workflows_are_created_versioned_read_listed_and_toggled(pool: PgPool) {
    let api = Api::start(pool).await;
    let def = json!({"steps": [{"id": "a", "type": "end"}]});
    let (status, w) = api
        .post(
            "/api/v1/workflows",
            json!({"name": "welcome", "description": "d", "definition": def}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        (
            w["latest_version"].clone(),
            w["is_active"].clone(),
            w["version"].clone()
        ),
        (json!(1), json!(true), json!(1))
    );
    let id = w["id"].as_str().unwrap();

    let v2 = json!({"steps": [{"id": "b", "type": "goal", "name": "g"}]});
    let (status, w2) = api
        .post(
            &format!("/api/v1/workflows/{id}/versions"),
            json!({"definition": v2}),
        )
        .await;
    assert_eq!((status, w2["latest_version"].clone()), (201, json!(2)));
    let (_, latest) = api.get(&format!("/api/v1/workflows/{id}")).await;
    assert_eq!(latest["definition"], v2);
    let (_, first) = api.get(&format!("/api/v1/workflows/{id}?version=1")).await;
    assert_eq!(
        (first["definition"].clone(), first["version"].clone()),
        (def, json!(1))
    );
    let (status, missing) = api.get(&format!("/api/v1/workflows/{id}?version=9")).await;
    assert_eq!(
        (status, missing["error"]["field"].clone()),
        (404, json!("version"))
    );

    let (status, off) = api
        .action(&format!("/api/v1/workflows/{id}/deactivate"))
        .await;
    assert_eq!((status, off["is_active"].clone()), (200, json!(false)));
    let (_, on) = api
        .action(&format!("/api/v1/workflows/{id}/activate"))
        .await;
    assert_eq!(on["is_active"], json!(true));

    for _ in 0..4 {
        api.workflow(json!({"steps": [{"id": "x", "type": "end"}]}))
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/workflows?limit=2&cursor={c}"),
            None => "/api/v1/workflows?limit=2".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
    let (status, _) = api
        .get(&format!("/api/v1/workflows/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn contacts_are_created_updated_read_and_listed_by_every_filter(pool: PgPool) {
    let api = Api::start(pool).await;
    let (status, c) = api
        .post(
            "/api/v1/contacts",
            json!({"external_id": "crm-1", "email": "Ada@Example.com", "phone": "+15550001", "timezone": "Europe/Paris",
                   "attributes": {"plan": "pro"}, "tags": ["vip", "trial"]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().unwrap();
    let (status, dup) = api
        .post("/api/v1/contacts", json!({"external_id": "crm-1"}))
        .await;
    assert_eq!(
        (status, dup["error"]["field"].clone()),
        (409, json!("external_id"))
    );
    let (status, bad) = api
        .post("/api/v1/contacts", json!({"timezone": "Mars/Olympus"}))
        .await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (422, json!("timezone"))
    );

    let (status, u) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{id}"),
            Some(json!({"opted_out": true, "tags": ["vip"]})),
        )
        .await;
    assert_eq!(
        (
            status,
            u["opted_out"].clone(),
            u["tags"].clone(),
            u["email"].clone()
        ),
        (200, json!(true), json!(["vip"]), json!("Ada@Example.com"))
    );
    let (_, got) = api.get(&format!("/api/v1/contacts/{id}")).await;
    assert_eq!(got["attributes"], json!({"plan": "pro"}));
    api.contact("other@example.com").await;

    for (query, expected) in [
        ("email=ada@example.com", 1),
        ("external_id=crm-1", 1),
        ("tag=vip", 1),
        ("tag=t", 1),
        ("", 2),
        ("tag=nobody", 0),
    ] {
        let (status, page) = api.get(&format!("/api/v1/contacts?{query}")).await;
        assert_eq!(
            (status, page["items"].as_array().unwrap().len()),
            (200, expected),
            "{query}"
        );
    }
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{}", Uuid::new_v4()),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn an_execution_is_started_read_and_its_logs_paged_and_filtered(pool: PgPool) {
    let api = Api::start(pool).await;
    let workflow = api.workflow(six_steps(&api.flow)).await;
    let contact = api.contact("ada@example.com").await;
    // The six-step workflow expects a pro contact.
    api.call(
        Method::PATCH,
        &format!("/api/v1/contacts/{contact}"),
        Some(json!({"attributes": {"plan": "pro", "first_name": "Ada"}, "phone": "+15550100"})),
    )
    .await;

    let body = json!({"contact_id": contact, "priority": "high", "idempotency_key": "k-1", "metadata": {"campaign": "spring"}});
    let (status, e) = api
        .post(
            &format!("/api/v1/workflows/{workflow}/execute"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 202, "{e}");
    assert_eq!(
        (
            e["status"].clone(),
            e["priority"].clone(),
            e["current_step"].clone()
        ),
        (
            json!("QUEUED"),
            json!("high"),
            json!({"id": "welcome", "type": "send_email", "index": 0})
        )
    );
    let id = e["id"].as_str().unwrap().to_owned();
    let (status, again) = api
        .post(&format!("/api/v1/workflows/{workflow}/execute"), body)
        .await;
    assert_eq!((status, again["id"].clone()), (200, json!(id)));

    // Waiting on the wait step: it says why and until when.
    let e = common::eventually(Duration::from_secs(10), "the wait step", || async {
        let (_, e) = api.get(&format!("/api/v1/executions/{id}")).await;
        (e["status"] == json!("WAITING")).then_some(e)
    })
    .await;
    assert_eq!(
        (
            e["waiting_reason"].clone(),
            e["current_step"]["type"].clone()
        ),
        (json!("wait"), json!("wait"))
    );
    assert!(e["next_action_at"].is_string());
    let e = common::eventually(Duration::from_secs(20), "completion", || async {
        let (_, e) = api.get(&format!("/api/v1/executions/{id}")).await;
        (e["status"] == json!("COMPLETED")).then_some(e)
    })
    .await;
    assert_eq!(
        (
            e["attempts"].clone(),
            e["workflow_version"].clone(),
            e["metadata"]["campaign"].clone()
        ),
        (json!(1), json!(1), json!("spring"))
    );

    let logs = |q: String| {
        let api = &api;
        let id = id.clone();
        async move {
            let (status, page) = api.get(&format!("/api/v1/executions/{id}/logs?{q}")).await;
            assert_eq!(status, 200, "{page}");
            page
        }
    };
    let mut steps = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = logs(format!("limit=4{cursor}")).await;
        steps.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["step_index"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
    let count = |page: Json| page["items"].as_array().unwrap().len();
    assert_eq!(count(logs("action_type=webhook".into()).await), 1);
    assert_eq!(count(logs("status=SUCCEEDED".into()).await), 6);
    assert_eq!(count(logs("status=FAILED".into()).await), 0);
    assert_eq!(count(logs("step_from=2&step_to=3".into()).await), 2);
    assert_eq!(
        count(logs("since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z".into()).await),
        6
    );
    assert_eq!(count(logs("until=2000-01-01T00:00:00Z".into()).await), 0);
    let webhook = logs("action_type=webhook".into()).await;
    assert_eq!(webhook["items"][0]["response"]["status"], json!(200));

    let (status, err) = api
        .get(&format!(
            "/api/v1/executions/{id}/logs?step_from=3&step_to=1"
        ))
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("step_to"))
    );
    let (status, err) = api
        .get(&format!("/api/v1/executions/{id}/logs?action_type=fax"))
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("action_type"))
    );
    api.finish().await;
}

#[sqlx::test]
async fn paging_executions_while_rows_are_inserted_sees_every_row_once_and_filters_apply(
    pool: PgPool,
) {
    let api = Api::start_with_no_worker(pool).await;
    let workflow: Uuid = api
        .workflow(json!({"steps": [{"id": "w", "type": "wait", "duration": "1h"}]}))
        .await
        .parse()
        .unwrap();
    let other_workflow: Uuid = api
        .workflow(json!({"steps": [{"id": "e", "type": "end"}]}))
        .await
        .parse()
        .unwrap();
    let contact: Uuid = api.contact("a@example.com").await.parse().unwrap();
    let second_contact: Uuid = api.contact("b@example.com").await.parse().unwrap();
    let mut original = HashSet::new();
    for i in 0..60 {
        let (w, c) = if i % 3 == 0 {
            (other_workflow, second_contact)
        } else {
            (workflow, contact)
        };
        original.insert(api.flow.start_execution(w, c).await.to_string());
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .get(&format!("/api/v1/executions?limit=7{cursor}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(page["count"]["exact"], json!(true));
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        // New rows arrive between pages.
        api.flow.start_execution(workflow, contact).await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a row was seen twice");
    assert!(
        original.is_subset(&unique),
        "{} original rows missing",
        original.difference(&unique).count()
    );

    let total = |q: String| {
        let api = &api;
        async move {
            let (status, page) = api.get(&format!("/api/v1/executions?{q}")).await;
            assert_eq!(status, 200, "{page}");
            page["count"]["value"].as_i64().unwrap()
        }
    };
    let all = total(String::new()).await;
    assert!(all >= 60);
    assert_eq!(total(format!("workflow_id={other_workflow}")).await, 20);
    assert_eq!(total(format!("contact_id={second_contact}")).await, 20);
    assert_eq!(total("status=QUEUED".into()).await, all);
    assert_eq!(total("status=COMPLETED".into()).await, 0);
    assert_eq!(
        total("created_after=2000-01-01T00:00:00Z".into()).await,
        all
    );
    assert_eq!(total("created_before=2000-01-01T00:00:00Z".into()).await, 0);
    let (status, err) = api.get("/api/v1/executions?status=DONE").await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("status"))
    );
    let (status, err) = api.get("/api/v1/executions?created_after=yesterday").await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("created_after"))
    );
    api.finish().await;
}

#[sqlx::test]
async fn another_accounts_rows_are_not_found_and_never_listed(pool: PgPool) {
    let api = Api::start_with_no_worker(pool).await;
    let workflow = api
        .workflow(json!({"steps": [{"id": "w", "type": "wait", "duration": "1h"}]}))
        .await;
    let contact = api.contact("a@example.com").await;
    let (_, e) = api
        .post(
            &format!("/api/v1/workflows/{workflow}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    let id = e["id"].as_str().unwrap();

    let (b, b_account) = api.other_account(false).await;
    for path in [
        format!("/api/v1/executions/{id}"),
        format!("/api/v1/executions/{id}/logs"),
        format!("/api/v1/workflows/{workflow}"),
        format!("/api/v1/contacts/{contact}"),
    ] {
        let (status, body) = api.call_as(Some(&b), Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.to_string().contains(&contact), "no data of A leaks");
    }
    for path in [
        format!("/api/v1/executions/{id}/cancel"),
        format!("/api/v1/workflows/{workflow}/deactivate"),
    ] {
        let (status, _) = api.call_as(Some(&b), Method::POST, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    // B cannot start A's workflow, nor use A's contact in its own.
    let (status, _) = api
        .call_as(
            Some(&b),
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/execute"),
            Some(json!({"contact_id": contact})),
        )
        .await;
    assert_eq!(status, 404);
    for list in [
        "/api/v1/executions",
        "/api/v1/workflows",
        "/api/v1/contacts",
    ] {
        let (status, page) = api.call_as(Some(&b), Method::GET, list, None).await;
        assert_eq!(
            (status, page["items"].as_array().unwrap().len()),
            (200, 0),
            "{list}"
        );
    }
    // B's key may not name another account; an admin key may.
    let req = Request::builder()
        .uri(format!("/api/v1/executions/{id}"))
        .header("authorization", format!("Bearer {b}"))
        .header("x-flowpilot-account", api.flow.account.to_string())
        .body(Body::empty())
        .unwrap();
    let (status, _) = api.raw(req).await;
    assert_eq!(status, 400);
    let (admin, _) = api.other_account(true).await;
    let req = Request::builder()
        .uri(format!("/api/v1/executions/{id}"))
        .header("authorization", format!("Bearer {admin}"))
        .header("x-flowpilot-account", api.flow.account.to_string())
        .body(Body::empty())
        .unwrap();
    let (status, e) = api.raw(req).await;
    assert_eq!((status, e["id"].clone()), (200, json!(id)));
    let (status, _) = api
        .call_as(
            Some(&admin),
            Method::GET,
            &format!("/api/v1/executions/{id}"),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "without the header an admin key acts for its own account"
    );
    let _ = b_account;
    api.finish().await;
}

#[sqlx::test]
async fn cancel_and_retry_follow_the_state_machine(pool: PgPool) {
    let api = Api::start(pool).await;
    let contact = api.contact("a@example.com").await;
    let waiting = api
        .workflow(json!({"steps": [{"id": "w", "type": "wait", "duration": "1h"}]}))
        .await;
    let failing = api.workflow(json!({"steps": [{"id": "g", "type": "webhook", "url": format!("{}/gone", api.flow.base)}]})).await;
    let (_, e) = api
        .post(
            &format!("/api/v1/workflows/{waiting}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let (status, c) = api.action(&format!("/api/v1/executions/{id}/cancel")).await;
    assert_eq!((status, c["status"].clone()), (200, json!("CANCELLED")));
    let (status, err) = api.action(&format!("/api/v1/executions/{id}/cancel")).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (409, json!("conflict"))
    );
    let (status, _) = api.action(&format!("/api/v1/executions/{id}/retry")).await;
    assert_eq!(status, 409, "only FAILED executions can be retried");

    let (_, e) = api
        .post(
            &format!("/api/v1/workflows/{failing}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let failed = common::eventually(Duration::from_secs(15), "failure", || async {
        let (_, e) = api.get(&format!("/api/v1/executions/{id}")).await;
        (e["status"] == json!("FAILED")).then_some(e)
    })
    .await;
    assert_eq!(failed["error"], json!("webhook answered HTTP 404"));
    let (status, r) = api.action(&format!("/api/v1/executions/{id}/retry")).await;
    assert_eq!(
        (status, r["status"].clone(), r["error"].clone()),
        (200, json!("QUEUED"), json!(null))
    );
    api.finish().await;
}

#[sqlx::test]
async fn bad_input_gets_a_4xx_json_error_naming_the_field_and_never_a_5xx(pool: PgPool) {
    let api = Api::start_with_no_worker(pool).await;
    let workflow = api
        .workflow(json!({"steps": [{"id": "e", "type": "end"}]}))
        .await;
    let contact = api.contact("a@example.com").await;
    let execute = format!("/api/v1/workflows/{workflow}/execute");

    // Authentication.
    let (status, body) = api
        .call_as(None, Method::GET, "/api/v1/executions", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, _) = api
        .call_as(Some("fp_wrong"), Method::GET, "/api/v1/executions", None)
        .await;
    assert_eq!(status, 401);

    // Malformed JSON, wrong types, unknown and missing fields.
    let req = |body: &str, content_type: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(&execute)
            .header("authorization", format!("Bearer {}", api.key))
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let (status, body) = api.raw(req("{\"contact_id\": ", "application/json")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_json"))
    );
    let (status, body) = api.raw(req("{} trailing", "application/json")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_json"))
    );
    let (status, body) = api.raw(req("{\"contact_id\": \"x\"}", "text/plain")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (415, json!("unsupported_media_type"))
    );
    for (payload, field) in [
        (json!({"contact_id": 7}), "contact_id"),
        (json!({"contact_id": "not-a-uuid"}), "contact_id"),
        (json!({}), "contact_id"),
        (json!({"contact_id": contact, "colour": "red"}), "colour"),
        (
            json!({"contact_id": contact, "priority": "urgent"}),
            "priority",
        ),
        (json!({"contact_id": contact, "metadata": [1]}), "metadata"),
        (
            json!({"contact_id": contact, "idempotency_key": ""}),
            "idempotency_key",
        ),
    ] {
        let (status, body) = api.post(&execute, payload.clone()).await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (422, json!(field)),
            "{payload}: {body}"
        );
    }
    let (status, body) = api
        .post(
            "/api/v1/workflows",
            json!({"name": "x", "definition": {"steps": [{"id": "a", "type": "wait"}]}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("definition.steps[0].duration"))
    );

    // Unknown ids.
    let (status, body) = api
        .post(&execute, json!({"contact_id": Uuid::new_v4()}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (404, json!("contact_id"))
    );
    let (status, _) = api
        .post(
            &format!("/api/v1/workflows/{}/execute", Uuid::new_v4()),
            json!({"contact_id": contact}),
        )
        .await;
    assert_eq!(status, 404);
    for path in [
        format!("/api/v1/executions/{}", Uuid::new_v4()),
        format!("/api/v1/executions/{}/logs", Uuid::new_v4()),
    ] {
        let (status, _) = api.get(&path).await;
        assert_eq!(status, 404, "{path}");
    }

    // Bad UUIDs, cursors, limits, query fields.
    for path in [
        "/api/v1/executions/not-a-uuid",
        "/api/v1/workflows/123",
        "/api/v1/contacts/zz",
        "/api/v1/executions/x/logs",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (400, json!("id")),
            "{path}"
        );
    }
    for query in [
        "cursor=abc",
        "cursor=bG9nOjE",
        "limit=0",
        "limit=501",
        "limit=ten",
        "workflow_id=nope",
        "sort=asc",
    ] {
        let (status, body) = api.get(&format!("/api/v1/executions?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["field"].is_string(), "{query}: {body}");
    }

    // Oversized bodies.
    let huge = json!({"contact_id": contact, "metadata": {"blob": "x".repeat(2 * 1024 * 1024)}});
    let (status, body) = api.post(&execute, huge).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );

    // Unknown routes and methods.
    let (status, _) = api.get("/api/v1/nothing").await;
    assert_eq!(status, 404);
    let (status, _) = api.call(Method::DELETE, "/api/v1/executions", None).await;
    assert_eq!(status, 405);

    // Inactive workflow: a conflict, and nothing created.
    api.action(&format!("/api/v1/workflows/{workflow}/deactivate"))
        .await;
    let (status, body) = api.post(&execute, json!({"contact_id": contact})).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (409, json!("workflow_id"))
    );
    let (_, page) = api.get("/api/v1/executions").await;
    assert_eq!(page["count"]["value"], json!(0));
    api.finish().await;
}

#[sqlx::test]
async fn hostile_strings_and_sizes_get_a_4xx_naming_the_field(pool: PgPool) {
    let api = Api::start_with_no_worker(pool).await;
    let workflow = api
        .workflow(json!({"steps": [{"id": "e", "type": "end"}]}))
        .await;
    let contact = api.contact("a@example.com").await;
    let execute = format!("/api/v1/workflows/{workflow}/execute");
    let long = "x".repeat(7000);
    let nul = "a\u{0}b";

    // PostgreSQL refuses NUL in text and jsonb; indexes refuse huge keys.
    let cases: Vec<(&str, Json, &str)> = vec![
        (
            "/api/v1/contacts",
            json!({"email": format!("{nul}@x.test")}),
            "email",
        ),
        (
            "/api/v1/contacts",
            json!({"external_id": nul}),
            "external_id",
        ),
        (
            "/api/v1/contacts",
            json!({"attributes": {nul: 1}}),
            "attributes",
        ),
        (
            "/api/v1/contacts",
            json!({"attributes": {"k": [nul]}}),
            "attributes.k[0]",
        ),
        ("/api/v1/contacts", json!({"tags": ["ok", nul]}), "tags[1]"),
        (
            "/api/v1/contacts",
            json!({"external_id": long}),
            "external_id",
        ),
        (
            "/api/v1/contacts",
            json!({"email": format!("{long}@x.test")}),
            "email",
        ),
        ("/api/v1/contacts", json!({"phone": long}), "phone"),
        ("/api/v1/contacts", json!({"tags": vec!["t"; 101]}), "tags"),
        (
            "/api/v1/contacts",
            json!({"attributes": {"blob": "x".repeat(70 * 1024)}}),
            "attributes",
        ),
        (
            "/api/v1/workflows",
            json!({"name": nul, "definition": {"steps": [{"id": "e", "type": "end"}]}}),
            "name",
        ),
        (
            "/api/v1/workflows",
            json!({"name": "w", "description": nul, "definition": {"steps": [{"id": "e", "type": "end"}]}}),
            "description",
        ),
        (
            "/api/v1/workflows",
            json!({"name": "w", "definition": {"steps": [{"id": "s", "type": "send_sms", "body": nul}]}}),
            "definition.steps[0].body",
        ),
        (
            "/api/v1/workflows",
            json!({"name": "w", "definition": {"steps": [{"id": "h", "type": "webhook", "url": "https://x.test", "headers": {"X-A": "1\r\nX-B: 2"}}]}}),
            "definition.steps[0].headers.X-A",
        ),
        (
            "/api/v1/workflows",
            json!({"name": "w", "definition": {"steps": [{"id": "s", "type": "send_sms", "body": "Hi {{contakt.first_name}}"}]}}),
            "definition.steps[0].body",
        ),
        (
            &execute,
            json!({"contact_id": contact, "metadata": {"m": nul}}),
            "metadata.m",
        ),
        (
            &execute,
            json!({"contact_id": contact, "idempotency_key": nul}),
            "idempotency_key",
        ),
        (
            &execute,
            json!({"contact_id": contact, "idempotency_key": "k".repeat(256)}),
            "idempotency_key",
        ),
    ];
    for (path, payload, field) in cases {
        let (status, body) = api.post(path, payload.clone()).await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (422, json!(field)),
            "{path} {}: {body}",
            payload.to_string().chars().take(200).collect::<String>()
        );
    }
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{contact}"),
            Some(json!({"phone": nul})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("phone"))
    );

    // Query strings: NUL, and times PostgreSQL cannot hold.
    // About 7500 BC: chrono can hold it, PostgreSQL cannot.
    let far = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("-300000000000000000:{}", Uuid::new_v4()));
    for (path, field) in [
        ("/api/v1/contacts?email=a%00b".to_owned(), "email"),
        ("/api/v1/contacts?tag=%00".to_owned(), "tag"),
        ("/api/v1/executions?status=QUEUED%00".to_owned(), "status"),
        (format!("/api/v1/executions?cursor={far}"), "cursor"),
        (format!("/api/v1/contacts?cursor={far}"), "cursor"),
        (format!("/api/v1/workflows?cursor={far}"), "cursor"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (400, json!(field)),
            "{path}: {body}"
        );
    }

    // Numbers at the edges of f64 come back as they went in (PostgreSQL
    // prints them as long decimals).
    let edges =
        json!({"big": -1.7976931348623155e308, "tiny": -5.515537246559582e-42, "int": 1e20});
    let (status, c) = api
        .post("/api/v1/contacts", json!({"attributes": edges}))
        .await;
    assert_eq!(status, 201, "{c}");
    let (status, read) = api
        .get(&format!("/api/v1/contacts/{}", c["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, read["attributes"].clone()), (200, edges));

    // What the OpenAPI document says may be null, may be null.
    let (status, c) = api
        .post(
            "/api/v1/contacts",
            json!({"email": "n@x.test", "attributes": null, "tags": null}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let (_, spec) = api.get("/openapi.json").await;
    let mut root = spec.clone();
    root["$ref"] = json!("#/components/schemas/ContactFields");
    assert!(
        jsonschema::validator_for(&root)
            .unwrap()
            .is_valid(&json!({"attributes": null, "tags": null}))
    );
    api.finish().await;
}

#[sqlx::test]
async fn a_failed_steps_log_and_an_unreadable_definition_are_reported_as_documented(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let contact = api.contact("a@example.com").await;
    // 127.0.0.2 is not allow-listed: refused before any connection, so the
    // failed attempt has no answer to keep (`response: null`).
    let refused = api
        .workflow(
            json!({"steps": [{"id": "hook", "type": "webhook", "url": "http://127.0.0.2:9/"}]}),
        )
        .await;
    let (_, e) = api
        .post(
            &format!("/api/v1/workflows/{refused}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let id_uuid = Uuid::parse_str(&id).unwrap();
    api.flow
        .wait_status(id_uuid, "FAILED", Duration::from_secs(20))
        .await;
    let (status, logs) = api.get(&format!("/api/v1/executions/{id}/logs")).await;
    assert_eq!(status, 200);
    assert_eq!(logs["items"][0]["status"], json!("FAILED"));
    assert_eq!(logs["items"][0]["response"], Json::Null);

    // A version this engine cannot read (written by a newer engine, or by
    // hand): the execution is still shown, with the reason.
    let bad: Uuid = sqlx::query_scalar(
        "WITH w AS (INSERT INTO workflows (account_id, name, latest_version, is_active) \
           VALUES ($1, 'future', 1, true) RETURNING id), \
         v AS (INSERT INTO workflow_versions (workflow_id, version, account_id, definition) \
           SELECT id, 1, $1, '{\"steps\": [{\"id\": \"x\", \"type\": \"teleport\"}]}' FROM w) \
         SELECT id FROM w",
    )
    .bind(api.flow.account)
    .fetch_one(&pool)
    .await
    .unwrap();
    let stuck: Uuid = sqlx::query_scalar(
        "INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, current_step_id, status, attempt) \
         VALUES ($1, $2, 1, $3, 'x', 'COMPLETED', 1) RETURNING id",
    )
    .bind(api.flow.account)
    .bind(bad)
    .bind(Uuid::parse_str(&contact).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    let (status, view) = api.get(&format!("/api/v1/executions/{stuck}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["current_step"]["type"], json!("unknown"));
    let reason = view["definition_error"].as_str().unwrap_or_default();
    assert!(reason.contains("teleport"), "{view}");
    let (_, page) = api.get("/api/v1/executions").await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["definition_error"].is_string()),
        "{page}"
    );
    api.finish().await;
}

#[sqlx::test]
async fn health_readiness_openapi_and_metrics_are_served(pool: PgPool) {
    let api = Api::start_with_no_worker(pool).await;
    let (status, h) = api.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!((status, h["status"].clone()), (200, json!("ok")));
    let (status, r) = api.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(
        (status, r["checks"].clone()),
        (200, json!({"postgres": "ok", "redis": "ok"}))
    );
    let (status, spec) = api.call_as(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/workflows",
        "/api/v1/workflows/{id}",
        "/api/v1/workflows/{id}/versions",
        "/api/v1/workflows/{id}/activate",
        "/api/v1/workflows/{id}/deactivate",
        "/api/v1/workflows/{id}/execute",
        "/api/v1/contacts",
        "/api/v1/contacts/{id}",
        "/api/v1/executions",
        "/api/v1/executions/{id}",
        "/api/v1/executions/{id}/logs",
        "/api/v1/executions/{id}/cancel",
        "/api/v1/executions/{id}/retry",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, text) = api.call_as(None, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        text.as_str().unwrap().contains(
            "flowpilot_api_requests_total{method=\"GET\",route=\"/readyz\",status=\"2xx\"} 1"
        ),
        "{text}"
    );
    api.finish().await;
}

#[sqlx::test]
async fn the_log_filter_changes_at_runtime_for_admin_keys_only(pool: PgPool) {
    // A reloadable filter layer of our own, kept alive for the test.
    let (filter, _layer) = flowpilot::telemetry::LogFilter::new("info").unwrap();
    let api = Api::start_with(pool.clone(), false, Some(filter)).await;
    let path = "/api/v1/admin/log-filter";
    let (status, body) = api
        .call(Method::PUT, path, Some(json!({"filter": "debug"})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let (admin, _) = flowpilot::auth::mint(&pool, api.flow.account, "admin", true)
        .await
        .unwrap();
    let (status, body) = api
        .call_as(
            Some(&admin),
            Method::PUT,
            path,
            Some(json!({"filter": "info,flowpilot=debug"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"filter": "info,flowpilot=debug"}))
    );
    let (status, body) = api
        .call_as(
            Some(&admin),
            Method::PUT,
            path,
            Some(json!({"filter": "flowpilot=loud"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("filter"))
    );
    api.finish().await;
}

#[sqlx::test]
async fn failures_are_listed_grouped_by_fingerprint_and_as_dead_letters(pool: PgPool) {
    let api = Api::start(pool).await;
    let workflow = api
        .workflow(json!({"steps": [
            {"id": "gone", "type": "webhook", "url": format!("{}/gone", api.flow.base)}
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let contact = api.contact(&format!("c{i}@example.com")).await;
        ids.push(api.execute(&workflow, &contact).await);
    }
    for id in &ids {
        let id = id.parse().unwrap();
        api.flow
            .wait_status(id, "FAILED", Duration::from_secs(30))
            .await;
    }

    let (status, groups) = api.get("/api/v1/errors").await;
    assert_eq!(status, 200, "{groups}");
    let items = groups["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{groups}");
    let g = &items[0];
    assert_eq!(g["count"], 3);
    assert_eq!(g["error_class"], "permanent");
    assert_eq!(g["step_id"], "gone");
    assert_eq!(g["workflow_id"], json!(workflow));
    assert_eq!(g["workflow_version"], 1);
    assert_eq!(g["message"], "webhook answered HTTP 404");
    assert_eq!(g["sample_execution_ids"].as_array().unwrap().len(), 3);
    // The three attempts of the last minutes are in the newest twelfth of
    // the 24 hours; over the last 12 minutes they spread over the slices.
    assert_eq!(
        g["histogram"],
        json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]),
        "{g}"
    );
    let since = (chrono::Utc::now() - chrono::Duration::minutes(12)).to_rfc3339();
    let (_, recent) = api
        .get(&format!(
            "/api/v1/errors?since={}",
            since.replace('+', "%2B")
        ))
        .await;
    let h: Vec<i64> = serde_json::from_value(recent["items"][0]["histogram"].clone()).unwrap();
    assert_eq!((h.len(), h.iter().sum::<i64>()), (12, 3), "{recent}");
    let fp = g["fingerprint"].as_str().unwrap().to_owned();
    let (_, none) = api.get("/api/v1/errors?error_class=transient").await;
    assert_eq!(none["items"], json!([]));
    let (_, other) = api
        .get(&format!(
            "/api/v1/errors?workflow_id={}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(other["items"], json!([]));

    // Executions by fingerprint, class and several statuses at once.
    for query in [
        format!("fingerprint={fp}"),
        "error_class=permanent".to_owned(),
        "status=FAILED,RETRYING".to_owned(),
        "current_step=gone&status=FAILED".to_owned(),
    ] {
        let (status, page) = api.get(&format!("/api/v1/executions?{query}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(page["count"]["value"], 3, "{query}");
        assert_eq!(page["items"][0]["fingerprint"], json!(fp), "{query}");
    }
    let (_, waiting) = api
        .get("/api/v1/executions?waiting_reason=retry_backoff")
        .await;
    assert_eq!(waiting["count"]["value"], 0);

    let (status, dead) = api
        .get(&format!(
            "/api/v1/dead-letters?fingerprint={fp}&resolved=false&limit=2"
        ))
        .await;
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead["items"].as_array().unwrap().len(), 2);
    let cursor = dead["next_cursor"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!(
            "/api/v1/dead-letters?fingerprint={fp}&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let one = &dead["items"][0];
    assert_eq!(one["error_class"], "permanent");
    assert_eq!(one["workflow_id"], json!(workflow));
    let (status, got) = api
        .get(&format!(
            "/api/v1/dead-letters/{}",
            one["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["execution_id"], one["execution_id"]);

    for (path, field) in [
        ("/api/v1/errors?error_class=flaky", "error_class"),
        (
            "/api/v1/errors?since=2026-01-01T00:00:00Z&until=2026-06-01T00:00:00Z",
            "since",
        ),
        ("/api/v1/errors?cursor=bm9wZQ", "cursor"),
        ("/api/v1/executions?status=FAILED,DONE", "status"),
        ("/api/v1/executions?error_class=x", "error_class"),
        ("/api/v1/dead-letters?fingerprint=xyz", "fingerprint"),
    ] {
        let (status, err) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["error"]["field"], field, "{path}");
    }
    let (status, _) = api
        .get(&format!("/api/v1/dead-letters/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn an_admin_lists_and_revokes_keys_and_a_revoked_key_is_refused_at_once(pool: PgPool) {
    let api = Api::start(pool).await;
    let (admin, _) = api.other_account(true).await;
    let (user, account) = api.other_account(false).await;
    let as_admin = |method: Method, path: String| {
        let api = &api;
        let admin = admin.clone();
        async move { api.call_as(Some(&admin), method, &path, None).await }
    };
    // The key works.
    let (status, _) = api
        .call_as(Some(&user), Method::GET, "/api/v1/workflows", None)
        .await;
    assert_eq!(status, 200);
    // Only admin keys manage keys.
    let (status, err) = api
        .call_as(Some(&user), Method::GET, "/api/v1/admin/api-keys", None)
        .await;
    assert_eq!(status, 403, "{err}");
    let (status, list) = as_admin(
        Method::GET,
        format!("/api/v1/admin/api-keys?account_id={account}"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["prefix"], json!(&user[..11]));
    assert!(items[0].get("key").is_none() && items[0].get("key_hash").is_none());
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let revoke = |id: String| as_admin(Method::POST, format!("/api/v1/admin/api-keys/{id}/revoke"));
    let (status, revoked) = revoke(id.clone()).await;
    assert_eq!(status, 200, "{revoked}");
    let at = revoked["revoked_at"].clone();
    assert!(at.is_string());
    // Refused on the very next request.
    let (status, err) = api
        .call_as(Some(&user), Method::GET, "/api/v1/workflows", None)
        .await;
    assert_eq!(status, 401, "{err}");
    // Revoking again changes nothing; an unknown key is a 404.
    let (_, again) = revoke(id.clone()).await;
    assert_eq!(again["revoked_at"], at);
    let (status, _) = revoke(Uuid::new_v4().to_string()).await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn erasing_a_contact_deletes_its_personal_data_everywhere_and_cancels_what_runs(
    pool: PgPool,
) {
    let api = Api::start(pool.clone()).await;
    let (status, c) = api
        .post(
            "/api/v1/contacts",
            json!({"external_id": "crm-9", "email": "erase.me@example.com", "phone": "+15550109999",
                   "attributes": {"first_name": "Grace"}, "tags": ["vip"]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let contact = c["id"].as_str().unwrap().to_owned();
    let done = api
        .workflow(json!({"steps": [
            {"id": "hi", "type": "send_email", "subject": "Hi {{contact.attributes.first_name}}", "body": "to {{contact.email}}"},
            {"id": "text", "type": "send_sms", "body": "Hi {{contact.attributes.first_name}}"}
        ]}))
        .await;
    let long = api
        .workflow(json!({"steps": [
            {"id": "hi", "type": "send_email", "subject": "s", "body": "{{contact.email}}"},
            {"id": "pause", "type": "wait", "duration": "1h"}
        ]}))
        .await;
    let mut ids = Vec::new();
    for w in [&done, &long] {
        let (status, e) = api
            .post(
                &format!("/api/v1/workflows/{w}/execute"),
                json!({"contact_id": contact, "metadata": {"email": "erase.me@example.com"}}),
            )
            .await;
        assert_eq!(status, 202, "{e}");
        ids.push(e["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    api.flow
        .wait_status(ids[0], "COMPLETED", Duration::from_secs(30))
        .await;
    api.flow
        .wait_status(ids[1], "WAITING", Duration::from_secs(30))
        .await;

    let (status, erased) = api
        .call(Method::DELETE, &format!("/api/v1/contacts/{contact}"), None)
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["executions_cancelled"], 1);
    assert_eq!(erased["executions_redacted"], 2);
    assert_eq!(erased["messages_redacted"], 3);
    assert_eq!(api.flow.status(ids[1]).await, "CANCELLED");

    // Nothing of it is left in any table, and the executions keep their shape.
    for table in [
        "contacts",
        "workflow_executions",
        "execution_logs",
        "outbox",
        "dead_letters",
    ] {
        let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} t WHERE t::text ILIKE '%erase.me%' OR t::text LIKE '%5550109999%' \
             OR t::text LIKE '%Grace%' OR t::text LIKE '%crm-9%'"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(found, 0, "personal data left in {table}");
    }
    let logs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM execution_logs WHERE execution_id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(logs, 2, "log rows keep their shape");
    let (status, e) = api.get(&format!("/api/v1/executions/{}", ids[0])).await;
    assert_eq!((status, e["status"].as_str()), (200, Some("COMPLETED")));

    // Gone for every read and write; erasing again is a 404.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"tags": ["x"]}))),
        (Method::DELETE, None),
    ] {
        let (status, _) = api
            .call(method.clone(), &format!("/api/v1/contacts/{contact}"), body)
            .await;
        assert_eq!(status, 404, "{method}");
    }
    let (_, list) = api.get("/api/v1/contacts?external_id=crm-9").await;
    assert_eq!(list["items"], json!([]));
    let (status, _) = api
        .post(
            &format!("/api/v1/workflows/{done}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    assert_eq!(status, 404);
    api.finish().await;
}

#[sqlx::test]
async fn a_workflows_versions_are_listed_and_an_archived_one_starts_nothing(pool: PgPool) {
    let api = Api::start(pool).await;
    let def = json!({"steps": [{"id": "a", "type": "end"}]});
    let id = api.workflow(def.clone()).await;
    let (status, _) = api
        .post(
            &format!("/api/v1/workflows/{id}/versions"),
            json!({"definition": def}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, versions) = api.get(&format!("/api/v1/workflows/{id}/versions")).await;
    assert_eq!(status, 200, "{versions}");
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    let (status, _) = api
        .get(&format!("/api/v1/workflows/{}/versions", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);

    let contact = api.contact("ada@example.com").await;
    let (status, archived) = api.action(&format!("/api/v1/workflows/{id}/archive")).await;
    assert_eq!(status, 200, "{archived}");
    assert!(archived["archived_at"].is_string());
    assert_eq!(archived["is_active"], false);
    let (status, err) = api
        .post(
            &format!("/api/v1/workflows/{id}/execute"),
            json!({"contact_id": contact}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    let (status, err) = api
        .action(&format!("/api/v1/workflows/{id}/activate"))
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["message"], "workflow is archived");
    let (_, list) = api.get("/api/v1/workflows").await;
    assert_eq!(list["items"], json!([]), "left out of the default listing");
    let (_, all) = api.get("/api/v1/workflows?include_archived=true").await;
    assert_eq!(all["items"][0]["id"], json!(id));
    let (status, v1) = api.get(&format!("/api/v1/workflows/{id}?version=1")).await;
    assert_eq!(
        (status, v1["version"].as_i64()),
        (200, Some(1)),
        "versions stay readable"
    );
    api.finish().await;
}

#[sqlx::test]
async fn every_state_changing_call_is_in_the_audit_trail_which_nobody_can_rewrite(pool: PgPool) {
    let api = Api::start(pool.clone()).await;
    let (admin, _) = api.other_account(true).await;
    api.workflow(json!({"steps": [{"id": "a", "type": "end"}]}))
        .await;
    let (status, _) = api
        .call_as(
            None,
            Method::POST,
            "/api/v1/contacts",
            Some(json!({"email": "x@example.com"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api.get("/api/v1/workflows").await;
    assert_eq!(status, 200, "a read is not audited");
    let (status, err) = api.get("/api/v1/admin/audit").await;
    assert_eq!(status, 403, "{err}");
    let (status, trail) = api
        .call_as(
            Some(&admin),
            Method::GET,
            "/api/v1/admin/audit?limit=500",
            None,
        )
        .await;
    assert_eq!(status, 200, "{trail}");
    let items = trail["items"].as_array().unwrap();
    let created = items
        .iter()
        .find(|e| e["action"] == "POST /api/v1/workflows")
        .expect("the workflow's creation");
    assert_eq!(created["result"], 201);
    assert_eq!(created["actor"], "api");
    assert_eq!(created["account_id"], json!(api.flow.account));
    assert!(created["key_id"].is_string());
    assert_eq!(created["target"], "/api/v1/workflows");
    let refused = items
        .iter()
        .find(|e| e["action"] == "POST /api/v1/contacts" && e["result"] == 401)
        .expect("the unauthenticated call");
    assert!(refused["key_id"].is_null());
    assert!(
        !items
            .iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("GET")),
        "reads are not audited"
    );
    // Append-only: the database refuses to change or remove an entry.
    for sql in ["UPDATE audit_log SET result = 200", "DELETE FROM audit_log"] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    api.finish().await;
}

#[sqlx::test]
async fn a_count_past_its_time_budget_is_the_planner_s_estimate_and_says_so(pool: PgPool) {
    use flowpilot::store::execution::Filter;
    use flowpilot::store::execution_count::{count, count_within};
    let account = flowpilot::store::account::create(&pool, "big")
        .await
        .unwrap()
        .id;
    sqlx::query(
        "WITH c AS (INSERT INTO contacts (account_id, email) VALUES ($1, 'a@example.com') RETURNING id), \
              w AS (INSERT INTO workflows (account_id, name, latest_version) VALUES ($1, 'w', 1) RETURNING id), \
              v AS (INSERT INTO workflow_versions (workflow_id, version, account_id, definition) \
                    SELECT id, 1, $1, '{\"steps\": []}' FROM w) \
         INSERT INTO workflow_executions (account_id, workflow_id, workflow_version, contact_id, status, current_step_id) \
         SELECT $1, w.id, 1, c.id, 'COMPLETED', 's' || (g % 3) FROM w, c, generate_series(1, 100000) g",
    )
    .bind(account)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE workflow_executions")
        .execute(&pool)
        .await
        .unwrap();
    // No index serves a step filter that matches nothing: counting walks
    // every row of the account, far past a 1 ms budget.
    let nowhere = Filter {
        current_step: Some("nowhere".into()),
        ..Filter::default()
    };
    let c = count_within(&pool, account, &nowhere, "1ms").await.unwrap();
    assert!(c.estimated && !c.exact, "{c:?}");
    assert!(c.value < 1_000, "the planner expects few rows: {c:?}");
    let s1 = Filter {
        current_step: Some("s1".into()),
        ..Filter::default()
    };
    let c = count_within(&pool, account, &s1, "1ms").await.unwrap();
    assert!(
        c.estimated && c.value == 10_000,
        "an estimate is capped too: {c:?}"
    );
    // Given the time, the same counts are exact (or capped).
    let c = count_within(&pool, account, &nowhere, "10s").await.unwrap();
    assert_eq!((c.value, c.exact, c.estimated), (0, true, false));
    let c = count_within(&pool, account, &s1, "10s").await.unwrap();
    assert_eq!((c.value, c.exact, c.estimated), (10_000, false, false));
    // The default budget answers either way, never an error.
    assert!(count(&pool, account, &nowhere).await.is_ok());
}
