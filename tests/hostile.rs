//! A hostile OCI registry, in process (axum on 127.0.0.1:0): bytes that do not match their
//! digest, a lying `Docker-Content-Digest`, oversized and endless bodies, 5xx and 429 answers,
//! schema 1, token auth and where credentials go. Every case must end in a denial that names
//! its cause: never an allow, a panic or a hang.
//!
//! Each test first publishes an honest, validly signed image on the fake registry, then makes
//! one thing lie, so that a denial can only come from the lie.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers of a test crate:
// here an unwrap is an assertion.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use common::pki;
use futures_util::{stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use portcullis::engine::Engine;
use portcullis::reference::Digest;
use portcullis::verdict::ImageVerdict;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Small limits for every test; tests that need others spell them out.
const LIMITS: &str = "connectTimeout: 1s, requestTimeout: 2s";
/// Registry settings of a plain-HTTP registry.
const PLAIN: &str = "insecure: true";

// ---------------------------------------------------------------------------------------------
// The fake registry: a table of path -> canned reply, a request log, optional token auth.

/// How a reply's body is sent.
#[derive(Clone)]
enum Sent {
    /// All at once, with a Content-Length.
    Whole(Bytes),
    /// Chunked, no Content-Length: 1 KiB chunks forever.
    EndlessChunks,
    /// Chunked: `{`, then one space every 100 ms, forever.
    Drip,
    /// Chunked: `{`, then nothing, the connection left open.
    Stall,
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Sent,
}

impl Reply {
    fn status(status: u16) -> Self {
        let body = Sent::Whole(Bytes::new());
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// 200 with `bytes`, their type, and a Docker-Content-Digest that is theirs.
    fn ok(bytes: &[u8], content_type: &str) -> Self {
        Self::status(200)
            .header("content-type", content_type)
            .header("docker-content-digest", &Digest::of(bytes).to_string())
            .body(Sent::Whole(Bytes::copy_from_slice(bytes)))
    }

    fn blob(bytes: &[u8]) -> Self {
        Self::ok(bytes, "application/octet-stream")
    }

    /// Sets (or replaces) a header.
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn body(self, body: Sent) -> Self {
        Self { body, ..self }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let chunk = |b: &'static [u8]| Ok::<_, Infallible>(Bytes::from_static(b));
        let open = move || stream::once(async move { chunk(b"{") });
        let body = match self.body {
            Sent::Whole(b) => Body::from(b),
            Sent::EndlessChunks => Body::from_stream(stream::repeat(chunk(&[b' '; 1024]))),
            Sent::Drip => {
                Body::from_stream(open().chain(stream::unfold((), move |()| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((chunk(b" "), ()))
                })))
            }
            Sent::Stall => Body::from_stream(open().chain(stream::pending())),
        };
        let mut resp = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            resp = resp.header(name, value);
        }
        resp.body(body).unwrap()
    }
}

/// One request as the fake registry saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Path and query.
    target: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Reply>>,
    /// `/v2/` answers 401 with this `WWW-Authenticate` unless sent `Bearer <token>`.
    gate: Mutex<Option<(String, String)>>,
    /// `/token` gives out this token for exactly this `Authorization: Basic` value only.
    issuer: Mutex<Option<(String, String)>>,
    seen: Mutex<Vec<Seen>>,
}

struct FakeRegistry {
    /// `127.0.0.1:<port>`
    addr: String,
    shared: Arc<Shared>,
}

