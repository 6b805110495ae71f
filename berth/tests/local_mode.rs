//! `berth serve --local` as a user runs it: one command gives a control plane and an agent on
//! the local Docker engine, and the CLI (`berth job submit` on a TOML file, `berth job ls`,
//! `berth task ls`, `berth task logs`) runs a job on it. The real Docker engine: the test fails
//! without it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const IMAGE: &str = "local/berth-test:1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn berth(args: &[&str], conn: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(conn)
        .output()
        .expect("the berth binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// Polls `f` every 300 ms until it gives `Some`, or panics after `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Stops the server and removes what its agent left, whatever the test's outcome.
struct Local {
    server: Child,
    agent: String,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=berth.agent={}", self.agent),
            ])
            .output();
        if let Ok(ids) = ids {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        if let Ok(nets) = Command::new("docker")
            .args(["network", "ls", "--format", "{{.ID}} {{.Name}}"])
            .output()
        {
            for line in String::from_utf8_lossy(&nets.stdout).lines() {
                if let Some((id, net)) = line.split_once(' ') {
                    if net.starts_with(&format!("{}-job-", self.agent)) {
                        let _ = Command::new("docker").args(["network", "rm", id]).output();
                    }
                }
            }
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a file");
}

#[test]
fn serve_local_runs_a_toml_job_through_the_cli() {
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    assert!(
        image.is_ok_and(|o| o.status.success()),
        "this test needs the Docker engine and {IMAGE}: run scripts/test-image"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let agent = format!("lm{}", std::process::id());
    let server = Command::new(BIN)
        .args(["serve", "--local", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(&data)
        .args(["--agent-name", &agent, "--network-prefix", &agent])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log file"))
        .spawn()
        .expect("berth serve --local starts");
    let mut local = Local { server, agent };

    // The user token is generated into the data dir; the local agent registers by itself.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let token = wait_for(60, "the server healthy and its user token written", || {
        let healthy = http
            .get(format!("{url}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        let token = std::fs::read_to_string(data.join("user-token")).ok()?;
        healthy.then(|| token.trim().to_string())
    });
    wait_for(60, "the local agent connected", || {
        let m = http
            .get(format!("{url}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        m.lines()
            .any(|l| l == "berth_agents_connected 1")
            .then_some(())
    });
    let conn = ["--server", url.as_str(), "--token", token.as_str()];

    let job_toml = dir.path().join("hello.toml");
    write(
        &job_toml,
        &format!(
            r#"name = "hello"

[batch]
size = 2

[task]
cpu_milli = 100
mem_mib = 32

[container]
image = "{IMAGE}"
command = ["sh", "-c", "echo hello-from-berth-$((6 * 7))"]
"#
        ),
    );
    let out = ok(
        berth(&["job", "submit", job_toml.to_str().expect("path")], &conn),
        "berth job submit",
    );
    let job = out
        .split_whitespace()
        .next()
        .filter(|w| w.starts_with("job-"))
        .unwrap_or_else(|| panic!("submit prints the job id: {out:?}"))
        .to_string();

    // A TOML file with a mistake is refused with its field path, and nothing is submitted.
    let bad = dir.path().join("bad.toml");
    write(
        &bad,
        &std::fs::read_to_string(&job_toml)
            .expect("read")
            .replace("size = 2", "size = \"two\""),
    );
    let refused = berth(&["job", "submit", bad.to_str().expect("path")], &conn);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(err.contains("batch.size"), "{err}");

    let listed = wait_for(90, "the job completed in `berth job ls`", || {
        let ls = ok(berth(&["job", "ls"], &conn), "berth job ls");
        ls.lines()
            .any(|l| l.starts_with(&format!("{job} ")) && l.contains(" completed"))
            .then_some(ls)
    });
    assert_eq!(
        listed.lines().count(),
        2,
        "a header and the one job: {listed}"
    );
    let tasks = ok(
        berth(&["task", "ls", "--job", &job], &conn),
        "berth task ls",
    );
    let rows: Vec<&str> = tasks.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{tasks}");
    for r in &rows {
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols[1], job, "{r}");
        assert_eq!(&cols[4..6], ["finished", "normal"], "{r}");
        assert_eq!(cols.last(), Some(&"0"), "exit code 0: {r}");
    }
    let task = rows[0].split_whitespace().next().expect("task id");
    let log = ok(berth(&["task", "logs", task], &conn), "berth task logs");
    assert_eq!(log.trim(), "hello-from-berth-42");

    // SIGTERM: a graceful shutdown, exit status 0.
    let pid = local.server.id().to_string();
    ok(
        Command::new("kill")
            .args(["-TERM", &pid])
            .output()
            .expect("kill"),
        "kill -TERM",
    );
    let status = wait_for(30, "the server to exit", || {
        local.server.try_wait().expect("wait")
    });
    assert!(status.success(), "graceful shutdown: {status:?}");
}
