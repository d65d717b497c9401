//! The alerting rules the chart ships (`charts/flowpilot/rules/`), as
//! Prometheus's own tool reads them: `promtool check rules` passes,
//! `promtool test rules` proves each alert fires and resolves on series
//! (`tests/rules/flowpilot.test.yaml`), every alert has a test and a
//! runbook, and every metric a rule or the Grafana dashboard
//! (`charts/flowpilot/dashboards/`) reads is one flowpilot exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const RULES: &str = "charts/flowpilot/rules/flowpilot.rules.yaml";
const TESTS: &str = "tests/rules/flowpilot.test.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; `make test` installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

fn alerts() -> Vec<(String, String, String)> {
    let rules = yaml(RULES);
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
                r["annotations"]["runbook_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every source file under `src/`, concatenated.
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut sources = String::new();
    walk(&root().join("src"), &mut sources);
    sources
}

#[test]
fn promtool_checks_the_rules_and_every_alert_fires_and_resolves_in_its_test() {
    let checked = promtool(&["check", "rules", RULES], root());
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(
        &["test", "rules", "flowpilot.test.yaml"],
        &root().join("tests/rules"),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each alert is tested firing (some expected alert) and resolved (an
    // empty expectation after it).
    let tests = yaml(TESTS);
    for (alert, _, _) in alerts() {
        let cases: Vec<&serde_yaml::Value> = tests["tests"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
            .filter(|c| c["alertname"].as_str() == Some(alert.as_str()))
            .collect();
        let fired = |c: &&serde_yaml::Value| !c["exp_alerts"].as_sequence().unwrap().is_empty();
        let first_firing = cases.iter().position(&fired);
        assert!(first_firing.is_some(), "{alert}: no test makes it fire");
        assert!(
            cases[first_firing.unwrap()..].iter().any(|c| !fired(c)),
            "{alert}: no test sees it resolve"
        );
    }
}

#[test]
fn every_alert_links_its_runbook_and_reads_only_metrics_flowpilot_exports() {
    let sources = sources();
    for (alert, expr, runbook) in alerts() {
        let file = runbook
            .strip_prefix("RUNBOOK_BASE/")
            .unwrap_or_else(|| panic!("{alert}: runbook_url {runbook} is not under RUNBOOK_BASE/"));
        let page = std::fs::read_to_string(root().join("docs/runbooks").join(file))
            .unwrap_or_else(|e| panic!("{alert}: docs/runbooks/{file}: {e}"));
        assert!(page.contains(&alert), "{file} does not name {alert}");
        let metrics: BTreeSet<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("flowpilot_"))
            .collect();
        assert!(!metrics.is_empty(), "{alert} reads no flowpilot metric");
        for m in metrics {
            assert!(
                sources.contains(&format!("\"{m}\"")),
                "{alert} reads {m}, which no source file registers"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_parse_and_read_only_metrics_flowpilot_exports() {
    let path = root().join("charts/flowpilot/dashboards/flowpilot.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 12, "{} queries", exprs.len());
    // promtool parses PromQL in rule files: each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("flowpilot-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.rules.yaml"), rules).unwrap();
    let checked = promtool(&["check", "rules", "dashboard.rules.yaml"], &dir);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
    let sources = sources();
    for e in &exprs {
        for m in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("flowpilot_"))
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m);
            assert!(
                sources.contains(&format!("\"{family}\"")),
                "the dashboard reads {m}, which no source file registers"
            );
        }
    }
}
