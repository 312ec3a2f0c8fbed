//! Benchmarks, each next to a baseline measured in the same run:
//!
//! - `signature/portcullis` — one cosign simple-signing check (sigstore-rs key verify + payload
//!   checks) on the real cosign 2.5 signature from the starter fixtures, against
//!   `signature/p256-raw`, a bare `p256` ECDSA verify of the same bytes (the floor).
//! - `cold/verify-signed-image` — a cold verification (fresh engine, empty caches) of
//!   `starter/signed-cosign:v1` against a real docker-registry on loopback, against
//!   `cold/one-manifest-get`, a single plain GET of the same image manifest. The number of
//!   registry requests per cold verification is printed.
//! - `warm/verify-signed-image` — the same image with the verdict cache warm.
//!
//! Run: `cargo bench --bench verify` (criterion prints the times; the ratios are in README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use portcullis::reference::Digest;
use portcullis::verify::{self, TrustedKey};

const IMAGE: &str = "sha256:8e6cba58cced9bc2ff1f761e3052122cab0205520c4b69267bcf8462cd6bbf23";

/// The cosign 2.5 signature of starter/signed-cosign, read from the running registry.
async fn starter_signature(reg: &common::TestRegistry) -> (Vec<u8>, String, Digest) {
    let accept = portcullis::registry::manifest::ACCEPT_MANIFESTS;
    let image = Digest::parse(IMAGE).unwrap();
    let m = reg
        .get(
            None,
            &format!(
                "/v2/starter/signed-cosign/manifests/{}",
                image.cosign_tag(".sig")
            ),
            accept,
        )
        .await;
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = &m["layers"][0];
    let sig = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = reg
        .get(
            None,
            &format!(
                "/v2/starter/signed-cosign/blobs/{}",
                layer["digest"].as_str().unwrap()
            ),
            "*/*",
        )
        .await;
    (payload, sig, image)
}

fn signature(c: &mut Criterion, rt: &tokio::runtime::Runtime, reg: &common::TestRegistry) {
    let (payload, sig, image) = rt.block_on(starter_signature(reg));
    let pem = std::fs::read(common::trusted_pub()).unwrap();
    let key = TrustedKey::from_pem("trusted.pub", &pem).unwrap();
    let keys = [key];
    assert!(matches!(
        verify::simple_signing(&payload, &sig, &image, &keys),
        verify::SignatureOutcome::Verified { .. }
    ));
    let raw_key =
        p256::ecdsa::VerifyingKey::from_public_key_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&sig)
        .unwrap();
    let raw_sig = p256::ecdsa::DerSignature::try_from(der.as_slice()).unwrap();
    let mut g = c.benchmark_group("signature");
    g.bench_function("p256-raw", |b| {
        b.iter(|| raw_key.verify(&payload, &raw_sig).is_ok())
    });
    g.bench_function("portcullis", |b| {
        b.iter(|| verify::simple_signing(&payload, &sig, &image, &keys))
    });
    g.finish();
}

