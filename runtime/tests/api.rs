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

/// One raw request; the answer's status and its body as the one error format.
async fn raw(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if status >= 400 {
        assert_eq!(ctype, "application/json", "{status}: {text:?}");
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{status}: not the error format: {text:?}"
        );
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_4xx_is_the_error_format_with_the_field_path() {
    let data = tempfile::tempdir().expect("tempdir");
    let running = start_server(data.path().to_path_buf()).await;
    let url = running.url();
    let http = reqwest::Client::new();
    let user = |r: reqwest::RequestBuilder| r.bearer_auth(USER_TOKEN);
    let agent = |r: reqwest::RequestBuilder| r.bearer_auth(AGENT_TOKEN);
    let job = batch("ok", 1, 100, 16, "true").to_string();
    let check = |what: &str, got: (u16, serde_json::Value), status: u16, code: &str, field| {
        let (s, body) = got;
        assert_eq!(s, status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert_eq!(body["field"].as_str(), field, "{what}: {body}");
    };

    // Query strings: the parameter's name is the field.
    let r = raw(user(http.post(format!("{url}/v1/jobs?dry_run=maybe"))).body(job.clone())).await;
    check("dry_run=maybe", r, 400, "invalid_query", Some("dry_run"));
    let r = raw(user(http.get(format!("{url}/v1/jobs?stat=running")))).await;
    check("unknown parameter", r, 400, "invalid_query", Some("stat"));
    let r = raw(user(http.get(format!("{url}/v1/tasks?job=seven")))).await;
    check("job=seven", r, 400, "bad_request", Some("job"));
    let r = raw(agent(
        http.get(format!("{url}/v1/agent/commands?node=a&after=x")),
    ))
    .await;
    check("after=x", r, 400, "invalid_query", Some("after"));
    let r = raw(agent(http.get(format!("{url}/v1/agent/commands")))).await;
    check("no node", r, 400, "invalid_query", Some("node"));

    // Bodies: not JSON → 400; JSON of the wrong shape → 422 with the field path.
    let r = raw(user(http.post(format!("{url}/v1/jobs"))).body("{\"name\": ")).await;
    check("truncated JSON", r, 400, "invalid_json", None);
    let r = raw(user(http.post(format!("{url}/v1/jobs"))).body(vec![0xff, 0xfe])).await;
    check("not UTF-8", r, 400, "invalid_body", None);
    let r = raw(user(http.post(format!("{url}/v1/jobs/1/scale"))).body(r#"{"min": 1}"#)).await;
    check(
        "scale without desired",
        r,
        422,
        "invalid_body",
        Some("desired"),
    );
    let r = raw(user(http.post(format!("{url}/v1/jobs/1/scale"))).body("[")).await;
    check("scale, not JSON", r, 400, "invalid_json", None);
    let r = raw(agent(http.post(format!("{url}/v1/agent/heartbeat"))).body("{}")).await;
    check(
        "heartbeat without node",
        r,
        422,
        "invalid_body",
        Some("node"),
    );
    let r = raw(agent(http.post(format!("{url}/v1/agent/heartbeat"))).body("node=a")).await;
    check("heartbeat, not JSON", r, 400, "invalid_json", None);
    let mut no_size = batch("x", 1, 100, 16, "true");
    no_size["batch"] = serde_json::json!({});
    let r = raw(user(http.post(format!("{url}/v1/jobs"))).json(&no_size)).await;
    check(
        "batch without size",
        r,
        422,
        "invalid_spec",
        Some("batch.size"),
    );

    // Paths, routes, methods.
    let r = raw(user(http.get(format!("{url}/v1/jobs/%FF")))).await;
    assert_eq!(r.0, 400, "{}", r.1);
    let r = raw(user(http.get(format!("{url}/v1/jobs/job-x")))).await;
    check("job-x", r, 400, "bad_request", Some("id"));
    let r = raw(user(http.delete(format!("{url}/v1/jobs")))).await;
    check("DELETE /v1/jobs", r, 405, "method_not_allowed", None);
    let r = raw(user(http.get(format!("{url}/v1/nope")))).await;
    check("no route", r, 404, "not_found", None);

    // Registration: an unreachable URL and an impossible GPU count are refused by field.
    let reg = |url_: &str, gpus: serde_json::Value| {
        serde_json::json!({
            "name": "fake-gpu", "zone": "z", "instance_type": "t", "url": url_, "tasks": [],
            "capacity": {"cpu_milli": 4000, "mem_mib": 8192, "disk_mib": 0, "net_mbps": 0},
            "gpus": gpus,
        })
    };
    let t4 = |n: u32| serde_json::json!({"count": n, "model": "T4"});
    let r = raw(agent(http.post(format!("{url}/v1/agent/register")))
        .json(&reg("http://0.0.0.0:7071", t4(2))))
    .await;
    check("0.0.0.0", r, 400, "bad_request", Some("url"));
    let r = raw(agent(http.post(format!("{url}/v1/agent/register")))
        .json(&reg("http://127.0.0.1:9", t4(17))))
    .await;
    check("17 GPUs", r, 400, "bad_request", Some("gpus.count"));
    let r = raw(agent(http.post(format!("{url}/v1/agent/register")))
        .json(&reg("http://127.0.0.1:9", serde_json::json!({"count": 2}))))
    .await;
    check(
        "GPUs without a model",
        r,
        422,
        "invalid_body",
        Some("gpus.model"),
    );
    running.shutdown(std::time::Duration::from_secs(2)).await;
}

/// A node registered with 2 T4s gets GPU tasks with exact, distinct device ids in its launch
/// commands (the protocol side; `docker_e2e` checks the container side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_node_gets_gpu_tasks_with_exact_device_ids() {
    let data = tempfile::tempdir().expect("tempdir");
    let running = start_server(data.path().to_path_buf()).await;
    let url = running.url();
    let user = Client::new(&url, Some(USER_TOKEN.into()));
    let agent = Client::new(&url, Some(AGENT_TOKEN.into()));
    let register = |name: &str, gpus: Option<serde_json::Value>| {
        let mut r = serde_json::json!({
            "name": name, "zone": "z", "instance_type": "t", "url": "http://127.0.0.1:9",
            "tasks": [],
            "capacity": {"cpu_milli": 4000, "mem_mib": 8192, "disk_mib": 0, "net_mbps": 0},
        });
        if let Some(g) = gpus {
            r["gpus"] = g;
        }
        r
    };
    let _: serde_json::Value = agent
        .post("/v1/agent/register", &register("plain", None))
        .await
        .expect("register the CPU node");
    let node: serde_json::Value = agent
        .post(
            "/v1/agent/register",
            &register("gpu", Some(serde_json::json!({"count": 2, "model": "T4"}))),
        )
        .await
        .expect("register the GPU node");
    let mut spec = batch("train", 2, 100, 16, "true");
    spec["task"]["gpu"] = serde_json::json!({"whole": 1});
    spec["task"]["gpu_models"] = serde_json::json!(["T4"]);

    // Three such tasks do not fit: the dry run says the third lacks a GPU.
    let mut three = spec.clone();
    three["batch"]["size"] = serde_json::json!(3);
    let plan: serde_json::Value = user
        .post("/v1/jobs?dry_run=true", &three)
        .await
        .expect("dry run");
    assert_eq!(
        plan["placements"].as_array().map(Vec::len),
        Some(2),
        "{plan}"
    );
    assert!(
        plan["placements"]
            .as_array()
            .expect("placements")
            .iter()
            .all(|p| p["node"] == "gpu"),
        "{plan}"
    );
    assert!(
        plan["unplaced"][0]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("gpu"),
        "{plan}"
    );

    let _: serde_json::Value = user.post("/v1/jobs", &spec).await.expect("submit");
    let batch: serde_json::Value = agent
        .get("/v1/agent/commands?node=gpu&after=0")
        .await
        .expect("poll");
    let mut devices: Vec<Vec<u64>> = batch["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|c| c[1]["command"] == "launch")
        .map(|c| {
            c[1]["gpu_devices"]
                .as_array()
                .expect("gpu_devices")
                .iter()
                .filter_map(|d| d.as_u64())
                .collect()
        })
        .collect();
    devices.sort();
    assert_eq!(devices, vec![vec![0], vec![1]], "node {node}: {batch}");
    running.shutdown(std::time::Duration::from_secs(2)).await;
}
