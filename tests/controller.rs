//! The real reconcile functions, driven through kube's client over a mock
//! API server that asserts every request (method, path, body), against a
//! real PostgreSQL and Redis behind the engine.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::flow::Flow;
use flowpilot::controller::{Context, Metrics, Settings, worker_pool, workflow_execution};
use flowpilot::crd::worker_pool::Mode;
use flowpilot::crd::{WorkerPool, WorkerPoolSpec, WorkflowExecution, WorkflowExecutionSpec};
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use redis::AsyncCommands;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use tower_test::mock::{self, Handle};
use uuid::Uuid;

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// One expected call: method, path (and query) prefix, a check of the body,
/// and the JSON to answer.
struct Expect {
    method: Method,
    path: String,
    check: Box<dyn FnOnce(&Json) + Send>,
    reply: Json,
}

fn expect(
    method: Method,
    path: impl Into<String>,
    check: impl FnOnce(&Json) + Send + 'static,
    reply: Json,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(check),
        reply,
    }
}

/// Serves `calls` in order (1 s each), then checks nothing else is asked.
/// A `Status` reply is sent with its `code` as the HTTP status.
fn serve(mut server: ApiServer, calls: Vec<Expect>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for call in calls {
            let (req, send) = tokio::time::timeout(Duration::from_secs(1), server.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came for {} {}", call.method, call.path))
                .expect("client dropped");
            let uri = req.uri().to_string();
            assert_eq!(req.method(), call.method, "{uri}");
            assert!(
                uri.starts_with(&call.path),
                "expected {} {}, got {uri}",
                call.method,
                call.path
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Json = if bytes.is_empty() {
                Json::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            (call.check)(&body);
            let status = match call.reply["kind"].as_str() {
                Some("Status") => call.reply["code"].as_u64().unwrap_or(500) as u16,
                _ => 200,
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&call.reply).unwrap()))
                    .unwrap(),
            );
        }
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(300), server.next_request()).await
        {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    })
}

async fn context(flow: &Flow) -> (Arc<Context>, ApiServer) {
    let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let settings = Settings {
        worker_image: "flowpilot:test".into(),
        status_interval: Duration::from_secs(5),
        scale_interval: Duration::from_secs(15),
    };
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let ctx = Context::new(
        client,
        Arc::clone(&flow.engine),
        flow.runtime.queue.clone(),
        settings,
        "test",
        metrics,
    );
    (Arc::new(ctx), server)
}

const WFX_PATH: &str =
    "/apis/flowpilot.io/v1alpha1/namespaces/default/workflowexecutions/welcome-ada";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn wfx(spec: WorkflowExecutionSpec) -> WorkflowExecution {
    let mut w = WorkflowExecution::new("welcome-ada", spec);
    w.metadata.namespace = Some("default".into());
    w.metadata.uid = Some(Uuid::new_v4().to_string());
    w.metadata.generation = Some(1);
    w.metadata.finalizers = Some(vec![workflow_execution::FINALIZER.into()]);
    w
}

fn event_reply() -> Json {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": "2026-01-01T00:00:00.000000Z"})
}

async fn spec(flow: &Flow, definition: Json) -> WorkflowExecutionSpec {
    let contact = flow.contact("ada@example.com", false).await;
    let workflow = flow.workflow(definition).await;
    WorkflowExecutionSpec {
        account_id: flow.account.to_string(),
        workflow_id: workflow.to_string(),
        contact_id: contact.to_string(),
        priority: None,
        metadata: Some(json!({"source": "kubectl"})),
        ttl_seconds_after_finished: Some(60),
    }
}

