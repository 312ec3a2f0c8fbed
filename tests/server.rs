//! The webhook: ImageReviews posted as kube-apiserver posts them, in process (router) and over
//! a real TLS listener with certificates generated in the test (mTLS, HTTP/2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{pki, trusted_pub, RegistryOptions, TestRegistry};
use portcullis::engine::Engine;
use portcullis::server::{self, AppState};
use serde_json::Value;
use tower::ServiceExt as _;

const PATH: &str = "/imagepolicy";

/// The body kube-apiserver ≥ 1.33 sends, byte for byte.
fn review_body(images: &[&str], namespace: &str) -> String {
    let containers: Vec<String> = images
        .iter()
        .map(|i| format!(r#"{{"image":"{i}"}}"#))
        .collect();
    format!(
        r#"{{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{{}},"spec":{{"containers":[{}],"annotations":{{"x.image-policy.k8s.io/k":"v"}},"namespace":"{namespace}"}},"status":{{"allowed":false}}}}
"#,
        containers.join(",")
    )
}

struct Webhook {
    router: axum::Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn webhook(yaml: &str) -> Webhook {
    let (dir, path) = common::write_config(yaml);
    let config = portcullis::config::load(&path).unwrap();
    let metrics = Arc::new(portcullis::telemetry::Metrics::new());
    let engine = Arc::new(Engine::with_metrics(&config, Arc::clone(&metrics)).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(engine);
    std::mem::forget(_tx);
    let state = AppState::new(&config, rx, metrics);
    let router = server::router(
        state.clone(),
        &config.server.path,
        config.server.max_body_bytes,
    );
    Webhook {
        router,
        state,
        _dir: dir,
    }
}

fn policy(reg: &str, extra: &str) -> String {
    format!(
        "registries:\n  \"{reg}\": {{insecure: true}}\nrules:\n  - name: signed-only\n    images: [\"{reg}/**\"]\n    signatures: {{keys: [{:?}]}}\n{extra}",
        trusted_pub().display().to_string()
    )
}

impl Webhook {
    async fn post(&self, body: impl Into<Body>) -> (StatusCode, String) {
        let req = Request::post(PATH)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn review(&self, images: &[&str]) -> Value {
        let (status, body) = self.post(review_body(images, "default")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

#[tokio::test]
async fn signed_unsigned_and_mixed_pods_get_the_right_answer() {
    let reg = TestRegistry::starter().await;
    let w = webhook(&policy(&reg.addr, ""));
    let signed = format!("{}/starter/signed-cosign:v1", reg.addr);
    let unsigned = format!("{}/starter/unsigned:v1", reg.addr);

    let r = w.review(&[&signed]).await;
    assert_eq!(r["apiVersion"], "imagepolicy.k8s.io/v1alpha1");
    assert_eq!(r["kind"], "ImageReview");
    assert_eq!(r["status"]["allowed"], true, "{r}");
    assert!(r["status"]["auditAnnotations"]["image-0"]
        .as_str()
        .unwrap()
        .contains("sha256:8e6cba58"));

    let r = w.review(&[&unsigned]).await;
    assert_eq!(r["status"]["allowed"], false);
    let reason = r["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("starter/unsigned:v1") && reason.contains("no signatures found"),
        "{reason}"
    );

    let r = w.review(&[&signed, &unsigned]).await;
    assert_eq!(r["status"]["allowed"], false);
    let reason = r["status"]["reason"].as_str().unwrap();
    assert!(
        !reason.contains("signed-cosign"),
        "only denied images are listed: {reason}"
    );
    // Second time round, from cache.
    let a = &r["status"]["auditAnnotations"];
    assert!(a["image-0"].as_str().unwrap().ends_with("[cache]"), "{a}");
    assert!(a["image-1"].as_str().unwrap().ends_with("[cache]"), "{a}");
}

#[tokio::test]
async fn the_webhook_and_the_cli_engine_agree() {
    let reg = TestRegistry::starter().await;
    let yaml = policy(&reg.addr, "");
    let w = webhook(&yaml);
    let (_d, engine) = common::engine(&yaml);
    for f in common::starter_fixtures()["fixtures"].as_array().unwrap() {
        let image = reg.reference(f["digest_reference"].as_str().unwrap());
        let r = w.review(&[&image]).await;
        let v = engine.verify_image(&image, Some("default")).await;
        assert_eq!(r["status"]["allowed"], v.verdict.is_allowed(), "{image}");
        if !v.verdict.is_allowed() {
            assert!(r["status"]["reason"]
                .as_str()
                .unwrap()
                .contains(&v.explanation()));
        }
    }
}

#[tokio::test]
async fn accepts_old_metadata_and_empty_containers() {
    let w = webhook("rules: [{name: all, images: [\"**\"], action: allow}]\n");
    let old = r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[{"image":"nginx"},{}],"namespace":"ns"},"status":{"allowed":false}}"#;
    let (status, body) = w.post(old).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""allowed":true"#), "{body}");
    let minimal = r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1"}"#;
    let (status, body) = w.post(minimal).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn bad_input_gets_400_or_413_never_a_panic() {
    let w = webhook(
        "rules: [{name: all, images: [\"**\"], action: allow}]\nserver: {maxBodyBytes: 4096}\n",
    );
    for (body, want) in [
        ("not json".to_owned(), StatusCode::BAD_REQUEST),
        (r#"{"kind":"Pod","apiVersion":"v1"}"#.to_owned(), StatusCode::BAD_REQUEST),
        (r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1beta9"}"#.to_owned(), StatusCode::BAD_REQUEST),
        (r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":5}]}}"#.to_owned(), StatusCode::BAD_REQUEST),
        (r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":"#.to_owned(), StatusCode::BAD_REQUEST),
        (review_body(&["x"; 1], "ns").replace("\"x\"", &format!("\"{}\"", "a".repeat(5000))), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (status, text) = w.post(body).await;
        assert_eq!(status, want, "{text}");
        assert!(!text.is_empty());
    }
    // Odd references are denials, not errors.
    let r = w.review(&["UPPER/case", "a//b", "::", "x@sha256:1"]).await;
    assert_eq!(r["status"]["allowed"], false);
    assert!(r["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("invalid image reference"));
}

#[tokio::test]
async fn namespaces_reach_rule_matching_and_duplicates_verify_once() {
    let yaml = "rules:\n  - {name: payments-deny, images: [\"**\"], namespaces: [payments], action: deny}\n  - {name: rest, images: [\"**\"], action: allow}\n";
    let w = webhook(yaml);
    let (_, body) = w
        .post(review_body(&["nginx", "nginx", "nginx"], "payments"))
        .await;
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["status"]["allowed"], false);
    assert!(r["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("payments-deny"));
    assert!(
        r["status"]["auditAnnotations"].get("image-1").is_none(),
        "duplicates collapse: {r}"
    );
    let (_, body) = w.post(review_body(&["nginx"], "web")).await;
    assert!(body.contains(r#""allowed":true"#), "{body}");
}

#[tokio::test]
async fn break_glass_admits_only_where_the_rule_allows_it_and_is_audited() {
    let yaml = "rules:\n  - {name: glass, images: [\"g.io/**\"], action: deny, breakGlass: true}\n  - {name: strict, images: [\"**\"], action: deny}\n";
    let w = webhook(yaml);
    let body = |img: &str| {
        format!(
            r#"{{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{{}},"spec":{{"containers":[{{"image":"{img}"}}],"annotations":{{"alpha.image-policy.k8s.io/break-glass":"true"}},"namespace":"ns"}},"status":{{"allowed":false}}}}"#
        )
    };
    let (_, text) = w.post(body("g.io/app:1")).await;
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["status"]["allowed"], true, "{r}");
    assert_eq!(r["status"]["auditAnnotations"]["break-glass"], "rule glass");
    let (_, text) = w.post(body("other.io/app:1")).await;
    assert!(text.contains(r#""allowed":false"#), "{text}");
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let w = webhook(&format!(
        "rules: [{{name: all, images: [\"**\"], action: allow}}]\nserver: {{bearerTokenFile: {:?}}}\n",
        token.display().to_string()
    ));
    let (status, _) = w.post(review_body(&["nginx"], "ns")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = Request::post(PATH)
        .header("authorization", "Bearer s3cr3t-token")
        .body(Body::from(review_body(&["nginx"], "ns")))
        .unwrap();
    let resp = w.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn deny_ttl_expires_and_allow_ttl_holds() {
    let reg = TestRegistry::starter().await;
    let w = webhook(&policy(
        &reg.addr,
        "cache: {allowTTL: 1h, denyTTL: 300ms}\n",
    ));
    let signed = format!("{}/starter/signed-cosign:v1", reg.addr);
    let unsigned = format!("{}/starter/unsigned:v1", reg.addr);
    let source = |r: &Value| {
        let a = r["status"]["auditAnnotations"]["image-0"]
            .as_str()
            .unwrap()
            .to_owned();
        a.rsplit('[')
            .next()
            .unwrap()
            .trim_end_matches(']')
            .to_owned()
    };
    assert_eq!(source(&w.review(&[&signed]).await), "fresh");
    assert_eq!(source(&w.review(&[&unsigned]).await), "fresh");
    assert_eq!(source(&w.review(&[&unsigned]).await), "cache");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(source(&w.review(&[&unsigned]).await), "fresh");
    assert_eq!(source(&w.review(&[&signed]).await), "cache");
}

#[tokio::test]
async fn fifty_concurrent_reviews_of_one_uncached_image_fetch_its_signature_once() {
    let reg = TestRegistry::start(RegistryOptions {
        starter: true,
        access_log: true,
        ..Default::default()
    })
    .await;
    let w = Arc::new(webhook(&policy(&reg.addr, "")));
    let image = format!("{}/starter/signed-cosign:v1", reg.addr);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let w = Arc::clone(&w);
            let image = image.clone();
            tokio::spawn(async move { w.review(&[&image]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap()["status"]["allowed"], true);
    }
    // The registry's own access log is written asynchronously: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sig_tag = "sha256-8e6cba58cced9bc2ff1f761e3052122cab0205520c4b69267bcf8462cd6bbf23.sig";
    assert_eq!(reg.served(sig_tag), 1, "the .sig manifest is fetched once");
    assert_eq!(reg.served("/manifests/v1"), 1, "the tag is resolved once");
    assert_eq!(
        reg.served("/blobs/"),
        1,
        "the signature blob is fetched once"
    );
    let engine = w.state.engine.borrow().clone();
    assert_eq!(engine.registry().requests_made(), 3);
    let m = w.state.metrics.encode();
    assert!(
        m.contains(r#"portcullis_registry_requests_total{outcome="ok"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_verdict_cache_lookups_total{result="miss"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn transient_failures_are_not_cached_and_retry_mode_answers_500() {
    // A closed port: connection refused, a transient failure.
    let port = common::free_port();
    let reg = format!("127.0.0.1:{port}");
    let image = format!(
        "{reg}/app@sha256:8e6cba58cced9bc2ff1f761e3052122cab0205520c4b69267bcf8462cd6bbf23"
    );
    let w = webhook(&policy(&reg, ""));
    for _ in 0..2 {
        let r = w.review(&[&image]).await;
        assert_eq!(r["status"]["allowed"], false);
        assert!(
            r["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("registry unreachable"),
            "{r}"
        );
        assert!(
            r["status"]["auditAnnotations"]["image-0"]
                .as_str()
                .unwrap()
                .ends_with("[fresh]"),
            "{r}"
        );
    }
    let w = webhook(&policy(&reg, "server: {onTransientError: retry}\n"));
    let (status, text) = w.post(review_body(&[&image], "ns")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("registry unreachable"), "{text}");
}

#[tokio::test]
async fn metrics_and_readiness_are_served() {
    let w = webhook("rules: [{name: all, images: [\"**\"], action: allow}]\n");
    w.review(&["nginx"]).await;
    let ops = server::ops_router(w.state.clone());
    let get = |p: &'static str| {
        let ops = ops.clone();
        async move {
            let resp = ops
                .oneshot(Request::get(p).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&b).into_owned())
        }
    };
    assert_eq!(get("/livez").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    w.state
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (_, m) = get("/metrics").await;
    assert!(
        m.contains("portcullis_reviews_total{verdict=\"allowed\"} 1"),
        "{m}"
    );
    assert!(m.contains("portcullis_review_duration_seconds"), "{m}");
    assert!(m.contains("portcullis_registry_requests"), "{m}");
}

// --- A real TLS listener ---------------------------------------------------------------

struct TlsServer {
    addr: std::net::SocketAddr,
    ca: pki::Ca,
    stop: tokio::sync::watch::Sender<bool>,
    _w: Webhook,
}

async fn tls_server(client_ca: Option<&pki::Ca>) -> TlsServer {
    let ca = pki::Ca::new("portcullis test server CA");
    let leaf = ca.server();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let client_ca_path = client_ca.map(|c| {
        let p = dir.path().join("client-ca.crt");
        std::fs::write(&p, &c.cert_pem).unwrap();
        p
    });
    let tls = portcullis::server::tls::load(&portcullis::config::TlsConfig {
        cert,
        key,
        client_ca: client_ca_path,
    })
    .unwrap();
    let w = webhook("rules: [{name: all, images: [\"**\"], action: allow}]\n");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tls_tx, tls_rx) = tokio::sync::watch::channel(tls);
    std::mem::forget(_tls_tx);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let router = w.router.clone();
    tokio::spawn(server::serve(listener, Some(tls_rx), router, async move {
        let _ = stop_rx.changed().await;
    }));
    std::mem::forget(dir);
    TlsServer {
        addr,
        ca,
        stop,
        _w: w,
    }
}

fn client(server: &TlsServer, identity: Option<&pki::Leaf>, http2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder().tls_certs_only(
        reqwest::Certificate::from_pem_bundle(server.ca.cert_pem.as_bytes()).unwrap(),
    );
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    // HTTP/2 is negotiated by ALPN, as kube-apiserver does; otherwise HTTP/1.1 only.
    if !http2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn post_tls(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> Result<reqwest::Response, reqwest::Error> {
    c.post(format!(
        "https://localhost:{}{PATH}?timeout=30s",
        addr.port()
    ))
    .header("content-type", "application/json")
    .body(review_body(&["nginx"], "ns"))
    .send()
    .await
}

#[tokio::test]
async fn mtls_accepts_the_apiserver_client_cert_and_refuses_others() {
    let client_ca = pki::Ca::new("apiserver client CA");
    let s = tls_server(Some(&client_ca)).await;
    let good = client_ca.client("kube-apiserver");
    let resp = post_tls(&client(&s, Some(&good), false), s.addr)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#""allowed":true"#));
    // No client certificate.
    assert!(post_tls(&client(&s, None, false), s.addr).await.is_err());
    // A client certificate from another CA.
    let stranger = pki::Ca::new("other CA").client("kube-apiserver");
    assert!(post_tls(&client(&s, Some(&stranger), false), s.addr)
        .await
        .is_err());
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn serves_http2_and_http1_over_tls() {
    let s = tls_server(None).await;
    for http2 in [true, false] {
        let resp = post_tls(&client(&s, None, http2), s.addr).await.unwrap();
        assert_eq!(resp.status(), 200);
        let want = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
    }
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn warn_mode_admits_and_says_what_failed_in_reason_and_audit_annotations() {
    let reg = TestRegistry::starter().await;
    let yaml = policy(&reg.addr, "").replace(
        "  - name: signed-only\n",
        "  - name: signed-only\n    mode: warn\n",
    );
    let w = webhook(&yaml);
    let r = w
        .review(&[&format!("{}/starter/unsigned:v1", reg.addr)])
        .await;
    assert_eq!(r["status"]["allowed"], true, "{r}");
    let reason = r["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("warn mode") && reason.contains("no signatures found"),
        "{reason}"
    );
    let warning = r["status"]["auditAnnotations"]["warning"].as_str().unwrap();
    assert!(warning.contains("no-signatures"), "{warning}");
}