impl FakeRegistry {
    /// Plain HTTP, or HTTPS with `tls` (hyper + rustls by hand: `axum::serve` has no TLS).
    async fn start(tls: Option<&pki::Leaf>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/token", get(token))
            .fallback(route)
            .with_state(Arc::clone(&shared));
        let Some(leaf) = tls else {
            tokio::spawn(async move { axum::serve(listener, app).await });
            return Self { addr, shared };
        };
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes());
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs.collect::<Result<_, _>>().unwrap(), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = TowerToHyperService::new(app);
                    let server = auto::Builder::new(TokioExecutor::new());
                    let _ = server.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { addr, shared }
    }

    fn on(&self, path: &str, reply: Reply) {
        let mut routes = self.shared.routes.lock().unwrap();
        routes.insert(path.to_owned(), reply);
    }

    fn manifest(&self, reference: &str, reply: Reply) {
        self.on(&format!("/v2/app/manifests/{reference}"), reply);
    }

    fn blob(&self, digest: &Digest, reply: Reply) {
        self.on(&format!("/v2/app/blobs/{digest}"), reply);
    }

    /// Demands `Bearer <token>` on `/v2/`, sending clients to `realm` for it.
    fn require_bearer(&self, realm: &str, token: &str) {
        let challenge =
            format!(r#"Bearer realm="{realm}",service="test",scope="repository:app:pull""#);
        *self.shared.gate.lock().unwrap() = Some((challenge, token.to_owned()));
    }

    fn issue_tokens(&self, basic: &str, token: &str) {
        *self.shared.issuer.lock().unwrap() = Some((basic.to_owned(), token.to_owned()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn requests_to(&self, infix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.contains(infix))
            .count()
    }
}

/// Logs the request; returns its Authorization header.
fn record(shared: &Shared, req: &Request) -> Option<String> {
    let authorization = req.headers().get(header::AUTHORIZATION);
    let authorization = authorization.map(|v| v.to_str().unwrap().to_owned());
    let target = req
        .uri()
        .path_and_query()
        .map_or("", |p| p.as_str())
        .to_owned();
    let seen = Seen {
        target,
        authorization: authorization.clone(),
    };
    shared.seen.lock().unwrap().push(seen);
    authorization
}

async fn route(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let authorization = record(&shared, &req);
    let gate = shared.gate.lock().unwrap().clone();
    if let Some((challenge, token)) = gate {
        let bearer = format!("Bearer {token}");
        if req.uri().path().starts_with("/v2/") && authorization != Some(bearer) {
            let reply = Reply::status(401).header("www-authenticate", &challenge);
            return reply.into_response();
        }
    }
    let reply = shared.routes.lock().unwrap().get(req.uri().path()).cloned();
    reply.unwrap_or_else(|| Reply::status(404)).into_response()
}

async fn token(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let authorization = record(&shared, &req);
    match shared.issuer.lock().unwrap().clone() {
        Some((basic, token)) if authorization.as_deref() == Some(basic.as_str()) => {
            let body = json!({ "token": token }).to_string();
            Reply::ok(body.as_bytes(), "application/json").into_response()
        }
        _ => Reply::status(401).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Images and cosign signatures.

/// A P-256 key whose public half is written to a PEM file, as cosign's `cosign.pub`.
struct Key {
    signing: SigningKey,
    pub_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Key {
    fn new() -> Self {
        let signing = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = signing
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF);
        let dir = tempfile::tempdir().unwrap();
        let pub_path = dir.path().join("cosign.pub");
        std::fs::write(&pub_path, pem.unwrap()).unwrap();
        Self {
            signing,
            pub_path,
            _dir: dir,
        }
    }

    /// Base64 DER ECDSA signature over the exact bytes, as in the cosign annotation.
    fn sign(&self, bytes: &[u8]) -> String {
        let sig: Signature = self.signing.sign(bytes);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// An OCI manifest; `name` makes it distinct, `pad` annotation bytes make it large.
fn oci_manifest(name: &str, layers: Vec<Value>, pad: usize) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","name":"{name}"}}"#);
    let config = json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": Digest::of(config.as_bytes()).to_string(),
        "size": config.len(),
    });
    let annotations = json!({ "pad": "x".repeat(pad) });
    json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config, "layers": layers, "annotations": annotations,
    })
    .to_string()
    .into_bytes()
}

fn image_manifest(name: &str) -> Vec<u8> {
    oci_manifest(name, Vec::new(), 0)
}

/// The cosign simple-signing payload for `digest`.
fn payload(identity: &str, digest: &Digest) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{identity}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// A `.sig` manifest: one simple-signing layer per (blob, signature).
fn sig_manifest(layers: &[(&[u8], String)]) -> Vec<u8> {
    let layer = |(blob, sig): &(&[u8], String)| {
        json!({
            "mediaType": SIMPLE_SIGNING,
            "digest": Digest::of(blob).to_string(),
            "size": blob.len(),
            "annotations": { "dev.cosignproject.cosign/signature": sig },
        })
    };
    oci_manifest("sig", layers.iter().map(layer).collect(), 0)
}

/// What [`publish`] put on the registry.
struct Published {
    digest: Digest,
    sig_tag: String,
    /// The first signature's payload.
    payload: Vec<u8>,
}

/// Honestly serves `app:<tag>` (also by digest) and its `.sig`, with one signature by each of
/// `signers`, each over its own payload (identity `a`, `b`, ...).
fn publish(reg: &FakeRegistry, tag: &str, signers: &[&Key]) -> Published {
    let manifest = image_manifest(tag);
    let digest = Digest::of(&manifest);
    reg.manifest(tag, Reply::ok(&manifest, OCI_MANIFEST));
    reg.manifest(&digest.to_string(), Reply::ok(&manifest, OCI_MANIFEST));
    let ids = ["a", "b", "c", "d"].iter().take(signers.len());
    let payloads: Vec<Vec<u8>> = ids.map(|id| payload(id, &digest)).collect();
    let mut layers = Vec::new();
    for (p, key) in payloads.iter().zip(signers) {
        reg.blob(&Digest::of(p), Reply::blob(p));
        layers.push((p.as_slice(), key.sign(p)));
    }
    let sig_tag = digest.cosign_tag(".sig");
    reg.manifest(&sig_tag, Reply::ok(&sig_manifest(&layers), OCI_MANIFEST));
    let payload = payloads.into_iter().next().unwrap_or_default();
    Published {
        digest,
        sig_tag,
        payload,
    }
}

// ---------------------------------------------------------------------------------------------
// Portcullis.

/// An engine trusting `key` for `addr/**`; `registry` and `limits` are YAML flow-map entries.
fn engine_for(addr: &str, key: &Key, registry: &str, limits: &str) -> (tempfile::TempDir, Engine) {
    common::engine(&format!(
        "registries:\n  \"{addr}\": {{{registry}}}\nlimits: {{{limits}}}\nserver: {{reviewTimeout: 5s}}\nrules:\n  - name: hostile\n    images: [\"{addr}/**\"]\n    signatures: {{keys: [{:?}]}}\ndefaultAction: deny\n",
        key.pub_path.display().to_string()
    ))
}

/// Verifies `image`; a watchdog far above every configured timeout turns a hang into a failure.
async fn verify(engine: &Engine, image: &str) -> ImageVerdict {
    tokio::time::timeout(Duration::from_secs(60), engine.verify_image(image, None))
        .await
        .unwrap_or_else(|_| panic!("verifying {image} hung"))
}

/// Verifies `addr/<image>` with a fresh engine; fails the test unless it is denied, and
/// returns the verdict and its reasons.
async fn deny(
    addr: &str,
    key: &Key,
    registry: &str,
    limits: &str,
    image: &str,
) -> (ImageVerdict, String) {
    let (_dir, engine) = engine_for(addr, key, registry, limits);
    let v = verify(&engine, &format!("{addr}/{image}")).await;
    assert!(!v.verdict.is_allowed(), "must be denied: {v}");
    let why = v.explanation();
    (v, why)
}

/// Asserts that the reasons say each of `parts`.
fn says(why: &str, parts: &[&str]) {
    for part in parts {
        assert!(why.contains(part), "reasons do not say {part:?}: {why}");
    }
}

const PASSWORD: &str = "s3cret-pw";

/// Credentials `u` / [`PASSWORD`]: the temp dir, YAML registry entries, the Basic header.
fn credentials() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let yaml = format!(
        "username: u, passwordFile: {:?}",
        file.display().to_string()
    );
    let raw = format!("u:{PASSWORD}");
    let basic = base64::engine::general_purpose::STANDARD.encode(raw);
    (dir, yaml, format!("Basic {basic}"))
}