#[sqlx::test]
async fn a_new_execution_is_created_in_postgres_and_its_status_patched(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let obj = wfx(spec(
        &flow,
        json!({"steps": [{"id": "hello", "type": "send_email", "subject": "s", "body": "b"}]}),
    )
    .await);
    let reply = serde_json::to_value(&obj).unwrap();
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                format!("{WFX_PATH}/status"),
                |b| {
                    assert_eq!(b["status"]["phase"], json!("Pending"));
                    assert_eq!(b["status"]["currentStep"], json!("hello"));
                    assert_eq!(b["status"]["observedGeneration"], json!(1));
                    let types: Vec<&str> = b["status"]["conditions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["type"].as_str().unwrap())
                        .collect();
                    assert_eq!(types, ["Ready", "Succeeded", "Failed"]);
                    assert_eq!(b["status"]["conditions"][0]["status"], json!("True"));
                },
                reply,
            ),
            expect(
                Method::POST,
                EVENTS_PATH,
                |b| assert_eq!(b["reason"], json!("Pending")),
                event_reply(),
            ),
        ],
    );
    let action = workflow_execution::reconcile(Arc::new(obj.clone()), Arc::clone(&ctx))
        .await
        .unwrap();
    mock.await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(5)),
        "a running execution is refreshed"
    );
    let uid = obj.metadata.uid.unwrap();
    let (source, metadata): (String, Json) = sqlx::query_as(
        "SELECT source, metadata FROM workflow_executions WHERE idempotency_key = $1",
    )
    .bind(format!("kubernetes:{uid}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (source.as_str(), metadata),
        ("kubernetes", json!({"source": "kubectl"}))
    );
    flow.stop().await;
}

#[sqlx::test]
async fn reconciling_again_starts_nothing_new_and_writes_nothing_unchanged(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let mut obj = wfx(spec(&flow, json!({"steps": [{"id": "e", "type": "end"}]})).await);
    let reply = serde_json::to_value(&obj).unwrap();
    // First pass: status patch and event; capture the status written.
    let written = Arc::new(std::sync::Mutex::new(Json::Null));
    let keep = Arc::clone(&written);
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                format!("{WFX_PATH}/status"),
                move |b| *keep.lock().unwrap() = b["status"].clone(),
                reply,
            ),
            expect(Method::POST, EVENTS_PATH, |_| {}, event_reply()),
        ],
    );
    workflow_execution::reconcile(Arc::new(obj.clone()), Arc::clone(&ctx))
        .await
        .unwrap();
    mock.await.unwrap();
    obj.status = Some(serde_json::from_value(written.lock().unwrap().clone()).unwrap());
    // Second pass with that status: no request at all.
    let (ctx, server) = context(&flow).await;
    let mock = serve(server, vec![]);
    workflow_execution::reconcile(Arc::new(obj), ctx)
        .await
        .unwrap();
    mock.await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    flow.stop().await;
}

#[sqlx::test]
async fn a_finished_execution_past_its_ttl_is_deleted(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let mut obj = wfx(spec(&flow, json!({"steps": [{"id": "e", "type": "end"}]})).await);
    let uid = obj.metadata.uid.clone().unwrap();
    // Started earlier, finished two minutes ago; TTL is 60 s.
    let s = &obj.spec;
    flow.engine
        .start(flowpilot::engine::StartRequest {
            account_id: s.account_id.parse().unwrap(),
            workflow_id: s.workflow_id.parse().unwrap(),
            contact_id: s.contact_id.parse().unwrap(),
            priority: Default::default(),
            idempotency_key: Some(format!("kubernetes:{uid}")),
            metadata: json!({}),
            source: "kubernetes",
        })
        .await
        .unwrap();
    sqlx::query("UPDATE workflow_executions SET status = 'COMPLETED', completed_at = now() - interval '2 minutes'")
        .execute(&pool)
        .await
        .unwrap();
    let e =
        flowpilot::store::execution::get_by_key(&pool, flow.account, &format!("kubernetes:{uid}"))
            .await
            .unwrap()
            .unwrap();
    obj.status = Some(workflow_execution::desired_status(
        Some(1),
        &Default::default(),
        &workflow_execution::Observed::Execution(Box::new(e)),
        chrono::Utc::now(),
    ));
    let mock = serve(
        server,
        vec![expect(
            Method::DELETE,
            WFX_PATH,
            |_| {},
            serde_json::to_value(&obj).unwrap(),
        )],
    );
    let action = workflow_execution::reconcile(Arc::new(obj), ctx)
        .await
        .unwrap();
    mock.await.unwrap();
    assert_eq!(action, Action::await_change());
    flow.stop().await;
}

