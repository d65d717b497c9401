//! The operator console (`/ui/`) over a real API server, PostgreSQL, Redis
//! and worker: its security by plain HTTP (no page without a session, CSRF,
//! accounts apart, escaping), and an operator's round in a real headless
//! Chromium driven through WebDriver, with a screenshot of each page under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::Api;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Failed executions of the seeded workflow.
const FAILED: usize = 6;
/// Completed executions of another workflow.
const COMPLETED: usize = 10;
/// What a contact's attribute holds: it must show as text.
const HOSTILE: &str = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned=2\">";

/// The API and console served on a real port, with what the tests look at.
struct Console {
    api: Api,
    base: String,
    failing: String,
    failed: Vec<String>,
    hostile_execution: String,
    waiting: String,
}

async fn wait_status(api: &Api, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, e) = api.get(&format!("/api/v1/executions/{id}")).await;
        if e["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} stayed {}", e["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Console {
    /// Seeds: a workflow whose webhook is gone (so `FAILED` executions,
    /// one of them for a contact with a hostile attribute), a waiting one,
    /// an `execution_failed` alert firing, and the analytics folded.
    async fn start(pool: PgPool) -> Console {
        flowpilot::tls::install_crypto_provider();
        let api = Api::start(pool.clone()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = api.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let (status, rule) = api
            .post(
                "/api/v1/alert-rules",
                json!({"name": "crm sync failing", "kind": "execution_failed",
                       "channels": [{"type": "webhook", "url": format!("{}/hook", api.flow.base),
                                     "secret": "a console test secret, long enough"}]}),
            )
            .await;
        assert_eq!(status, 201, "{rule}");
        let failing = api
            .workflow(json!({"steps": [
                {"id": "tag", "type": "add_tag", "tag": "synced"},
                {"id": "crm", "type": "webhook", "url": format!("{}/gone", api.flow.base)},
                {"id": "done", "type": "end"}
            ]}))
            .await;
        let (status, hostile) = api
            .post(
                "/api/v1/contacts",
                json!({"email": "mallory@example.com", "attributes": {"note": HOSTILE}}),
            )
            .await;
        assert_eq!(status, 201, "{hostile}");
        let hostile_execution = api.execute(&failing, hostile["id"].as_str().unwrap()).await;
        let mut failed = vec![hostile_execution.clone()];
        for i in 1..FAILED {
            let c = api.contact(&format!("c{i}@example.com")).await;
            failed.push(api.execute(&failing, &c).await);
        }
        for id in &failed {
            wait_status(&api, id, "FAILED").await;
        }
        let quick = api
            .workflow(json!({"steps": [{"id": "welcome", "type": "add_tag", "tag": "welcomed"}]}))
            .await;
        for i in 0..COMPLETED {
            let c = api.contact(&format!("q{i}@example.com")).await;
            let id = api.execute(&quick, &c).await;
            wait_status(&api, &id, "COMPLETED").await;
        }
        let patient = api
            .workflow(json!({"steps": [
                {"id": "pause", "type": "wait", "duration": "1h"},
                {"id": "done", "type": "end"}
            ]}))
            .await;
        let c = api.contact("patient@example.com").await;
        let waiting = api.execute(&patient, &c).await;
        wait_status(&api, &waiting, "WAITING").await;

        let mut evaluator =
            flowpilot::alert::evaluate::Evaluator::new(api.flow.runtime.alerts.clone());
        evaluator.pass().await.unwrap();
        let (_, alerts) = api.get("/api/v1/alerts?state=firing").await;
        assert!(!alerts["items"].as_array().unwrap().is_empty(), "{alerts}");
        flowpilot::store::analytics::fold(&pool, Duration::from_secs(5))
            .await
            .unwrap();
        Console {
            api,
            base,
            failing,
            failed,
            hostile_execution,
            waiting,
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A session: its cookie and the page's CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(base: &str, key: &str) -> Signed {
    let resp = http()
        .post(format!("{base}/ui/login"))
        .form(&[("key", key), ("next", "/ui/executions")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui/executions");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = get(base, &cookie, "/ui/").await.1;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF field on the page")
        .to_owned();
    Signed { cookie, csrf }
}

async fn get(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let resp = http()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn post(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let resp = http()
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[sqlx::test]
async fn the_console_answers_only_a_session_of_the_right_account_and_escapes_what_it_shows(
    pool: PgPool,
) {
    let c = Console::start(pool.clone()).await;
    let base = &c.base;
    let id = &c.failed[1];
    let pages = [
        "/ui/".to_owned(),
        "/ui/executions?status=FAILED".to_owned(),
        format!("/ui/executions/{id}"),
        format!("/ui/workflows/{}", c.failing),
        "/ui/workflows".to_owned(),
        "/ui/failures".to_owned(),
        "/ui/alerts".to_owned(),
        "/ui/operations".to_owned(),
    ];
    let fragments = ["/ui/fragment/executions".to_owned()];
    let posts = [
        format!("/ui/executions/{id}/retry"),
        format!("/ui/executions/{}/cancel", c.waiting),
        format!("/ui/workflows/{}/deactivate", c.failing),
        "/ui/failures/bulk".to_owned(),
        "/ui/account".to_owned(),
        "/ui/logout".to_owned(),
    ];

    // No session: pages send to the sign-in form, fragments and posts 401.
    for cookie in [
        "",
        "flowpilot_session=0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        for p in &pages {
            let resp = http()
                .get(format!("{base}{p}"))
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{p}");
            assert!(
                resp.headers()[LOCATION]
                    .to_str()
                    .unwrap()
                    .starts_with("/ui/login?next="),
                "{p}"
            );
            assert!(!resp.text().await.unwrap().contains(id.as_str()));
        }
        for p in &fragments {
            let (status, body) = get(base, cookie, p).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
            assert!(!body.contains(id.as_str()), "{p}");
        }
        for p in &posts {
            assert_eq!(
                post(base, cookie, p, &[]).await.0,
                StatusCode::UNAUTHORIZED,
                "{p}"
            );
        }
    }
    let (status, body) = get(base, "", "/ui/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such page"), "{body}");
    let (status, body) = post(base, "", "/ui/login", &[("key", "fp_not_a_key")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unknown or revoked API key"), "{body}");

    // Signed in: every page answers, with the security headers.
    let a = sign_in(base, &c.api.key).await;
    for p in pages.iter().chain(&fragments) {
        let resp = http()
            .get(format!("{base}{p}"))
            .header(COOKIE, &a.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{p}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let html = resp.text().await.unwrap();
        // No inline script or style anywhere: the CSP would refuse them.
        assert!(!html.contains(" style="), "{p} has an inline style");
        for script in html.split("<script").skip(1) {
            let open = script.split('>').next().unwrap();
            assert!(
                open.contains(" src=") || open.contains("application/json"),
                "{p}: <script{open}>"
            );
        }
    }

    // CSRF: a post without the token, with a wrong one, or from another
    // site is refused and changes nothing.
    let retry = format!("/ui/executions/{id}/retry");
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = post(base, &a.cookie, &retry, &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    let resp = http()
        .post(format!("{base}{retry}"))
        .header(COOKIE, &a.cookie)
        .header(ORIGIN, "http://evil.example")
        .form(&[("csrf", a.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, e) = c.api.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(e["status"], "FAILED", "a refused post changed nothing");
    // With the token it goes through, as the API's retry.
    let (status, _) = post(base, &a.cookie, &retry, &[("csrf", &a.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, e) = c.api.get(&format!("/api/v1/executions/{id}")).await;
    assert_ne!(e["status"], "FAILED", "{e}");
    // In the audit trail with the key, as an API call would be.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'POST /ui/executions/{id}/retry' \
         AND target = $1 AND key_id IS NOT NULL AND account_id = $2 AND result = 303",
    )
    .bind(&retry)
    .bind(c.api.flow.account)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // Escaping: the hostile attribute is text on the timeline.
    let (_, html) = get(
        base,
        &a.cookie,
        &format!("/ui/executions/{}", c.hostile_execution),
    )
    .await;
    assert!(
        html.contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        !html.contains("<script>window.__pwned") && !html.contains("<img src=x"),
        "{html}"
    );
    // A hostile filter value is escaped where the page repeats it.
    let (status, html) = get(
        base,
        &a.cookie,
        "/ui/executions?current_step=%22%3E%3Cscript%3Ex%3C/script%3E",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains("\"><script>x</script>") && html.contains("&quot;&gt;&lt;script&gt;"),
        "{html}"
    );
    // A bad filter is a 400 naming the field.
    let (status, html) = get(base, &a.cookie, "/ui/executions?workflow_id=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("data-field=\"workflow_id\""), "{html}");

    // Another account sees none of these rows.
    let (other_key, _) = c.api.other_account(false).await;
    let b = sign_in(base, &other_key).await;
    let (_, list) = get(base, &b.cookie, "/ui/executions").await;
    let (_, rows) = get(base, &b.cookie, "/ui/fragment/executions").await;
    let (_, failures) = get(base, &b.cookie, "/ui/failures").await;
    for (what, html) in [
        ("list", &list),
        ("fragment", &rows),
        ("failures", &failures),
    ] {
        for e in &c.failed {
            assert!(!html.contains(e.as_str()), "{what} shows {e}");
        }
    }
    for p in [
        format!("/ui/executions/{id}"),
        format!("/ui/workflows/{}", c.failing),
    ] {
        assert_eq!(
            get(base, &b.cookie, &p).await.0,
            StatusCode::NOT_FOUND,
            "{p}"
        );
    }
    let (status, _) = post(base, &b.cookie, &retry, &[("csrf", &b.csrf)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another account's retry");
    // Only an admin key switches accounts; then it sees that account's rows.
    let switch = [
        ("csrf", b.csrf.as_str()),
        ("account_id", &c.api.flow.account.to_string()),
    ];
    assert_eq!(
        post(base, &b.cookie, "/ui/account", &switch).await.0,
        StatusCode::FORBIDDEN
    );
    let (admin_key, _) = c.api.other_account(true).await;
    let admin = sign_in(base, &admin_key).await;
    assert!(
        !get(base, &admin.cookie, "/ui/executions")
            .await
            .1
            .contains(id.as_str())
    );
    let to_a = [
        ("csrf", admin.csrf.as_str()),
        ("account_id", &c.api.flow.account.to_string()),
    ];
    assert_eq!(
        post(base, &admin.cookie, "/ui/account", &to_a).await.0,
        StatusCode::SEE_OTHER
    );
    assert!(
        get(base, &admin.cookie, "/ui/executions")
            .await
            .1
            .contains(id.as_str())
    );
    let nowhere = [
        ("csrf", admin.csrf.as_str()),
        ("account_id", &Uuid::new_v4().to_string()),
    ];
    assert_eq!(
        post(base, &admin.cookie, "/ui/account", &nowhere).await.0,
        StatusCode::NOT_FOUND
    );

    // Revoking the key ends its sessions; signing out ends one.
    let key_id: Uuid =
        sqlx::query_scalar("SELECT key_id FROM console_sessions ORDER BY created_at LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    flowpilot::store::api_key::revoke(&pool, key_id)
        .await
        .unwrap();
    assert_eq!(get(base, &a.cookie, "/ui/").await.0, StatusCode::SEE_OTHER);
    let (status, _) = post(base, &b.cookie, "/ui/logout", &[("csrf", &b.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(get(base, &b.cookie, "/ui/").await.0, StatusCode::SEE_OTHER);
    c.api.flow.stop().await;
}

/// chromedriver on a free port, stopped on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(cmd))
        .find(|p| p.is_file())
}

async fn browser() -> Option<(Driver, Client)> {
    let (Some(driver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
        eprintln!(
            "SKIPPED: the console's browser test needs `chromium` and `chromedriver` \
             (Debian packages chromium, chromium-driver; `tests/support/services.sh tools` installs them)"
        );
        return None;
    };
    let port = common::free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let caps = json!({"goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,800", "--force-device-scale-factor=1"]
    }});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut b = ClientBuilder::new(connector);
        b.capabilities(caps.as_object().unwrap().clone());
        match b.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return Some((driver, client)),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver did not answer: {e}"),
        }
    }
}

/// Saves a screenshot of what the browser shows as `name.png`.
async fn shot(b: &Client, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, b.screenshot().await.unwrap()).unwrap();
    path
}

/// The element `css`, once the page has it (within 10 s).
async fn element(b: &Client, css: &str) -> fantoccini::elements::Element {
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
}

async fn text(b: &Client, css: &str) -> String {
    element(b, css).await.text().await.unwrap()
}

async fn click(b: &Client, css: &str) {
    element(b, css).await.click().await.unwrap();
}

/// Waits until the browser's address contains `want` (a submitted form
/// navigates after the click returns).
async fn until_url(b: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.current_url().await.unwrap().as_str().contains(want) {
        assert!(
            Instant::now() < deadline,
            "the browser did not reach {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element `css` shows `want` (htmx may swap it while it
/// is read: a stale element is read again).
async fn until_text(b: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = match b.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` shows {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test]
async fn an_operator_signs_in_filters_opens_a_timeline_retries_a_group_and_acknowledges_an_alert(
    pool: PgPool,
) {
    let Some((_driver, b)) = browser().await else {
        return;
    };
    let c = Console::start(pool.clone()).await;
    let base = &c.base;

    // Sign in: the console sends an anonymous visitor to the form.
    b.goto(&format!("{base}/ui/executions")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/ui/login"));
    shot(&b, "01-sign-in").await;
    b.find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(&c.api.key)
        .await
        .unwrap();
    click(&b, "form button[type=submit]").await;
    until_url(&b, "/ui/executions").await;
    assert_eq!(
        text(&b, "main h1").await,
        "Executions",
        "back where the visitor was going"
    );
    let cookies = b.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "flowpilot_session")
        .unwrap();
    assert_eq!(session.http_only(), Some(true));
    let js_sees: Json = b.execute("return document.cookie;", vec![]).await.unwrap();
    assert!(
        !js_sees.as_str().unwrap().contains("flowpilot_session"),
        "HttpOnly: {js_sees}"
    );

    // Overview: counts by status and the throughput chart (drawn by uPlot).
    b.goto(&format!("{base}/ui/")).await.unwrap();
    let cards = text(&b, ".cards").await;
    assert!(cards.contains(&format!("{FAILED}\nFAILED")), "{cards}");
    assert!(cards.contains("1\nWAITING"), "{cards}");
    assert!(
        cards.contains(&format!("{COMPLETED}\nCOMPLETED")),
        "{cards}"
    );
    b.wait()
        .for_element(Locator::Css(".chart canvas"))
        .await
        .unwrap();
    shot(&b, "02-overview").await;
    // Keyboard: the first Tab lands on the skip link to the content.
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("\u{e004}")
        .await
        .unwrap();
    assert_eq!(
        b.active_element().await.unwrap().text().await.unwrap(),
        "Skip to content"
    );
    let firing = text(&b, "#alerts + ul").await;
    assert!(
        firing.contains("firing") && firing.contains("failed"),
        "{firing}"
    );

    // Executions: filter FAILED with the form.
    b.goto(&format!("{base}/ui/executions")).await.unwrap();
    click(&b, "select[name=status] option[value=FAILED]").await;
    click(&b, "form.filters button[type=submit]").await;
    until_url(&b, "status=FAILED").await;
    let rows = b
        .find_all(Locator::Css("#executions tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), FAILED);
    for r in &rows {
        assert!(r.text().await.unwrap().contains("FAILED"));
    }
    assert!(
        text(&b, "main p.muted")
            .await
            .starts_with(&format!("{FAILED} match"))
    );
    shot(&b, "03-executions-failed").await;

    // A timeline: the hostile contact's execution, its attribute as text.
    click(
        &b,
        &format!("a[href='/ui/executions/{}']", c.hostile_execution),
    )
    .await;
    let timeline = text(&b, "ol.timeline").await;
    assert!(
        timeline.contains("tag") && timeline.contains("crm"),
        "{timeline}"
    );
    assert!(
        timeline.contains(&format!("{}:1:1", c.hostile_execution)),
        "idempotency key: {timeline}"
    );
    assert!(timeline.contains("permanent"), "{timeline}");
    let pwned: Json = b
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true), "the attribute ran as script");
    let attributes = text(&b, "dd pre.json").await;
    assert!(
        attributes.contains("<script>window.__pwned = 1</script><img src=x"),
        "{attributes}"
    );
    shot(&b, "04-timeline").await;

    // Workflows: the graph and the funnel.
    b.goto(&format!("{base}/ui/workflows/{}", c.failing))
        .await
        .unwrap();
    assert_eq!(
        b.find_all(Locator::Css("svg.graph rect.webhook"))
            .await
            .unwrap()
            .len(),
        1
    );
    let funnel = text(&b, "main table").await;
    assert!(funnel.contains("crm"), "{funnel}");
    shot(&b, "05-workflow").await;

    // Failures: the group, a dry run, then the retry and its progress.
    b.goto(&format!("{base}/ui/failures")).await.unwrap();
    let groups = text(&b, "#groups tbody").await;
    assert!(
        groups.contains("permanent") && groups.contains("crm"),
        "{groups}"
    );
    shot(&b, "06-failures").await;
    click(&b, "#groups tbody tr form:first-of-type button").await;
    assert_eq!(text(&b, "#dry-run-count").await, FAILED.to_string());
    let (_, still) = c.api.get("/api/v1/executions?status=FAILED").await;
    assert_eq!(still["count"]["value"], FAILED, "a dry run changes nothing");
    shot(&b, "07-bulk-retry-dry-run").await;
    click(&b, "#confirm").await;
    until_text(&b, "#progress", "completed").await;
    assert_eq!(text(&b, "#done").await, FAILED.to_string());
    shot(&b, "08-operation").await;

    // Alerts: acknowledge the firing one.
    b.goto(&format!("{base}/ui/alerts")).await.unwrap();
    shot(&b, "09-alerts").await;
    click(&b, "#alerts tbody form button").await;
    until_text(&b, "#alerts tbody", "acknowledged").await;
    let (_, firing) = c.api.get("/api/v1/alerts?state=firing").await;
    assert!(firing["items"].as_array().unwrap().is_empty(), "{firing}");

    // On a phone: the overview still reads.
    b.set_window_size(390, 844).await.unwrap();
    b.goto(&format!("{base}/ui/")).await.unwrap();
    let overflow: Json = b
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(true),
        "the overview scrolls sideways on a phone"
    );
    let path = shot(&b, "10-overview-phone").await;
    eprintln!("screenshots in {}", path.parent().unwrap().display());
    b.close().await.unwrap();
    c.api.flow.stop().await;
}
