//! A small OCI distribution client made for admission: every read bounded in size and time,
//! every manifest and blob hashed against the digest it was asked for, and failures typed so
//! that "not found", "auth failed" and "try again later" never blur into "unsigned".
//!
//! Why not `oci-client` (0.18, the version sigstore-rs 0.15 uses): it buffers manifest and blob
//! bodies without a size cap, has one root-certificate set and one protocol policy for all
//! hosts, no total request timeout, and collapses statuses into one error type. See
//! ARCHITECTURE.md.

pub mod auth;
pub mod manifest;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::reference::{Digest, Repository};
use crate::telemetry::OutcomeLabel;
use crate::verdict::RegistryFailure;
use auth::{Challenge, Credentials, TokenResponse};
use manifest::{Descriptor, Manifest};

/// Limits on everything read from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub request_timeout: Duration,
    pub max_manifest_bytes: u64,
    pub max_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 16 * 1024 * 1024,
        }
    }
}

/// How to reach one registry host.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Plain HTTP (loopback / test registries only).
    pub insecure: bool,
    /// PEM CA bundle: when set, only these roots are trusted for this host.
    pub ca_pem: Option<Vec<u8>>,
    pub credentials: Option<Credentials>,
    /// Token realm hosts (besides the registry's own) that may receive the credentials.
    pub token_realm_hosts: Vec<String>,
}

/// Errors talking to a registry. URLs never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url} not found (HTTP 404)")]
    NotFound { url: String },
    #[error("cannot connect to {url}: {}", error_chain(source))]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} {phase} within {}", humantime::format_duration(*limit))]
    Timeout {
        url: String,
        phase: TimeoutPhase,
        limit: Duration,
    },
    #[error("{url}: bad redirect: {}", error_chain(source))]
    Redirect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP 429 Too Many Requests{}", retry_after.as_ref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default())]
    RateLimited {
        url: String,
        retry_after: Option<String>,
    },
    #[error("{url} refused our credentials (HTTP {status}){}", if *anonymous { "; no credentials are configured for this registry" } else { "" })]
    Unauthorized {
        url: String,
        status: u16,
        anonymous: bool,
    },
    #[error("token endpoint {realm} for {url} answered HTTP {status}")]
    TokenUnavailable {
        url: String,
        realm: String,
        status: u16,
    },
    #[error("token endpoint {realm} for {url}: {detail}")]
    Token {
        url: String,
        realm: String,
        detail: String,
    },
    #[error("{url} answered HTTP {status}")]
    ServerError { url: String, status: u16 },
    #[error("{url} answered unexpected HTTP {status}")]
    UnexpectedStatus { url: String, status: u16 },
    #[error("{url}: body exceeds the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: content hashes to {actual}, not the requested {expected}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{url}: Docker-Content-Digest header says {header}, but the body hashes to {actual}")]
    HeaderDigestMismatch {
        url: String,
        header: String,
        actual: Digest,
    },
    #[error("{url}: {actual} bytes, but the descriptor says {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType { url: String, media_type: String },
    #[error("{url}: manifest is not valid JSON: {source}")]
    BadManifest {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: invalid descriptor digest {digest:?}")]
    BadDescriptor { url: String, digest: String },
    #[error("{url}: {}", error_chain(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot set up an HTTP client for registry {host}: {source}")]
    Setup {
        host: String,
        #[source]
        source: reqwest::Error,
    },
}

impl RegistryError {
    /// What this failure means for the verdict and the cache.
    pub fn failure(&self) -> RegistryFailure {
        match self {
            Self::Connect { .. } | Self::Transport { .. } => RegistryFailure::Unreachable,
            Self::Timeout { .. } => RegistryFailure::TimedOut,
            Self::TokenUnavailable { status: 429, .. } => RegistryFailure::RateLimited,
            Self::TokenUnavailable { .. } => RegistryFailure::ServerError,
            Self::Redirect { .. } => RegistryFailure::BadResponse,
            Self::RateLimited { .. } => RegistryFailure::RateLimited,
            Self::Unauthorized { .. } | Self::Token { .. } => RegistryFailure::AuthFailed,
            Self::ServerError { .. } => RegistryFailure::ServerError,
            Self::NotFound { .. }
            | Self::UnexpectedStatus { .. }
            | Self::TooLarge { .. }
            | Self::DigestMismatch { .. }
            | Self::HeaderDigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::UnsupportedMediaType { .. }
            | Self::BadManifest { .. }
            | Self::BadDescriptor { .. }
            | Self::Setup { .. } => RegistryFailure::BadResponse,
        }
    }
}

