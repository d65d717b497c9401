//! The codec against the payloads Python arq itself produced
//! (`../shared/arq-vectors/`): every job and result payload in
//! `static_vectors.json` and in the `live_*.json` snapshots decodes to the
//! values recorded there, and our re-encoding reads back equal in Python.

mod common;

use std::path::PathBuf;

use base64::Engine;
use flowpilot::queue::codec::{self, Job, JobResult, Serializer};
use serde_json::{Value as Json, json};

fn vectors_dir() -> PathBuf {
    std::env::var_os("FLOWPILOT_ARQ_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/arq-vectors"),
        PathBuf::from,
    )
}

fn load(name: &str) -> Json {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared arq vectors sit beside the checkout, or set FLOWPILOT_ARQ_VECTORS)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// One recorded payload: where it came from, its serializer, bytes and the
/// value Python decoded from them.
struct Payload {
    name: String,
    serializer: Serializer,
    bytes: Vec<u8>,
    decoded: Json,
}

fn serializer(name: &str) -> Serializer {
    name.parse().unwrap()
}

fn static_payloads() -> Vec<Payload> {
    load("static_vectors.json")["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Payload {
            name: format!("static {} {}", v["serializer"], v["case"]),
            serializer: serializer(v["serializer"].as_str().unwrap()),
            bytes: b64(v["b64"].as_str().unwrap()),
            decoded: v["decoded"].clone(),
        })
        .collect()
}

/// Job and result payloads of every snapshot of the live runs.
fn live_payloads() -> Vec<Payload> {
    let mut out = Vec::new();
    for (file, ser) in [
        ("live_pickle.json", "pickle"),
        ("live_json.json", "json"),
        ("live_msgpack.json", "msgpack"),
        ("live_crash_recovery.json", "pickle"),
        ("quirk_keep_result_forever.json", "pickle"),
    ] {
        let doc = load(file);
        for snap in doc["snapshots"].as_array().unwrap() {
            for (key, entry) in snap["keys"].as_object().unwrap() {
                if !(key.starts_with("arq:job:") || key.starts_with("arq:result:")) {
                    continue;
                }
                out.push(Payload {
                    name: format!("{file} {} {key}", snap["label"]),
                    serializer: serializer(ser),
                    bytes: b64(entry["value_b64"].as_str().unwrap()),
                    decoded: entry["decoded"].clone(),
                });
            }
        }
    }
    out
}

fn all_payloads() -> Vec<Payload> {
    let mut all = static_payloads();
    all.extend(live_payloads());
    all
}

#[test]
fn every_recorded_payload_decodes_to_the_values_python_recorded() {
    let payloads = all_payloads();
    assert!(
        payloads.len() > 100,
        "only {} payloads found",
        payloads.len()
    );
    for p in &payloads {
        assert_eq!(
            codec::Serializer::detect(&p.bytes),
            p.serializer,
            "{}",
            p.name
        );
        let value = p
            .serializer
            .decode(&p.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(common::tagged(&value), p.decoded, "{}", p.name);
    }
}

#[test]
fn every_recorded_payload_parses_as_a_job_or_result() {
    for p in all_payloads() {
        let is_result = p.decoded.get("s").is_some();
        if is_result {
            let r = JobResult::decode(&p.bytes).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(json!(r.success), p.decoded["s"], "{}", p.name);
            assert_eq!(json!(r.start_ms), p.decoded["st"], "{}", p.name);
            assert_eq!(json!(r.job.function), p.decoded["f"], "{}", p.name);
        } else {
            let j = Job::decode(&p.bytes).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(json!(j.function), p.decoded["f"], "{}", p.name);
            assert_eq!(json!(j.enqueue_time_ms), p.decoded["et"], "{}", p.name);
            assert_eq!(json!(j.job_try), p.decoded["t"], "{}", p.name);
        }
    }
}

#[test]
fn pickle_vectors_use_only_opcodes_the_reader_was_checked_against() {
    // The vectors list the opcodes each pickle used; all of them decode
    // above, and this pins that protocol 4 (what arq writes) is among them.
    let statics = load("static_vectors.json");
    let protocols: Vec<_> = statics["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.get("pickle").map(|p| p["protocol"].as_i64().unwrap()))
        .collect();
    assert!(!protocols.is_empty() && protocols.iter().all(|p| *p == 4));
}

#[tokio::test]
async fn our_re_encoding_of_every_payload_reads_back_equal_in_python() {
    let mut cases = Vec::new();
    for p in all_payloads() {
        let value = p.serializer.decode(&p.bytes).unwrap();
        let ours = p
            .serializer
            .encode(&value)
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        cases.push(json!({
            "name": p.name,
            "serializer": p.serializer.to_string(),
            "b64": base64::engine::general_purpose::STANDARD.encode(&ours),
            "expected": p.decoded,
        }));
        // Re-encoding through the typed payloads must give the same values.
        let typed = if p.decoded.get("s").is_some() {
            JobResult::decode(&p.bytes)
                .unwrap()
                .encode(p.serializer)
                .unwrap()
        } else {
            Job::decode(&p.bytes).unwrap().encode(p.serializer).unwrap()
        };
        cases.push(json!({
            "name": format!("{} (typed)", p.name),
            "serializer": p.serializer.to_string(),
            "b64": base64::engine::general_purpose::STANDARD.encode(&typed),
            "expected": p.decoded,
        }));
    }
    let file = std::env::temp_dir().join(format!("{}.json", common::unique("reencoded")));
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let report = common::python_peer(&["check", "--file", file.to_str().unwrap()]).await;
    std::fs::remove_file(&file).ok();
    assert_eq!(report["checked"], json!(cases.len()));
    assert_eq!(
        report["mismatches"],
        json!([]),
        "Python read back different values"
    );
}
