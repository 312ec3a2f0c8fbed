//! `portcullis serve` as a process: ready only once listening, SIGHUP reloads the policy
//! (keeping the running one when the new file is bad), SIGTERM drains and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    listen: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(listen: u16, ops: u16, action: &str) -> String {
    format!(
        "rules: [{{name: all, images: [\"**\"], action: {action}}}]\nserver: {{listen: 127.0.0.1:{listen}, metricsListen: 127.0.0.1:{ops}}}\n"
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn start(path: &std::path::Path, listen: u16, ops: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, listen };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{ops}/readyz")).await {
            if r.status() == 200 {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "portcullis serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn allowed(s: &Server) -> bool {
    let body = r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{},"spec":{"containers":[{"image":"nginx"}],"namespace":"ns"},"status":{"allowed":false}}"#;
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/imagepolicy", s.listen))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap().contains(r#""allowed":true"#)
}

/// Polls until the answer flips (a reload is asynchronous); bounded, not timed.
async fn until_allowed(s: &Server, want: bool) {
    for _ in 0..100 {
        if allowed(s).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the answer never became allowed={want}");
}

#[tokio::test]
async fn sighup_reloads_the_policy_and_keeps_it_when_the_new_file_is_bad() {
    let (listen, ops) = (common::free_port(), common::free_port());
    let (_dir, path) = common::write_config(&config(listen, ops, "deny"));
    let s = start(&path, listen, ops).await;
    assert!(!allowed(&s).await);
    std::fs::write(&path, config(listen, ops, "allow")).unwrap();
    signal(&s.child, "-HUP");
    until_allowed(&s, true).await;
    // A broken file: the running policy stays.
    std::fs::write(
        &path,
        "rules: [{name: x, images: [\"**\"], action: maybe}]\n",
    )
    .unwrap();
    signal(&s.child, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(allowed(&s).await);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let (listen, ops) = (common::free_port(), common::free_port());
    let (_dir, path) = common::write_config(&config(listen, ops, "allow"));
    let mut s = start(&path, listen, ops).await;
    assert!(allowed(&s).await);
    signal(&s.child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "portcullis did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let listen = common::free_port();
    let (_dir, path) = common::write_config(&format!(
        "rules: [{{name: x, images: [\"**\"]}}]\nserver: {{listen: 127.0.0.1:{listen}}}\n"
    ));
    let o = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("rules[0].action"));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", listen)).is_ok(),
        "the port was never bound"
    );
}