/// Which part of a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    Answer,
    Body,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "could not be connected to",
            Self::Answer => "did not answer",
            Self::Body => "did not finish sending its answer",
        })
    }
}

/// A manifest whose bytes hashed to `digest`.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

struct Endpoint {
    http: Client,
    scheme: &'static str,
    settings: RegistrySettings,
}

/// Registry client shared by all requests (cheap to clone; no lock around the HTTP clients).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: HashMap<String, Endpoint>,
    default: Endpoint,
    limits: Limits,
    /// Bearer tokens by (api host, scope).
    tokens: moka::sync::Cache<(String, String), Arc<str>>,
    /// Hosts that asked for Basic auth: send it up front next time.
    basic_hosts: moka::sync::Cache<String, ()>,
    requests: AtomicU64,
    /// Requests by outcome, for /metrics (absent in the CLI).
    outcomes: Option<Family<OutcomeLabel, Counter>>,
}

/// Tokens are reused for at most this long (registries issue them for ≥ 60 s; Docker Hub 300 s).
const TOKEN_TTL: Duration = Duration::from_secs(50);
const MAX_REDIRECTS: usize = 5;

impl RegistryClient {
    /// Builds one HTTP client per configured registry (its own CA) and one for the rest.
    pub fn new(
        registries: HashMap<String, RegistrySettings>,
        limits: Limits,
    ) -> Result<Self, RegistryError> {
        Self::with_outcomes(registries, limits, None)
    }