fn cold(c: &mut Criterion, rt: &tokio::runtime::Runtime, reg: &common::TestRegistry) {
    let yaml = common::signed_only_config(&reg.addr, &[common::trusted_pub()]);
    let (dir, path) = common::write_config(&yaml);
    let config = portcullis::config::load(&path).unwrap();
    let image = format!("{}/starter/signed-cosign:v1", reg.addr);

    // Requests per cold verification.
    let engine = portcullis::engine::Engine::new(&config).unwrap();
    let v = rt.block_on(engine.verify_image(&image, None));
    assert!(v.verdict.is_allowed(), "{v}");
    eprintln!(
        "cold verification of {image}: {} registry requests",
        engine.registry().requests_made()
    );

    let http = reqwest::Client::new();
    let manifest_url = format!("http://{}/v2/starter/signed-cosign/manifests/v1", reg.addr);
    let mut g = c.benchmark_group("cold");
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("one-manifest-get", |b| {
        b.to_async(rt).iter(|| async {
            let r = http
                .get(&manifest_url)
                .header("accept", portcullis::registry::manifest::ACCEPT_MANIFESTS)
                .send()
                .await
                .unwrap();
            r.bytes().await.unwrap()
        })
    });
    g.bench_function("verify-signed-image", |b| {
        b.to_async(rt).iter_batched(
            || portcullis::engine::Engine::new(&config).unwrap(),
            |engine| {
                let image = image.clone();
                async move { engine.verify_image(&image, None).await.verdict.is_allowed() }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    // An image with a signature and three attestations (SLSA with a CEL condition, CycloneDX,
    // vuln), all made by cosign 2.5.
    let key = format!("{:?}", common::trusted_pub().display().to_string());
    let attested_yaml = format!(
        "registries: {{\"{r}\": {{insecure: true}}}}\nrules:\n  - name: attested\n    images: [\"{r}/**\"]\n    signatures: {{keys: [{key}]}}\n    attestations:\n      - {{name: provenance, predicateType: \"https://slsa.dev/provenance/v1\", authorities: [{{key: {key}}}], condition: 'predicate.runDetails.builder.id == \"https://ci.starter.example/builder@v1\"'}}\n      - {{name: sbom, predicateType: \"https://cyclonedx.org/bom\", authorities: [{{key: {key}}}]}}\n      - {{name: vuln, predicateType: \"https://cosign.sigstore.dev/attestation/vuln/v1\", authorities: [{{key: {key}}}]}}\n",
        r = reg.addr
    );
    let (adir, apath) = common::write_config(&attested_yaml);
    let aconfig = portcullis::config::load(&apath).unwrap();
    let attested = format!("{}/starter/attested:v1", reg.addr);
    let probe = portcullis::engine::Engine::new(&aconfig).unwrap();
    let v = rt.block_on(probe.verify_image(&attested, None));
    assert!(v.verdict.is_allowed(), "{v}");
    eprintln!(
        "cold verification of {attested} (signature + 3 attestations): {} registry requests",
        probe.registry().requests_made()
    );
    let mut g = c.benchmark_group("cold");
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("verify-attested-image", |b| {
        b.to_async(rt).iter_batched(
            || portcullis::engine::Engine::new(&aconfig).unwrap(),
            |engine| {
                let image = attested.clone();
                async move { engine.verify_image(&image, None).await.verdict.is_allowed() }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(adir);
    // The whole webhook handler in process (no TLS, no sockets): a cached signed image against
    // a rule that allows everything without I/O.
    let handler = |yaml: &str| {
        let (dir, path) = common::write_config(yaml);
        let config = portcullis::config::load(&path).unwrap();
        let metrics = std::sync::Arc::new(portcullis::telemetry::Metrics::new());
        let engine = std::sync::Arc::new(
            portcullis::engine::Engine::with_metrics(&config, std::sync::Arc::clone(&metrics))
                .unwrap(),
        );
        let (tx, rx) = tokio::sync::watch::channel(engine);
        std::mem::forget(tx);
        let state = portcullis::server::AppState::new(&config, rx, metrics);
        (
            dir,
            portcullis::server::router(state, "/imagepolicy", 1 << 20),
        )
    };
    let review = format!(
        r#"{{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{{}},"spec":{{"containers":[{{"image":"{image}"}}],"namespace":"default"}},"status":{{"allowed":false}}}}"#
    );
    let post = |router: axum::Router| {
        let review = review.clone();
        async move {
            use tower::ServiceExt as _;
            let req = axum::http::Request::post("/imagepolicy")
                .body(axum::body::Body::from(review))
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
        }
    };
    let (d1, verified) = handler(&yaml);
    let (d2, allow_all) = handler("rules: [{name: all, images: [\"**\"], action: allow}]\n");
    assert!(
        String::from_utf8_lossy(&rt.block_on(post(verified.clone()))).contains(r#""allowed":true"#)
    );
    let mut g = c.benchmark_group("handler");
    g.bench_function("allow-all-rule", |b| {
        b.to_async(rt).iter(|| post(allow_all.clone()))
    });
    g.bench_function("cached-signed-image", |b| {
        b.to_async(rt).iter(|| post(verified.clone()))
    });
    g.finish();
    drop((d1, d2));
    let mut g = c.benchmark_group("warm");
    g.bench_function("verify-signed-image", |b| {
        b.to_async(rt)
            .iter(|| async { engine.verify_image(&image, None).await.verdict.is_allowed() })
    });
    g.finish();
    drop(dir);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let reg = rt.block_on(common::TestRegistry::starter());
    signature(c, &rt, &reg);
    cold(c, &rt, &reg);
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