/// Whether a request carried the password, plainly or in Basic.
fn leaks(s: &Seen, basic: &str) -> bool {
    s.target.contains(PASSWORD)
        || s.authorization
            .as_deref()
            .is_some_and(|a| a.contains(PASSWORD) || a == basic)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_registry_with_a_trusted_signature_is_allowed() {
    // The control: fake registry and signatures are right, so below only the lie can deny.
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let p = publish(&reg, "v1", &[&key]);
    let (_d, engine) = engine_for(&reg.addr, &key, PLAIN, LIMITS);
    let v = verify(&engine, &format!("{}/app:v1", reg.addr)).await;
    assert!(v.verdict.is_allowed(), "{v}");
    assert_eq!(v.digest, Some(p.digest.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_when_manifest_bytes_do_not_match_the_requested_digest() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let honest = publish(&reg, "v1", &[&key]);
    // Another image, validly signed too: trusting the bytes would verify *it* and allow.
    let evil = publish(&reg, "evil", &[&key]);
    let evil_bytes = Reply::ok(&image_manifest("evil"), OCI_MANIFEST);
    reg.manifest(&honest.digest.to_string(), evil_bytes);
    let image = format!("app@{}", honest.digest);
    let (_, why) = deny(&reg.addr, &key, PLAIN, LIMITS, &image).await;
    let expected = format!(
        "hashes to {}, not the requested {}",
        evil.digest, honest.digest
    );
    says(&why, &["bad response", &expected]);
    assert_eq!(reg.requests_to(".sig"), 0, "signatures of unverified bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_when_docker_content_digest_header_lies() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let honest = publish(&reg, "v1", &[&key]);
    // The tag serves other (unsigned) bytes but claims the signed image's digest.
    let other = image_manifest("other");
    let lie =
        Reply::ok(&other, OCI_MANIFEST).header("docker-content-digest", &honest.digest.to_string());
    reg.manifest("v1", lie);
    let (_, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    let expected = format!(
        "Docker-Content-Digest header says {}, but the body hashes to {}",
        honest.digest,
        Digest::of(&other)
    );
    says(&why, &[&expected]);
    assert_eq!(reg.requests_to(".sig"), 0, "signatures of unverified bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_an_oversized_manifest() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    // 4 KiB with a Content-Length; a Content-Length of 1 MiB whose body never comes (refused
    // on the header, not after a timeout); a chunked body, without one, that never ends.
    for tag in ["sized", "announced", "chunked"] {
        publish(&reg, tag, &[&key]);
    }
    let big = oci_manifest("sized", Vec::new(), 4096);
    reg.manifest("sized", Reply::ok(&big, OCI_MANIFEST));
    let announced = Reply::ok(b"", OCI_MANIFEST).header("content-length", "1048576");
    reg.manifest("announced", announced.body(Sent::Stall));
    let endless = Reply::ok(b"", OCI_MANIFEST).body(Sent::EndlessChunks);
    reg.manifest("chunked", endless);
    let limits = format!("{LIMITS}, maxManifestBytes: 1024");
    for tag in ["sized", "announced", "chunked"] {
        let (_, why) = deny(&reg.addr, &key, PLAIN, &limits, &format!("app:{tag}")).await;
        says(&why, &["bad response", "exceeds the 1024-byte limit"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_when_a_body_never_ends() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    // The image manifest drips a byte at a time; the signature blob stalls after one byte.
    publish(&reg, "drip", &[&key]);
    let drip = Reply::ok(b"", OCI_MANIFEST).body(Sent::Drip);
    reg.manifest("drip", drip);
    let stall = publish(&reg, "stall", &[&key]);
    let stalled = Reply::blob(b"").body(Sent::Stall);
    reg.blob(&Digest::of(&stall.payload), stalled);
    let limits = "connectTimeout: 1s, requestTimeout: 1s";
    for tag in ["drip", "stall"] {
        let (v, why) = deny(&reg.addr, &key, PLAIN, limits, &format!("app:{tag}")).await;
        says(
            &why,
            &["timed out", "did not finish sending its answer within 1s"],
        );
        // The request timeout ended it, not the 5 s review deadline.
        assert!(!why.contains("deadline"), "{tag}: {why}");
        assert!(v.verdict.is_transient(), "{tag}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_when_signature_blob_bytes_do_not_match_their_digest() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let p = publish(&reg, "v1", &[&key]);
    // Same length, and validly signed by the trusted key for this very image: only the
    // content address tells that these are not the bytes the layer names.
    let swapped = payload("z", &p.digest);
    assert_eq!(swapped.len(), p.payload.len());
    let sig = sig_manifest(&[(p.payload.as_slice(), key.sign(&swapped))]);
    reg.manifest(&p.sig_tag, Reply::ok(&sig, OCI_MANIFEST));
    reg.blob(&Digest::of(&p.payload), Reply::blob(&swapped));
    let (_, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    let (requested, served) = (Digest::of(&p.payload), Digest::of(&swapped));
    let expected = format!("hashes to {served}, not the requested {requested}");
    says(&why, &[&expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_500_on_sig_is_a_registry_error_not_unsigned() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let p = publish(&reg, "v1", &[&key]);
    reg.manifest(&p.sig_tag, Reply::status(500));
    let (v, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    says(&why, &["server error", "HTTP 500"]);
    assert!(!why.contains("no signatures found"), "{why}");
    assert!(v.verdict.is_transient(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_reports_retry_after() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    publish(&reg, "v1", &[&key]);
    reg.manifest("v1", Reply::status(429).header("retry-after", "7"));
    let (v, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    says(&why, &["rate limited", "Retry-After: 7"]);
    assert!(v.verdict.is_transient(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifest_media_type_is_refused() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    publish(&reg, "v1", &[&key]);
    let schema1 = json!({
        "schemaVersion": 1, "name": "app", "tag": "v1", "architecture": "amd64",
        "fsLayers": [], "history": [], "signatures": [],
    });
    let body = schema1.to_string();
    reg.manifest("v1", Reply::ok(body.as_bytes(), SCHEMA1));
    let (_, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    says(&why, &["unsupported manifest media type", SCHEMA1]);
    assert_eq!(reg.requests_to(".sig"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_works_and_credentials_stay_on_their_host() {
    let (reg, key, untrusted) = (FakeRegistry::start(None).await, Key::new(), Key::new());
    let cdn = FakeRegistry::start(None).await;
    let (_pw, creds, basic) = credentials();
    reg.require_bearer(&format!("http://{}/token", reg.addr), "t0k");
    reg.issue_tokens(&basic, "t0k");
    // Signed by an untrusted key: all three fetches must pass the gate to reach that verdict.
    let p = publish(&reg, "v1", &[&untrusted]);
    // The blob lives on a "CDN" on another port, as registries redirect blobs to storage.
    cdn.on("/blob", Reply::blob(&p.payload));
    let to_cdn = Reply::status(307).header("location", &format!("http://{}/blob", cdn.addr));
    reg.blob(&Digest::of(&p.payload), to_cdn);
    let settings = format!("{PLAIN}, {creds}");
    let (v, why) = deny(&reg.addr, &key, &settings, LIMITS, "app:v1").await;
    says(&why, &["signed, but not by a trusted key"]);
    assert!(!v.to_string().contains(PASSWORD), "{v}");

    let seen = reg.seen();
    let (tokens, v2): (Vec<_>, Vec<_>) = seen.iter().partition(|s| s.target.starts_with("/token"));
    assert!(!tokens.is_empty(), "{seen:?}");
    for t in &tokens {
        assert_eq!(t.authorization.as_deref(), Some(basic.as_str()), "{t:?}");
        assert!(t.target.contains("service=test"), "{t:?}");
        assert!(t.target.contains("scope=repository%3Aapp%3Apull"), "{t:?}");
    }
    // On /v2/: nothing (before the challenge) or the token, never the password; on the CDN:
    // nothing at all.
    let with_token = |s: &&Seen| s.authorization.as_deref() == Some("Bearer t0k");
    assert!(
        v2.iter()
            .all(|s| s.authorization.is_none() || with_token(s)),
        "{v2:?}"
    );
    for part in [
        "/manifests/v1",
        &format!("/manifests/{}", p.sig_tag),
        "/blobs/",
    ] {
        let authorised = v2.iter().any(|s| s.target.contains(part) && with_token(s));
        assert!(authorised, "no authorised request for {part}: {v2:?}");
    }
    let cdn_seen = cdn.seen();
    assert_eq!(cdn_seen.len(), 1, "{cdn_seen:?}");
    assert!(
        cdn_seen.iter().all(|s| s.authorization.is_none()),
        "{cdn_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_token_realm_on_another_host_is_refused_and_gets_no_credentials() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    let foreign = FakeRegistry::start(None).await;
    let (_pw, creds, basic) = credentials();
    // The registry sends token clients to another loopback port, which would happily take
    // the registry's credentials. Plain HTTP to another host is refused, listed or not.
    reg.require_bearer(&format!("http://{}/token", foreign.addr), "t0k");
    foreign.issue_tokens(&basic, "t0k");
    publish(&reg, "v1", &[&key]);
    let unlisted = format!("{PLAIN}, {creds}");
    let listed = format!("{unlisted}, tokenRealmHosts: [{:?}]", foreign.addr);
    for settings in [&unlisted, &listed] {
        let (_, why) = deny(&reg.addr, &key, settings, LIMITS, "app:v1").await;
        let refused = "refusing a token realm over plain HTTP";
        says(&why, &["authentication failed", refused]);
    }
    assert!(foreign.seen().is_empty(), "{:?}", foreign.seen());
    let seen = reg.seen();
    assert!(seen.iter().all(|s| s.authorization.is_none()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_token_realm_on_another_host_gets_credentials_only_when_listed() {
    let ca = pki::Ca::new("hostile test CA");
    let reg = FakeRegistry::start(Some(&ca.server())).await;
    let realm = FakeRegistry::start(Some(&ca.server())).await;
    let (key, untrusted) = (Key::new(), Key::new());
    let (pw_dir, creds, basic) = credentials();
    let ca_file = pw_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    reg.require_bearer(&format!("https://{}/token", realm.addr), "t0k");
    realm.issue_tokens(&basic, "t0k");
    publish(&reg, "v1", &[&untrusted]);
    let unlisted = format!("ca: {:?}, {creds}", ca_file.display().to_string());
    // Not listed: an anonymous token request, which this realm refuses.
    let (_, why) = deny(&reg.addr, &key, &unlisted, LIMITS, "app:v1").await;
    let refused = format!("token endpoint https://{}/token", realm.addr);
    says(&why, &["authentication failed", &refused, "HTTP 401"]);
    let asked = realm.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].authorization.is_none(), "{asked:?}");
    // Listed: the realm gets the credentials, and the registry the token.
    let listed = format!("{unlisted}, tokenRealmHosts: [{:?}]", realm.addr);
    let (_, why) = deny(&reg.addr, &key, &listed, LIMITS, "app:v1").await;
    says(&why, &["not by a trusted key"]);
    let asked = realm.seen();
    assert!(asked.len() > 1, "{asked:?}");
    let sent_basic = |s: &Seen| s.authorization.as_deref() == Some(basic.as_str());
    assert!(asked[1..].iter().all(sent_basic), "{asked:?}");
    // The registry itself never saw the password.
    let seen = reg.seen();
    assert!(!seen.iter().any(|s| leaks(s, &basic)), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_signature_layers_are_bounded() {
    let (reg, key, untrusted) = (FakeRegistry::start(None).await, Key::new(), Key::new());
    publish(&reg, "v1", &[&untrusted, &untrusted, &untrusted]);
    let limits = format!("{LIMITS}, maxSignatures: 2");
    let (_, why) = deny(&reg.addr, &key, PLAIN, &limits, "app:v1").await;
    says(
        &why,
        &[
            "not by a trusted key",
            "has 3 signature layers; only the first 2 were examined",
            "limits.maxSignatures",
        ],
    );
    let blobs = reg.requests_to("/blobs/");
    assert!(blobs <= 2, "{blobs} blob requests with maxSignatures 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_reported() {
    let key = Key::new();
    // A port that was free a moment ago, with nothing listening on it now.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let (v, why) = deny(&addr, &key, PLAIN, LIMITS, "app:v1").await;
    let url = format!("cannot connect to http://{addr}/v2/app/manifests/v1");
    says(&why, &["registry unreachable", &url]);
    assert!(v.verdict.is_transient(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_outage_is_transient_not_an_auth_failure() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    publish(&reg, "v1", &[&key]);
    reg.require_bearer(&format!("http://{}/token-down", reg.addr), "t0k");
    reg.on("/token-down", Reply::status(503));
    let (v, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    says(&why, &["server error", "token endpoint", "HTTP 503"]);
    assert!(!why.contains("authentication failed"), "{why}");
    assert!(v.verdict.is_transient(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_is_a_bad_response_not_an_outage() {
    let (reg, key) = (FakeRegistry::start(None).await, Key::new());
    publish(&reg, "v1", &[&key]);
    let to_self = Reply::status(307).header("location", "/v2/app/manifests/v1");
    reg.manifest("v1", to_self);
    let (v, why) = deny(&reg.addr, &key, PLAIN, LIMITS, "app:v1").await;
    says(&why, &["bad response", "bad redirect"]);
    assert!(!v.verdict.is_transient(), "{v}");
}