    /// As `new`, counting every request's outcome in `outcomes`.
    pub fn with_outcomes(
        registries: HashMap<String, RegistrySettings>,
        limits: Limits,
        outcomes: Option<Family<OutcomeLabel, Counter>>,
    ) -> Result<Self, RegistryError> {
        let mut endpoints = HashMap::new();
        for (host, settings) in registries {
            let ep = Endpoint::new(&host, settings, limits)?;
            endpoints.insert(host, ep);
        }
        let default = Endpoint::new("(default)", RegistrySettings::default(), limits)?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                default,
                limits,
                tokens: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(TOKEN_TTL)
                    .build(),
                basic_hosts: moka::sync::Cache::builder().max_capacity(1_000).build(),
                requests: AtomicU64::new(0),
                outcomes,
            }),
        })
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// HTTP requests sent so far (token requests included).
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn endpoint(&self, repo: &Repository) -> &Endpoint {
        self.inner
            .endpoints
            .get(repo.registry())
            .or_else(|| self.inner.endpoints.get(repo.api_host()))
            .unwrap_or(&self.inner.default)
    }

    /// URL of the manifest `reference` (tag or digest) in `repo`.
    pub fn manifest_url(&self, repo: &Repository, reference: &str) -> String {
        let ep = self.endpoint(repo);
        format!(
            "{}://{}/v2/{}/manifests/{}",
            ep.scheme,
            repo.api_host(),
            repo.path(),
            reference
        )
    }

    fn blob_url(&self, repo: &Repository, digest: &Digest) -> String {
        let ep = self.endpoint(repo);
        format!(
            "{}://{}/v2/{}/blobs/{}",
            ep.scheme,
            repo.api_host(),
            repo.path(),
            digest
        )
    }

    /// Fetches the manifest `reference` (a tag, or a digest string) and checks its bytes: against
    /// the digest when one was asked for, and against `Docker-Content-Digest` when sent.
    pub async fn fetch_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.manifest_url(repo, reference);
        let limit = self.inner.limits.max_manifest_bytes;
        let (headers, bytes) = self
            .get(repo, &url, Some(manifest::ACCEPT_MANIFESTS), limit)
            .await?;
        let actual = Digest::of(&bytes);
        if let Ok(expected) = Digest::parse(reference) {
            if expected != actual {
                return Err(RegistryError::DigestMismatch {
                    url,
                    expected,
                    actual,
                });
            }
        }
        if let Some(header) = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if header.starts_with("sha256:") && header != actual.to_string() {
                return Err(RegistryError::HeaderDigestMismatch {
                    url,
                    header: header.to_owned(),
                    actual,
                });
            }
        }
        let parsed: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::BadManifest {
                url: url.clone(),
                source,
            })?;
        let header_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let media_type = parsed
            .media_type
            .clone()
            .or(header_type)
            .unwrap_or_default();
        if !manifest::is_supported(&media_type) {
            return Err(RegistryError::UnsupportedMediaType { url, media_type });
        }
        Ok(FetchedManifest {
            digest: actual,
            media_type,
            bytes,
            manifest: parsed,
        })
    }

    /// Fetches the blob `desc` describes, refusing more than `desc.size` bytes (and more than the
    /// blob limit), and checks its sha256.
    pub async fn fetch_blob(
        &self,
        repo: &Repository,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let digest = Digest::parse(&desc.digest).map_err(|_| RegistryError::BadDescriptor {
            url: repo.to_string(),
            digest: desc.digest.clone(),
        })?;
        let url = self.blob_url(repo, &digest);
        let limit = self.inner.limits.max_blob_bytes;
        if desc.size > limit {
            return Err(RegistryError::TooLarge { url, limit });
        }
        let (_, bytes) = self.get(repo, &url, None, desc.size).await?;
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: digest,
                actual,
            });
        }
        if bytes.len() as u64 != desc.size {
            return Err(RegistryError::SizeMismatch {
                url,
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// GET with auth negotiation: at most one challenge round, then the answer is final.
    async fn get(
        &self,
        repo: &Repository,
        url: &str,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        let ep = self.endpoint(repo);
        let host = repo.api_host().to_owned();
        let scope = format!("repository:{}:pull", repo.path());
        let mut authorization = self.cached_authorization(ep, &host, &scope);
        for attempt in 0..2 {
            let resp = self.send(ep, url, accept, authorization.as_deref()).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                match challenge {
                    Some(Challenge::Basic) if ep.settings.credentials.is_some() => {
                        self.inner.basic_hosts.insert(host.clone(), ());
                        authorization = ep
                            .settings
                            .credentials
                            .as_ref()
                            .map(Credentials::basic_header);
                        continue;
                    }
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope: challenge_scope,
                    }) => {
                        let scope = challenge_scope.unwrap_or(scope.clone());
                        let token = self
                            .fetch_token(ep, url, &host, &realm, service.as_deref(), &scope)
                            .await?;
                        self.inner
                            .tokens
                            .insert((host.clone(), scope.clone()), Arc::clone(&token));
                        authorization = Some(format!("Bearer {token}"));
                        continue;
                    }
                    _ => {}
                }
            }
            check_status(url, status, resp.headers(), ep)?;
            let headers = resp.headers().clone();
            let body = read_capped(resp, url, limit, self.inner.limits).await?;
            return Ok((headers, body));
        }
        Err(RegistryError::Unauthorized {
            url: url.to_owned(),
            status: 401,
            anonymous: ep.settings.credentials.is_none(),
        })
    }

    fn cached_authorization(&self, ep: &Endpoint, host: &str, scope: &str) -> Option<String> {
        if let Some(token) = self.inner.tokens.get(&(host.to_owned(), scope.to_owned())) {
            return Some(format!("Bearer {token}"));
        }
        if self.inner.basic_hosts.contains_key(host) {
            return ep
                .settings
                .credentials
                .as_ref()
                .map(Credentials::basic_header);
        }
        None
    }

    async fn send(
        &self,
        ep: &Endpoint,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = ep.http.get(url);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(url, "registry GET");
        let result = req
            .send()
            .await
            .map_err(|e| transport_error(url, e, self.inner.limits, TimeoutPhase::Answer));
        if let Some(outcomes) = &self.inner.outcomes {
            let outcome = match &result {
                Ok(r) => match r.status().as_u16() {
                    200..=299 => "ok",
                    401 => "challenge",
                    403 => "forbidden",
                    404 => "not_found",
                    429 => "rate_limited",
                    500..=599 => "server_error",
                    _ => "other_status",
                },
                Err(RegistryError::Timeout { .. }) => "timeout",
                Err(_) => "unreachable",
            };
            outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
        }
        result
    }

    /// Docker token auth: credentials go to the realm only when it is on the registry's own
    /// host or on a host the operator allowed, and only over HTTPS (or plain HTTP to the
    /// registry's own host when that registry is configured `insecure`).
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        url: &str,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Arc<str>, RegistryError> {
        let token_err = |detail: String| RegistryError::Token {
            url: url.to_owned(),
            realm: realm.to_owned(),
            detail,
        };
        let mut realm_url =
            url::Url::parse(realm).map_err(|e| token_err(format!("invalid realm URL: {e}")))?;
        let realm_host = match realm_url.port() {
            Some(p) => format!("{}:{p}", realm_url.host_str().unwrap_or_default()),
            None => realm_url.host_str().unwrap_or_default().to_owned(),
        };
        let same_host = realm_host == host;
        let secure = realm_url.scheme() == "https" || (same_host && ep.settings.insecure);
        if !secure {
            return Err(token_err("refusing a token realm over plain HTTP".into()));
        }
        {
            let mut q = realm_url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let allowed = same_host
            || ep.settings.token_realm_hosts.contains(&realm_host)
            || (host == crate::reference::DOCKER_HUB_API && realm_host == "auth.docker.io");
        let creds = ep.settings.credentials.as_ref().filter(|_| allowed);
        if ep.settings.credentials.is_some() && creds.is_none() {
            tracing::warn!(registry = host, realm_host, "token realm is on another host: asking for an anonymous token (list it in tokenRealmHosts to send credentials)");
        }
        let auth = creds.map(Credentials::basic_header);
        let resp = self
            .send(ep, realm_url.as_str(), None, auth.as_deref())
            .await?;
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(RegistryError::TokenUnavailable {
                url: url.to_owned(),
                realm: realm.to_owned(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(token_err(format!("HTTP {}", status.as_u16())));
        }
        let body = read_capped(resp, realm_url.as_str(), 64 * 1024, self.inner.limits).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| token_err(format!("answer is not a token JSON: {e}")))?;
        parsed
            .into_token()
            .map(Arc::from)
            .ok_or_else(|| token_err("answer has no token".into()))
    }
}

impl Endpoint {
    fn new(host: &str, settings: RegistrySettings, limits: Limits) -> Result<Self, RegistryError> {
        let setup = |source| RegistryError::Setup {
            host: host.to_owned(),
            source,
        };
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().scheme() != "https"
                && attempt
                    .previous()
                    .last()
                    .is_some_and(|p| p.scheme() == "https")
            {
                attempt.error("refusing a redirect from HTTPS to plain HTTP")
            } else {
                attempt.follow()
            }
        });
        let mut builder = Client::builder()
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.request_timeout)
            .redirect(redirect)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(setup)?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(setup)?;
        Ok(Self {
            http,
            scheme: if settings.insecure { "http" } else { "https" },
            settings,
        })
    }
}

