//! Codec round trips and payload decoding.

use super::*;

fn job() -> Job {
    Job {
        function: "echo".into(),
        args: vec![Value::str("a"), Value::Int(1)],
        kwargs: vec![("x".into(), Value::Bool(true))],
        job_try: None,
        enqueue_time_ms: 1_700_000_000_000,
    }
}

#[test]
fn a_job_round_trips_through_every_serializer() {
    for s in [Serializer::Pickle, Serializer::Json, Serializer::Msgpack] {
        let bytes = job().encode(s).unwrap();
        assert_eq!(Serializer::detect(&bytes), s);
        assert_eq!(Job::decode(&bytes).unwrap(), job(), "{s}");
    }
}

#[test]
fn an_exception_result_falls_back_to_arqs_string_outside_pickle() {
    let r = JobResult {
        job: job(),
        success: false,
        result: Value::exception("builtins.ValueError", "boom"),
        start_ms: 1,
        finish_ms: 2,
        queue: Some("arq:queue".into()),
        job_id: Some("j".into()),
    };
    let back = JobResult::decode(&r.encode(Serializer::Json).unwrap()).unwrap();
    assert_eq!(back.result, Value::str(UNSERIALIZABLE_RESULT));
    assert!(!back.success);
    let back = JobResult::decode(&r.encode(Serializer::Pickle).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_payload_without_a_function_name_names_the_missing_field() {
    let bytes = Serializer::Json.encode(&Value::Dict(vec![])).unwrap();
    assert_eq!(
        Job::decode(&bytes),
        Err(Error::Shape {
            field: "f",
            problem: "missing"
        })
    );
    assert!(matches!(
        Job::decode(b"\x80\x04garbage"),
        Err(Error::Pickle(_))
    ));
}
