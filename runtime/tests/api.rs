//! The HTTP API without Docker: auth scopes, the error format, dry runs, the OpenAPI document.

mod common;

use berth_runtime::client::{Client, ClientError};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_contract() {
    let data = tempfile::tempdir().expect("tempdir");
    let running = start_server(data.path().to_path_buf()).await;
    let url = running.url();
    let user = Client::new(&url, Some(USER_TOKEN.into()));
    let anon = Client::new(&url, None);
    let agent = Client::new(&url, Some(AGENT_TOKEN.into()));

    // Unauthenticated: 401; wrong scope: 403; both in the one error format.
    match anon.get::<serde_json::Value>("/v1/jobs").await {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status, 401);
            assert_eq!(error.code, "unauthenticated");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    match agent.get::<serde_json::Value>("/v1/jobs").await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 403),
        other => panic!("expected 403, got {other:?}"),
    }

    // Bad input: 422 with the field path.
    let mut spec = batch("bad", 1, 100, 16, "true");
    spec["task"]["cpu_milli"] = serde_json::json!("lots");
    match user.post::<_, serde_json::Value>("/v1/jobs", &spec).await {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status, 422);
            assert_eq!(error.field.as_deref(), Some("task.cpu_milli"), "{error:?}");
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let mut no_image = batch("noimg", 1, 100, 16, "true");
    no_image
        .as_object_mut()
        .expect("object")
        .remove("container");
    match user
        .post::<_, serde_json::Value>("/v1/jobs", &no_image)
        .await
    {
        Err(ClientError::Api { error, .. }) => {
            assert_eq!(error.field.as_deref(), Some("container.image"))
        }
        other => panic!("expected 422, got {other:?}"),
    }

    // Dry run with no node: every task unplaced, nothing accepted.
    let plan: serde_json::Value = user
        .post("/v1/jobs?dry_run=true", &batch("dry", 3, 100, 16, "true"))
        .await
        .expect("dry run");
    assert_eq!(plan["unplaced"].as_array().map(Vec::len), Some(3), "{plan}");
    let jobs: Vec<serde_json::Value> = user.get("/v1/jobs").await.expect("list");
    assert!(jobs.is_empty(), "a dry run accepts nothing");

    // A job with nowhere to go is accepted and waits; explain says why.
    let r: serde_json::Value = user
        .post("/v1/jobs", &batch("waits", 2, 100, 16, "true"))
        .await
        .expect("submit");
    let id = r["id"].as_u64().expect("id");
    let e: serde_json::Value = user
        .get(&format!("/v1/explain/job-{id}"))
        .await
        .expect("explain");
    assert_eq!(e["pending_tasks"], 2, "{e}");
    let tasks: Vec<serde_json::Value> = user
        .get(&format!("/v1/tasks?job={id}"))
        .await
        .expect("tasks");
    assert!(tasks.iter().all(|t| t["state"] == "accepted"), "{tasks:?}");
    match user.get::<serde_json::Value>("/v1/jobs/999").await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected 404, got {other:?}"),
    }

    // Metrics and readiness need no token.
    let metrics = anon.get_text("/metrics").await.expect("metrics");
    assert!(metrics.contains("berth_queue_depth 2"), "{metrics}");
    assert!(metrics.contains("berth_launch_latency_seconds_bucket"));
    anon.get_text("/readyz").await.expect("ready");

    // The served OpenAPI document is the committed file, and every path in it is routed.
    let served = anon.get_text("/v1/openapi.json").await.expect("openapi");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("runtime/openapi.json");
    assert_eq!(served, committed);
    let doc: serde_json::Value = serde_json::from_str(&committed).expect("valid JSON");
    let http = reqwest::Client::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if path == "/v1/events" {
            continue; // a stream: never ends
        }
        for method in ops.as_object().expect("ops").keys() {
            let concrete = path.replace("{id}", "1").replace("{job}", "1");
            let req = match method.as_str() {
                "get" => http.get(format!("{url}{concrete}")),
                "post" => http.post(format!("{url}{concrete}")),
                m => panic!("unexpected method {m}"),
            };
            let status = req.send().await.expect("request").status().as_u16();
            assert!(
                status != 404 && status != 405 || path.contains('{'),
                "{method} {path} is documented but not routed ({status})"
            );
            if path.contains('{') {
                // Unauthenticated requests to routed paths are refused, not "no route".
                assert_eq!(status, 401, "{method} {path}");
            }
        }
    }
    running.shutdown(std::time::Duration::from_secs(2)).await;
}
