//! The Helm chart rendered the way Helm renders it and checked, without a
//! cluster or Helm: `tests/chart/render.go` executes the templates with
//! Go's text/template and the sprig library (Helm's template language,
//! from Debian's `golang-go` and `golang-github-masterminds-sprig-dev`,
//! installed by `tests/support/services.sh tools`), for several value sets.
//! Every manifest validates with `kubernetes-validate --strict` against the
//! oldest and newest Kubernetes the chart supports, WorkerPools against
//! their CRD's schema, and the properties an operator would trip over are
//! asserted: duplicate env names, probes on ports nobody serves, Secrets
//! nobody renders, RBAC wider than one watched namespace, credentials in a
//! Helm hook (which `helm uninstall` leaves behind).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use flowpilot::crd::WorkerPool;
use kube::CustomResourceExt;
use serde_json::Value as Json;

/// Oldest and newest Kubernetes the chart supports (README, Kubernetes).
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
/// Kinds from CRDs that `kubernetes-validate` has no schema for.
const CRD_KINDS: [&str; 4] = [
    "WorkerPool",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
];
const URLS: [&str; 2] = [
    "database.url=postgres://flowpilot:s3cret@db:5432/flowpilot",
    "redis.url=redis://redis:6379/0",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The renderer, built once per test run.
fn renderer() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart");
        std::fs::create_dir_all(&dir).unwrap();
        let tool = dir.join("render");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&tool)
            .arg(root().join("tests/chart/render.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", dir.join("gocache"))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "go: {e}: run `tests/support/services.sh tools` (installs golang-go and sprig)"
                )
            });
        assert!(
            out.status.success(),
            "building the renderer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tool
    })
}

/// One value set: a name for messages and the `-set` arguments.
struct Case {
    name: &'static str,
    sets: Vec<String>,
}

fn cases() -> Vec<Case> {
    let with_urls = |more: &[&str]| -> Vec<String> {
        URLS.iter().chain(more).map(|s| (*s).to_owned()).collect()
    };
    vec![
        Case {
            name: "defaults with URLs",
            sets: with_urls(&[]),
        },
        Case {
            name: "existingSecret",
            sets: vec!["existingSecret=flowpilot-credentials".into()],
        },
        Case {
            name: "watchNamespace",
            sets: with_urls(&["controller.watchNamespace=crm"]),
        },
        Case {
            name: "API off",
            sets: with_urls(&["api.enabled=false"]),
        },
        Case {
            name: "monitoring on",
            sets: with_urls(&[
                "serviceMonitor.enabled=true",
                "prometheusRule.enabled=true",
                "grafanaDashboard.enabled=true",
            ]),
        },
        Case {
            name: "a Python arq pool",
            sets: with_urls(&[
                "pythonPool.enabled=true",
                "pythonPool.image=registry.example.com/crm-workers:1.4.2",
            ]),
        },
    ]
}