/// A resource whose execution (a one-hour wait) was started by a first
/// reconcile (status patch, Event), now being deleted.
async fn deleted_while_waiting(flow: &Flow) -> WorkflowExecution {
    let mut obj = wfx(spec(
        flow,
        json!({"steps": [{"id": "w", "type": "wait", "duration": "1h"}]}),
    )
    .await);
    let (ctx, server) = context(flow).await;
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                format!("{WFX_PATH}/status"),
                |_| {},
                serde_json::to_value(&obj).unwrap(),
            ),
            expect(Method::POST, EVENTS_PATH, |_| {}, event_reply()),
        ],
    );
    workflow_execution::reconcile(Arc::new(obj.clone()), ctx)
        .await
        .unwrap();
    mock.await.unwrap();
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    obj
}

#[sqlx::test]
async fn deleting_a_running_execution_cancels_it_and_removes_the_finalizer(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let obj = deleted_while_waiting(&flow).await;
    let mut reply = serde_json::to_value(&obj).unwrap();
    reply["metadata"]["finalizers"] = json!([]);
    let mock = serve(
        server,
        vec![expect(
            Method::PATCH,
            WFX_PATH,
            |b| {
                let ops = b.as_array().expect("a JSON patch");
                assert!(
                    ops.iter().any(|op| op["op"] == json!("remove")
                        && op["path"]
                            .as_str()
                            .unwrap()
                            .starts_with("/metadata/finalizers")),
                    "{b}"
                );
            },
            reply,
        )],
    );
    workflow_execution::reconcile(Arc::new(obj), ctx)
        .await
        .unwrap();
    mock.await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "CANCELLED");
    flow.stop().await;
}

#[sqlx::test]
async fn a_deleted_resource_keeps_its_finalizer_while_its_execution_is_not_final(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let obj = deleted_while_waiting(&flow).await;
    // Every write that would cancel it is lost, as to a writer that keeps
    // winning the row.
    for sql in [
        "CREATE FUNCTION lose_cancel() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        "CREATE TRIGGER lose_cancel BEFORE UPDATE ON workflow_executions FOR EACH ROW \
         WHEN (NEW.status = 'CANCELLED') EXECUTE FUNCTION lose_cancel()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let (ctx, server) = context(&flow).await;
    // No request at all: above all, no patch that removes the finalizer.
    let mock = serve(server, vec![]);
    let result = workflow_execution::reconcile(Arc::new(obj), ctx).await;
    assert!(result.is_err(), "the reconcile is retried");
    mock.await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "QUEUED", "not cancelled, so the resource stays");
    flow.stop().await;
}

#[sqlx::test]
async fn a_missing_workflow_ends_in_phase_failed_with_a_reason_and_no_requeue(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let mut s = spec(&flow, json!({"steps": [{"id": "e", "type": "end"}]})).await;
    s.workflow_id = Uuid::new_v4().to_string();
    let obj = wfx(s);
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                format!("{WFX_PATH}/status"),
                |b| {
                    assert_eq!(b["status"]["phase"], json!("Failed"));
                    let failed = &b["status"]["conditions"][2];
                    assert_eq!(
                        (
                            failed["type"].clone(),
                            failed["status"].clone(),
                            failed["reason"].clone()
                        ),
                        (json!("Failed"), json!("True"), json!("WorkflowNotFound"))
                    );
                    assert!(
                        b["status"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("not found")
                    );
                },
                serde_json::to_value(&obj).unwrap(),
            ),
            expect(
                Method::POST,
                EVENTS_PATH,
                |b| {
                    assert_eq!(
                        (b["type"].clone(), b["reason"].clone()),
                        (json!("Warning"), json!("WorkflowNotFound"))
                    )
                },
                event_reply(),
            ),
        ],
    );
    let action = workflow_execution::reconcile(Arc::new(obj), ctx)
        .await
        .unwrap();
    mock.await.unwrap();
    assert_eq!(action, Action::await_change(), "no crash loop");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    flow.stop().await;
}