fn check_status(
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    ep: &Endpoint,
) -> Result<(), RegistryError> {
    let url = url.to_owned();
    match status.as_u16() {
        200..=299 => Ok(()),
        404 => Err(RegistryError::NotFound { url }),
        401 | 403 => Err(RegistryError::Unauthorized {
            url,
            status: status.as_u16(),
            anonymous: ep.settings.credentials.is_none(),
        }),
        429 => Err(RegistryError::RateLimited {
            url,
            retry_after: headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect()),
        }),
        500..=599 => Err(RegistryError::ServerError {
            url,
            status: status.as_u16(),
        }),
        s => Err(RegistryError::UnexpectedStatus { url, status: s }),
    }
}

fn transport_error(
    url: &str,
    e: reqwest::Error,
    limits: Limits,
    phase: TimeoutPhase,
) -> RegistryError {
    let url = url.to_owned();
    if e.is_timeout() {
        let (phase, limit) = if e.is_connect() {
            (TimeoutPhase::Connect, limits.connect_timeout)
        } else {
            (phase, limits.request_timeout)
        };
        RegistryError::Timeout { url, phase, limit }
    } else if e.is_redirect() {
        RegistryError::Redirect { url, source: e }
    } else if e.is_connect() {
        RegistryError::Connect { url, source: e }
    } else {
        RegistryError::Transport { url, source: e }
    }
}

/// `outer: inner: innermost`, so a TLS or DNS cause reaches the reason.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Reads at most `limit` bytes of body; a longer body is an error, not a truncation.
async fn read_capped(
    mut resp: reqwest::Response,
    url: &str,
    limit: u64,
    limits: Limits,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(url, e, limits, TimeoutPhase::Body))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