/// The manifests of `case`, rendered as release `demo` in `crm-system`.
fn render(case: &Case) -> (String, Vec<Json>) {
    let mut cmd = Command::new(renderer());
    cmd.args(["-chart"])
        .arg(root().join("charts/flowpilot"))
        .args(["-name", "demo", "-namespace", "crm-system"]);
    for s in &case.sets {
        cmd.args(["-set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect();
    (text, docs)
}

fn kind(doc: &Json) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Json) -> String {
    format!(
        "{} {}",
        kind(doc),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Every pod template's containers and init containers, by resource.
fn containers(doc: &Json) -> Vec<&Json> {
    let spec = match kind(doc) {
        "Deployment" | "Job" | "StatefulSet" | "DaemonSet" => &doc["spec"]["template"]["spec"],
        _ => return Vec::new(),
    };
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

/// A tool of the project's Python virtualenv (`tests/support/python.sh`).
fn python_tool(name: &str) -> PathBuf {
    let python = std::env::var("FLOWPILOT_TEST_PYTHON").expect("run `make test`");
    Path::new(&python).with_file_name(name)
}

/// `kubernetes-validate --strict` of `file` for Kubernetes `version`:
/// whether it passed, and what it said.
fn kube_validate(file: &Path, version: &str) -> (bool, String) {
    let out = Command::new(python_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn every_value_set_renders_and_validates_for_the_oldest_and_newest_kubernetes() {
    let pool_schema = serde_json::to_value(
        WorkerPool::crd().spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let pool_validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&pool_schema)
        .unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, case) in cases().iter().enumerate() {
        let (text, docs) = render(case);
        let file = dir.join(format!("case-{i}.yaml"));
        std::fs::write(&file, &text).unwrap();
        for version in KUBE_VERSIONS {
            let (passed, said) = kube_validate(&file, version);
            assert!(passed, "{} on {version}: {said}", case.name);
            for line in said.lines().filter(|l| l.starts_with("WARN")) {
                assert!(
                    CRD_KINDS
                        .iter()
                        .any(|k| line.contains(&format!("kind {k} "))),
                    "{} on {version}: {line}",
                    case.name
                );
            }
        }
        for pool in docs.iter().filter(|d| kind(d) == "WorkerPool") {
            let errors: Vec<String> = pool_validator
                .iter_errors(pool)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{}: {}: {errors:?}",
                case.name,
                name(pool)
            );
        }
        assert!(docs.len() >= 5, "{}: {} manifests", case.name, docs.len());
        if case.name == "a Python arq pool" {
            let python = docs
                .iter()
                .find(|d| {
                    kind(d) == "WorkerPool"
                        && d["spec"]["queues"] == serde_json::json!(["arq:queue"])
                })
                .unwrap_or_else(|| panic!("no WorkerPool on arq:queue: {text}"));
            assert_eq!(
                python["spec"]["image"], "registry.example.com/crm-workers:1.4.2",
                "{python}"
            );
            assert!(python["spec"]["command"].is_array(), "{python}");
        }
    }
}

#[test]
fn no_container_repeats_an_env_name_and_every_probe_hits_a_served_port() {
    for case in cases() {
        let (_, docs) = render(&case);
        for doc in &docs {
            for c in containers(doc) {
                let cname = c["name"].as_str().unwrap_or("?");
                let mut seen = BTreeSet::new();
                for e in c["env"].as_array().into_iter().flatten() {
                    let n = e["name"].as_str().unwrap();
                    assert!(
                        seen.insert(n),
                        "{}: {} container {cname} sets {n} twice",
                        case.name,
                        name(doc)
                    );
                }
                let ports: Vec<&Json> = c["ports"].as_array().into_iter().flatten().collect();
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    let Some(port) = c[probe]["httpGet"].get("port") else {
                        continue;
                    };
                    let served = ports.iter().any(|p| match port {
                        Json::String(s) => p["name"] == *s,
                        n => p["containerPort"] == *n,
                    });
                    assert!(
                        served,
                        "{}: {} container {cname}: {probe} on {port}, not among its ports",
                        case.name,
                        name(doc)
                    );
                }
            }
        }
    }
}

#[test]
fn every_secret_a_pod_reads_is_rendered_or_named_by_the_user_and_none_is_a_hook() {
    for case in cases() {
        let (_, docs) = render(&case);
        let rendered: BTreeSet<(String, String)> = docs
            .iter()
            .map(|d| {
                (
                    kind(d).to_owned(),
                    d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let user_secret = case
            .sets
            .iter()
            .find_map(|s| s.strip_prefix("existingSecret="))
            .map(str::to_owned);
        for doc in &docs {
            let mut wanted: Vec<(&str, String)> = Vec::new();
            for c in containers(doc) {
                for from in c["envFrom"].as_array().into_iter().flatten() {
                    if let Some(n) = from["secretRef"]["name"].as_str() {
                        wanted.push(("Secret", n.to_owned()));
                    }
                    if let Some(n) = from["configMapRef"]["name"].as_str() {
                        wanted.push(("ConfigMap", n.to_owned()));
                    }
                }
                for e in c["env"].as_array().into_iter().flatten() {
                    if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                        wanted.push(("Secret", n.to_owned()));
                    }
                }
            }
            if kind(doc) == "WorkerPool"
                && let Some(n) = doc["spec"]["secretName"].as_str()
            {
                wanted.push(("Secret", n.to_owned()));
            }
            for (k, n) in wanted {
                let ok = rendered.contains(&(k.to_owned(), n.clone()))
                    || (k == "Secret" && user_secret.as_deref() == Some(n.as_str()));
                assert!(
                    ok,
                    "{}: {} reads {k} {n}, which nothing renders",
                    case.name,
                    name(doc)
                );
            }
            let hook = doc["metadata"]["annotations"].get("helm.sh/hook").is_some();
            assert!(
                !(hook && kind(doc) == "Secret"),
                "{}: {} holds credentials in a hook, which `helm uninstall` leaves behind",
                case.name,
                name(doc)
            );
        }
    }
}

#[test]
fn rbac_is_namespaced_when_one_namespace_is_watched() {
    let by_kind = |case: &Case| -> BTreeMap<String, Vec<Json>> {
        let mut m: BTreeMap<String, Vec<Json>> = BTreeMap::new();
        for d in render(case).1 {
            m.entry(kind(&d).to_owned()).or_default().push(d);
        }
        m
    };
    let cases = cases();
    let all = by_kind(&cases[0]);
    assert_eq!(all.get("ClusterRole").map(Vec::len), Some(1), "{all:?}");
    let one = by_kind(&cases[2]);
    assert!(
        !one.contains_key("ClusterRole") && !one.contains_key("ClusterRoleBinding"),
        "watching one namespace needs no cluster-wide grant: {:?}",
        one.get("ClusterRole")
    );
    let roles = &one["Role"];
    let watched: Vec<&Json> = roles
        .iter()
        .filter(|r| r["metadata"]["namespace"] == "crm")
        .collect();
    assert_eq!(
        watched.len(),
        1,
        "a Role in the watched namespace: {roles:?}"
    );
    // The same rules as the ClusterRole, in that namespace only.
    assert_eq!(watched[0]["rules"], all["ClusterRole"][0]["rules"]);
    let bindings = &one["RoleBinding"];
    assert!(
        bindings.iter().any(|b| b["metadata"]["namespace"] == "crm"
            && b["subjects"][0]["namespace"] == "crm-system"),
        "the watched namespace's Role bound to the controller's account: {bindings:?}"
    );
}

#[test]
fn the_workflows_follow_the_actions_schema_and_build_the_image_the_chart_names() {
    let check = python_tool("check-jsonschema");
    let run = |files: &[PathBuf]| {
        Command::new(&check)
            .args(["--builtin-schema", "vendor.github-workflows"])
            .args(files)
            .output()
            .unwrap()
    };
    let workflows: Vec<PathBuf> = ["release.yml", "e2e.yml"]
        .iter()
        .map(|f| root().join(".github/workflows").join(f))
        .collect();
    let out = run(&workflows);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a job without `runs-on` is refused.
    let broken = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broken-release.yml");
    let text = std::fs::read_to_string(&workflows[0]).unwrap();
    std::fs::write(&broken, text.replace("runs-on: ubuntu-latest", "")).unwrap();
    assert!(!run(&[broken]).status.success());

    // The release pushes ghcr.io/<owner>/flowpilot:<tag>; the chart pulls
    // that repository at v<appVersion>; the e2e script builds the root
    // Dockerfile, release build from the lock file, as a non-root user.
    let (_, docs) = render(&cases()[0]);
    let api = docs
        .iter()
        .find(|d| name(d) == "Deployment demo-flowpilot-api")
        .unwrap();
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/flowpilot/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let app = chart["appVersion"].as_str().unwrap();
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/flowpilot/flowpilot:v{app}")
    );
    assert!(
        text.contains("ghcr.io/${{ github.repository_owner }}/flowpilot:${{ github.ref_name }}")
    );
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for needed in [
        "cargo build --release --locked",
        "USER nonroot",
        "ENTRYPOINT",
    ] {
        assert!(
            dockerfile.contains(needed),
            "the Dockerfile lacks `{needed}`"
        );
    }
    let e2e = std::fs::read_to_string(root().join("tests/e2e/run.sh")).unwrap();
    assert!(
        e2e.contains(r#"-f "$ROOT/Dockerfile""#),
        "tests/e2e/run.sh builds another Dockerfile"
    );
}

/// Value paths of `values.yaml`: maps are walked into, except the
/// free-form ones a user fills in whole.
fn value_paths(v: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    const FREE_FORM: [&str; 7] = [
        "resources",
        "labels",
        "podSecurityContext",
        "securityContext",
        "nodeSelector",
        "affinity",
        "env",
    ];
    let Some(map) = v.as_mapping() else { return };
    for (k, val) in map {
        let key = k.as_str().unwrap();
        let path = format!("{prefix}{key}");
        match val.as_mapping() {
            Some(m) if !m.is_empty() && !FREE_FORM.contains(&key) => {
                value_paths(val, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

#[test]
fn the_chart_readme_lists_every_value_and_the_notes_say_how_to_begin() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/flowpilot/values.yaml")).unwrap(),
    )
    .unwrap();
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    assert!(paths.len() > 30, "{paths:?}");
    let readme = std::fs::read_to_string(root().join("charts/flowpilot/README.md")).unwrap();
    // A row may name several: `workerPool.minReplicas` / `maxReplicas`.
    let listed = |p: &str| {
        let (parent, leaf) = p.rsplit_once('.').unwrap_or(("", p));
        readme.contains(&format!("| `{p}`"))
            || readme.lines().any(|l| {
                l.starts_with("| `")
                    && l.split(" | ").next().is_some_and(|cell| {
                        cell.contains(&format!("`{parent}.")) && cell.contains(&format!("{leaf}`"))
                            || cell.contains(&format!("`{p}`"))
                    })
            })
    };
    let missing: Vec<&String> = paths.iter().filter(|p| !listed(p)).collect();
    assert!(
        missing.is_empty(),
        "charts/flowpilot/README.md does not list {missing:?}"
    );

    for (api, target) in [
        ("true", "demo-flowpilot-api"),
        ("false", "demo-flowpilot-controller"),
    ] {
        let out = Command::new(renderer())
            .args(["-chart"])
            .arg(root().join("charts/flowpilot"))
            .args(["-name", "demo", "-namespace", "crm-system", "-notes"])
            .args([
                "-set",
                URLS[0],
                "-set",
                URLS[1],
                "-set",
                &format!("api.enabled={api}"),
            ])
            .output()
            .unwrap();
        let notes = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            notes.contains(&format!("exec deploy/{target}"))
                && notes.contains("flowpilot apikey create"),
            "{notes}"
        );
    }
}

#[test]
fn the_deployments_the_controller_renders_for_the_example_pools_validate() {
    let mut docs = Vec::new();
    for file in ["workerpool.yaml", "python-arq-pool.yaml"] {
        let text = std::fs::read_to_string(root().join("examples").join(file)).unwrap();
        let mut pool: WorkerPool = serde_yaml::from_str(&text).unwrap();
        pool.metadata.namespace = Some("crm".into());
        pool.metadata.uid = Some("0b6d3c1e-5a3f-4c7e-9d2a-1f0e2d3c4b5a".into());
        let d = flowpilot::controller::worker_pool::deployment(
            &pool,
            2,
            "ghcr.io/flowpilot/flowpilot:v0.1.0",
        );
        let json = serde_json::to_value(&d).unwrap();
        for c in containers(&json) {
            let names: Vec<&str> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            let unique: BTreeSet<&str> = names.iter().copied().collect();
            assert_eq!(unique.len(), names.len(), "{file}: {names:?}");
        }
        docs.push(serde_yaml::to_string(&json).unwrap());
    }
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pool-deployments.yaml");
    std::fs::write(&file, docs.join("---\n")).unwrap();
    for version in KUBE_VERSIONS {
        let (passed, said) = kube_validate(&file, version);
        assert!(passed, "{version}: {said}");
        assert_eq!(said.matches("passed").count(), 2, "{said}");
    }
}