fn pool_spec(queue: &str) -> WorkerPoolSpec {
    serde_json::from_value(json!({
        "queues": [queue], "minReplicas": 0, "maxReplicas": 10, "targetPerReplica": 10,
        "secretName": "flowpilot-db", "jobTimeoutSeconds": 120
    }))
    .unwrap()
}

fn worker_pool(spec: WorkerPoolSpec) -> WorkerPool {
    let mut p = WorkerPool::new("pool-a", spec);
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(Uuid::new_v4().to_string());
    p.metadata.generation = Some(1);
    p
}

#[sqlx::test]
async fn a_pool_applies_its_deployment_with_the_decided_replicas_and_patches_its_status(
    pool: PgPool,
) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let queue = common::unique("pool-queue");
    let mut r = common::raw().await;
    let now = flowpilot::queue::now_ms();
    for i in 0..35 {
        let _: () = r
            .zadd(&queue, format!("job-{i}"), now - 1000)
            .await
            .unwrap();
    }
    let _: () = r.zadd(&queue, "later", now + 3_600_000).await.unwrap();
    let obj = worker_pool(pool_spec(&queue));
    let deployment_reply = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pool-a", "namespace": "default"},
        "spec": {"replicas": 4, "selector": {}, "template": {}},
        "status": {"replicas": 4, "readyReplicas": 1}
    });
    let q = queue.clone();
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                "/apis/apps/v1/namespaces/default/deployments/pool-a?",
                move |b| {
                    assert_eq!(b["spec"]["replicas"], json!(4), "ceil(35 / 10) = 4");
                    assert_eq!(
                        b["metadata"]["ownerReferences"][0]["kind"],
                        json!("WorkerPool")
                    );
                    assert_eq!(
                        b["metadata"]["ownerReferences"][0]["controller"],
                        json!(true)
                    );
                    let pod = &b["spec"]["template"]["spec"];
                    assert_eq!(
                        pod["terminationGracePeriodSeconds"],
                        json!(150),
                        "job timeout + drain margin"
                    );
                    let c = &pod["containers"][0];
                    assert_eq!(c["image"], json!("flowpilot:test"));
                    assert_eq!(
                        c["command"],
                        json!([
                            "flowpilot",
                            "worker",
                            "--queues",
                            q,
                            "--job-timeout",
                            "120s"
                        ])
                    );
                    assert_eq!(c["envFrom"][0]["secretRef"]["name"], json!("flowpilot-db"));
                    assert_eq!(
                        c["env"][1],
                        json!({"name": "FLOWPILOT_ADMIN_LISTEN", "value": "0.0.0.0:8081"})
                    );
                    assert_eq!(c["readinessProbe"]["httpGet"]["path"], json!("/readyz"));
                },
                deployment_reply,
            ),
            expect(
                Method::PATCH,
                "/apis/flowpilot.io/v1alpha1/namespaces/default/workerpools/pool-a/status",
                |b| {
                    let s = &b["status"];
                    assert_eq!(
                        (
                            s["desiredReplicas"].clone(),
                            s["currentReplicas"].clone(),
                            s["readyReplicas"].clone()
                        ),
                        (json!(4), json!(4), json!(1))
                    );
                    assert_eq!(
                        (s["queueDepth"].clone(), s["inProgress"].clone()),
                        (json!(35), json!(0))
                    );
                    assert!(s["lastScaleTime"].is_string() && s["lastActiveTime"].is_string());
                    assert_eq!(
                        s["selector"],
                        json!("app.kubernetes.io/name=flowpilot-worker,flowpilot.io/pool=pool-a")
                    );
                    assert_eq!(s["conditions"][0]["status"], json!("True"));
                },
                serde_json::to_value(&obj).unwrap(),
            ),
            expect(
                Method::POST,
                EVENTS_PATH,
                |b| assert_eq!(b["reason"], json!("Scaled")),
                event_reply(),
            ),
        ],
    );
    let action = worker_pool::reconcile(Arc::new(obj), ctx).await.unwrap();
    mock.await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let _: () = r.del(&queue).await.unwrap();
    flow.stop().await;
}

