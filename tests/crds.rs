//! The CRDs: the committed YAML is what `flowpilot crds` prints, it
//! validates offline against the Kubernetes API schema
//! (`kubernetes-validate`), and every file in `examples/` validates against
//! its CRD's openAPIV3Schema.

use std::path::{Path, PathBuf};

use flowpilot::crd::{self, WorkerPool, WorkflowExecution};
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::{Value as Json, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_crds_are_what_flowpilot_crds_prints() {
    let generated = crd::yaml().unwrap();
    for copy in [
        "crds/flowpilot.io.yaml",
        "charts/flowpilot/crds/flowpilot.io.yaml",
    ] {
        let committed = std::fs::read_to_string(root().join(copy)).unwrap();
        assert!(
            committed == generated,
            "{copy} drifted from the CRD types: run `cargo run -- crds > {copy}`"
        );
    }
}

#[test]
fn the_crds_validate_against_the_kubernetes_api_schema() {
    let python = std::env::var("FLOWPILOT_TEST_PYTHON").expect("run `make test`");
    let tool = Path::new(&python).with_file_name("kubernetes-validate");
    let out = std::process::Command::new(&tool)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(root().join("crds/flowpilot.io.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("passed").count(), 2, "{text}");
}

fn schema_of(kind: &str) -> Json {
    let crd = match kind {
        "WorkflowExecution" => WorkflowExecution::crd(),
        "WorkerPool" => WorkerPool::crd(),
        other => panic!("no CRD for kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

fn validator(kind: &str) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema_of(kind))
        .unwrap()
}

#[test]
fn every_example_validates_against_its_crd_schema() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Json =
                serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
            let kind = value["kind"].as_str().unwrap();
            assert_eq!(
                value["apiVersion"],
                json!("flowpilot.io/v1alpha1"),
                "{}",
                path.display()
            );
            let v = validator(kind);
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            // And it parses as the typed resource, passing the controller's checks.
            match kind {
                "WorkerPool" => {
                    let wp: WorkerPool = serde_json::from_value(value).unwrap();
                    flowpilot::controller::worker_pool::validate(&wp.spec).unwrap();
                }
                _ => {
                    let wfx: WorkflowExecution = serde_json::from_value(value).unwrap();
                    flowpilot::controller::workflow_execution::ids(&wfx.spec).unwrap();
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "examples checked: {checked}");
}

#[test]
fn the_schemas_reject_what_they_should() {
    let wp = validator("WorkerPool");
    let good = json!({"apiVersion": "flowpilot.io/v1alpha1", "kind": "WorkerPool", "metadata": {"name": "p"},
                      "spec": {"queues": ["q"], "maxReplicas": 3}});
    assert!(wp.is_valid(&good));
    for bad in [
        json!({"queues": [], "maxReplicas": 3}),
        json!({"queues": ["q"]}),
        json!({"queues": ["q"], "maxReplicas": 0}),
        json!({"queues": ["q"], "maxReplicas": 3, "mode": "Sometimes"}),
        json!({"queues": ["q"], "maxReplicas": 3, "tolerance": 2.0}),
    ] {
        let mut doc = good.clone();
        doc["spec"] = bad.clone();
        assert!(!wp.is_valid(&doc), "accepted {bad}");
    }
    let wfx = validator("WorkflowExecution");
    let doc = json!({"apiVersion": "flowpilot.io/v1alpha1", "kind": "WorkflowExecution", "metadata": {"name": "x"},
                     "spec": {"accountId": "a", "workflowId": "00000000-0000-0000-0000-000000000002",
                              "contactId": "00000000-0000-0000-0000-000000000003"}});
    assert!(!wfx.is_valid(&doc), "a malformed accountId is refused");
    // The invariant jsonschema cannot express is a CEL rule in the CRD.
    let rules = serde_json::to_string(&WorkerPool::crd()).unwrap();
    assert!(rules.contains("self.spec.minReplicas <= self.spec.maxReplicas"));
}

#[test]
fn the_charts_controller_role_grants_exactly_the_verbs_the_controller_uses() {
    // What the code does: watch (get/list/watch), finalizers and TTL on
    // executions, status patches, server-side apply of Deployments,
    // Events, and the Lease.
    let expected: std::collections::BTreeSet<(String, String, String)> = [
        (
            "flowpilot.io",
            "workflowexecutions",
            &["get", "list", "watch", "patch", "delete"][..],
        ),
        ("flowpilot.io", "workerpools", &["get", "list", "watch"]),
        ("flowpilot.io", "workflowexecutions/status", &["patch"]),
        ("flowpilot.io", "workerpools/status", &["patch"]),
        (
            "apps",
            "deployments",
            &["get", "list", "watch", "create", "patch"],
        ),
        ("events.k8s.io", "events", &["create", "patch"]),
        (
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        ),
    ]
    .iter()
    .flat_map(|(g, r, verbs)| {
        verbs
            .iter()
            .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
    })
    .collect();
    let text =
        std::fs::read_to_string(root().join("charts/flowpilot/templates/controller-rbac.yaml"))
            .unwrap();
    // Template lines only name and label things; the rules are plain YAML.
    let plain: String = text
        .lines()
        .filter(|l| !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&plain) {
        let doc: Json = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        granted.insert((
                            g.as_str().unwrap().to_owned(),
                            r.as_str().unwrap().to_owned(),
                            v.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(granted, expected);
}
