//! The load test's baseline: the same TLS and HTTP stack as `portcullis serve` (rustls,
//! hyper-util, axum, `portcullis::server::serve`) answering every POST with a constant
//! allowed ImageReview. What `scripts/load.sh` compares the webhook against.
//!
//! `cargo run --release --example baseline -- ADDR CERT KEY`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::routing::post;

const ANSWER: &str = r#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","status":{"allowed":true}}"#;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = &args[..] else {
        panic!("usage: baseline ADDR CERT KEY");
    };
    let tls = portcullis::server::tls::load(&portcullis::config::TlsConfig {
        cert: cert.into(),
        key: key.into(),
        client_ca: None,
    })
    .unwrap();
    let router = axum::Router::new().route(
        "/imagepolicy",
        post(|_body: axum::body::Bytes| async { ([("content-type", "application/json")], ANSWER) }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(Arc::clone(&tls));
    portcullis::server::serve(listener, Some(rx), router, std::future::pending()).await;
}