#[sqlx::test]
async fn an_invalid_pool_gets_ready_false_with_a_reason_and_no_deployment(pool: PgPool) {
    let flow = Flow::start_with(pool.clone(), false).await;
    let (ctx, server) = context(&flow).await;
    let mut spec = pool_spec("q");
    spec.min_replicas = 5;
    spec.max_replicas = 2;
    spec.mode = Mode::Auto;
    let obj = worker_pool(spec);
    let mock = serve(
        server,
        vec![
            expect(
                Method::PATCH,
                "/apis/flowpilot.io/v1alpha1/namespaces/default/workerpools/pool-a/status",
                |b| {
                    let c = &b["status"]["conditions"][0];
                    assert_eq!(
                        (c["type"].clone(), c["status"].clone(), c["reason"].clone()),
                        (json!("Ready"), json!("False"), json!("InvalidReplicas"))
                    );
                },
                serde_json::to_value(&obj).unwrap(),
            ),
            expect(
                Method::POST,
                EVENTS_PATH,
                |b| assert_eq!(b["type"], json!("Warning")),
                event_reply(),
            ),
        ],
    );
    let action = worker_pool::reconcile(Arc::new(obj), ctx).await.unwrap();
    mock.await.unwrap();
    assert_eq!(action, Action::await_change());
    flow.stop().await;
}

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/flowpilot/leases/flowpilot-controller";

fn lease(holder: &str, renewed: k8s_openapi::jiff::Timestamp) -> Json {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "flowpilot-controller", "namespace": "flowpilot", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string(), "leaseTransitions": 1}
    })
}

fn not_found() -> Json {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn leader_election_creates_renews_follows_and_takes_over_the_lease() {
    use flowpilot::controller::lease::Elector;
    let now = k8s_openapi::jiff::Timestamp::now();
    let stale = now - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let cases: Vec<(&str, Vec<Expect>, bool)> = vec![
        (
            "no lease: create it",
            vec![
                expect(Method::GET, LEASE_PATH, |_| {}, not_found()),
                expect(
                    Method::POST,
                    "/apis/coordination.k8s.io/v1/namespaces/flowpilot/leases?",
                    |b| assert_eq!(b["spec"]["holderIdentity"], json!("me")),
                    lease("me", now),
                ),
            ],
            true,
        ),
        (
            "held by a live peer: follow, write nothing",
            vec![expect(Method::GET, LEASE_PATH, |_| {}, lease("peer", now))],
            false,
        ),
        (
            "our own: renew with the resourceVersion read",
            vec![
                expect(Method::GET, LEASE_PATH, |_| {}, lease("me", now)),
                expect(
                    Method::PUT,
                    LEASE_PATH,
                    |b| {
                        assert_eq!(b["metadata"]["resourceVersion"], json!("7"));
                        assert_eq!(b["spec"]["leaseTransitions"], json!(1));
                    },
                    lease("me", now),
                ),
            ],
            true,
        ),
        (
            "a lapsed peer: take over, counting the transition",
            vec![
                expect(Method::GET, LEASE_PATH, |_| {}, lease("peer", stale)),
                expect(
                    Method::PUT,
                    LEASE_PATH,
                    |b| {
                        assert_eq!(b["spec"]["holderIdentity"], json!("me"));
                        assert_eq!(b["spec"]["leaseTransitions"], json!(2));
                    },
                    lease("me", now),
                ),
            ],
            true,
        ),
        (
            "a race lost on write (409): not the leader",
            vec![
                expect(Method::GET, LEASE_PATH, |_| {}, lease("peer", stale)),
                expect(
                    Method::PUT,
                    LEASE_PATH,
                    |_| {},
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
                ),
            ],
            false,
        ),
    ];
    for (name, calls, leads) in cases {
        let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let mock = serve(server, calls);
        let elector = Elector::new(
            client,
            "flowpilot",
            "flowpilot-controller",
            "me",
            Duration::from_secs(15),
        );
        assert_eq!(elector.try_lead().await.unwrap(), leads, "{name}");
        mock.await.unwrap();
    }
}
