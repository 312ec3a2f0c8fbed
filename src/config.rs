//! The validated configuration. `load` parses the YAML (unknown fields rejected), then checks
//! every field and reports every problem at once, with its path, before anything is bound or
//! fetched. Relative paths resolve against the config file's directory.

mod docker;
pub mod file;
mod rules;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::{DefaultAction, Policy};
use crate::registry::auth::Credentials;
use crate::registry::{Limits, RegistrySettings};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path in the YAML, e.g. `rules[0].signatures.keys[1]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// What to do when verification fails for a transient reason (registry down, timeout, 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientMode {
    /// Deny (fail closed; not cached by us, cached by the apiserver for denyTTL).
    Deny,
    /// Answer HTTP 500 so the apiserver retries and caches nothing.
    Retry,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub tls: Option<TlsConfig>,
    pub metrics_listen: Option<SocketAddr>,
    pub review_timeout: Duration,
    pub max_body_bytes: usize,
    pub on_transient_error: TransientMode,
    pub bearer_token: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub allow_ttl: Duration,
    pub deny_ttl: Duration,
    pub resolve_ttl: Duration,
    pub max_entries: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub policy: Policy,
    pub registries: HashMap<String, RegistrySettings>,
    pub limits: Limits,
    /// At most this many signature layers are examined per image.
    pub max_signatures: usize,
    pub server: ServerConfig,
    pub cache: CacheConfig,
}

/// Collects problems while validating.
struct Checker<'a> {
    dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn read(&mut self, field: &str, p: &str) -> Option<Vec<u8>> {
        let full = self.path(p);
        match std::fs::read(&full) {
            Ok(b) => Some(b),
            Err(e) => {
                self.problem(field, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, v: Option<&str>, default: Duration) -> Duration {
        match v.map(humantime::parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.problem(field, format!("not a duration (e.g. 30s, 5m): {e}"));
                default
            }
        }
    }

    fn addr(&mut self, field: &str, v: Option<&str>, default: &str) -> Option<SocketAddr> {
        let v = v.unwrap_or(default);
        match v.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                self.problem(
                    field,
                    format!("{v:?} is not an address like 0.0.0.0:8443: {e}"),
                );
                None
            }
        }
    }
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed: file::File = serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    validate(parsed, dir)
        .map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
        .map(|mut c| {
            c.path = path.to_owned();
            c
        })
}

/// Validates a parsed file; relative paths resolve against `dir`.
pub fn validate(f: file::File, dir: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        dir,
        problems: Vec::new(),
    };
    let limits = limits(&mut c, &f.limits);
    let max_signatures = f.limits.max_signatures.unwrap_or(32);
    if max_signatures == 0 {
        c.problem("limits.maxSignatures", "must be at least 1");
    }
    let registries = registries(&mut c, &f);
    let mut rules = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, r) in f.rules.iter().enumerate() {
        if let Some(rule) = rules::rule(&mut c, i, r) {
            if !names.insert(rule.name.clone()) {
                c.problem(
                    format!("rules[{i}].name"),
                    format!("duplicate rule name {:?}", rule.name),
                );
            }
            rules.push(rule);
        }
    }
    let default_action = match f.default_action.as_deref() {
        None | Some("deny") => DefaultAction::Deny,
        Some("allow") => DefaultAction::Allow,
        Some(other) => {
            c.problem("defaultAction", format!("{other:?} is not allow or deny"));
            DefaultAction::Deny
        }
    };
    let server = server(&mut c, f.server.unwrap_or_default());
    let cache = cache(&mut c, f.cache.unwrap_or_default());
    if c.problems.is_empty() {
        Ok(Config {
            path: PathBuf::new(),
            policy: Policy {
                rules,
                default_action,
            },
            registries,
            limits,
            max_signatures,
            server,
            cache,
        })
    } else {
        Err(c.problems)
    }
}

fn limits(c: &mut Checker<'_>, l: &file::LimitsFile) -> Limits {
    let d = Limits::default();
    let limits = Limits {
        connect_timeout: c.duration(
            "limits.connectTimeout",
            l.connect_timeout.as_deref(),
            d.connect_timeout,
        ),
        request_timeout: c.duration(
            "limits.requestTimeout",
            l.request_timeout.as_deref(),
            d.request_timeout,
        ),
        max_manifest_bytes: l.max_manifest_bytes.unwrap_or(d.max_manifest_bytes),
        max_blob_bytes: l.max_blob_bytes.unwrap_or(d.max_blob_bytes),
    };
    if limits.request_timeout.is_zero() {
        c.problem("limits.requestTimeout", "must be more than 0");
    }
    if limits.connect_timeout.is_zero() {
        c.problem("limits.connectTimeout", "must be more than 0");
    }
    if limits.max_manifest_bytes == 0 {
        c.problem("limits.maxManifestBytes", "must be more than 0");
    }
    if limits.max_blob_bytes == 0 {
        c.problem("limits.maxBlobBytes", "must be more than 0");
    }
    limits
}

fn registries(c: &mut Checker<'_>, f: &file::File) -> HashMap<String, RegistrySettings> {
    let mut docker_creds = HashMap::new();
    if let Some(p) = &f.docker_config {
        if let Some(bytes) = c.read("dockerConfig", p) {
            match docker::credentials(&bytes) {
                Ok(m) => docker_creds = m,
                Err(msg) => c.problem("dockerConfig", msg),
            }
        }
    }
    let mut out = HashMap::new();
    for (host, r) in &f.registries {
        let field = format!("registries[{host:?}]");
        if host.is_empty() || host.contains('/') || host.contains("://") {
            c.problem(
                &field,
                "must be a registry host[:port], without scheme or path",
            );
        }
        let ca_pem = r.ca.as_ref().and_then(|p| {
            let bytes = c.read(&format!("{field}.ca"), p)?;
            if reqwest::Certificate::from_pem_bundle(&bytes).map_or(true, |v| v.is_empty()) {
                c.problem(format!("{field}.ca"), "no PEM certificate in the file");
                return None;
            }
            Some(bytes)
        });
        let credentials = match (&r.username, &r.password_file) {
            (Some(u), Some(p)) => c.read(&format!("{field}.passwordFile"), p).map(|b| {
                let pw = String::from_utf8_lossy(&b);
                Credentials::new(u.clone(), pw.trim_end_matches(['\n', '\r']))
            }),
            (None, None) => None,
            (Some(_), None) => {
                c.problem(
                    format!("{field}.passwordFile"),
                    "username is set but passwordFile is not",
                );
                None
            }
            (None, Some(_)) => {
                c.problem(
                    format!("{field}.username"),
                    "passwordFile is set but username is not",
                );
                None
            }
        };
        if r.insecure && r.ca.is_some() {
            c.problem(&field, "insecure (plain HTTP) and ca cannot both be set");
        }
        out.insert(
            host.clone(),
            RegistrySettings {
                insecure: r.insecure,
                ca_pem,
                credentials: credentials.or_else(|| docker_creds.remove(host)),
                token_realm_hosts: r.token_realm_hosts.clone(),
            },
        );
    }
    for (host, creds) in docker_creds {
        out.entry(host).or_insert_with(|| RegistrySettings {
            credentials: Some(creds),
            ..RegistrySettings::default()
        });
    }
    out
}

fn server(c: &mut Checker<'_>, s: file::ServerFile) -> ServerConfig {
    let listen = c
        .addr("server.listen", s.listen.as_deref(), "0.0.0.0:8443")
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443)));
    let metrics_listen = c.addr(
        "server.metricsListen",
        s.metrics_listen.as_deref(),
        "0.0.0.0:9090",
    );
    let path = s.path.unwrap_or_else(|| "/imagepolicy".into());
    if !path.starts_with('/') {
        c.problem("server.path", "must start with /");
    }
    let tls = s.tls.and_then(|t| match (t.cert, t.key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: c.path(&cert),
            key: c.path(&key),
            client_ca: t.client_ca.map(|p| c.path(&p)),
        }),
        _ => {
            c.problem("server.tls", "cert and key are both required");
            None
        }
    });
    let review_timeout = c.duration(
        "server.reviewTimeout",
        s.review_timeout.as_deref(),
        Duration::from_secs(25),
    );
    if review_timeout >= Duration::from_secs(30) || review_timeout.is_zero() {
        c.problem(
            "server.reviewTimeout",
            "must be more than 0 and below the apiserver's 30s",
        );
    }
    let on_transient_error = match s.on_transient_error.as_deref() {
        None | Some("deny") => TransientMode::Deny,
        Some("retry") => TransientMode::Retry,
        Some(o) => {
            c.problem(
                "server.onTransientError",
                format!("{o:?} is not deny or retry"),
            );
            TransientMode::Deny
        }
    };
    let bearer_token = s.bearer_token_file.and_then(|p| {
        let b = c.read("server.bearerTokenFile", &p)?;
        let t = String::from_utf8_lossy(&b).trim().to_owned();
        if t.is_empty() {
            c.problem("server.bearerTokenFile", "the file is empty");
            return None;
        }
        Some(t)
    });
    ServerConfig {
        listen,
        path,
        tls,
        metrics_listen,
        review_timeout,
        max_body_bytes: s.max_body_bytes.unwrap_or(1024 * 1024),
        on_transient_error,
        bearer_token,
    }
}

fn cache(c: &mut Checker<'_>, f: file::CacheFile) -> CacheConfig {
    CacheConfig {
        allow_ttl: c.duration(
            "cache.allowTTL",
            f.allow_ttl.as_deref(),
            Duration::from_secs(300),
        ),
        deny_ttl: c.duration(
            "cache.denyTTL",
            f.deny_ttl.as_deref(),
            Duration::from_secs(30),
        ),
        resolve_ttl: c.duration(
            "cache.resolveTTL",
            f.resolve_ttl.as_deref(),
            Duration::from_secs(10),
        ),
        max_entries: f.max_entries.unwrap_or(10_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleAction;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
    }

    const KEY: &str = include_str!("../fixtures/registry-starter/keys/trusted.pub");

    #[test]
    fn loads_the_contract_example_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "keys/release.pub", KEY);
        write(dir.path(), "secrets/pw", "s3cret\n");
        write(
            dir.path(),
            "portcullis.yaml",
            r#"
    registries:
      "127.0.0.1:5000": {insecure: true}
      "registry.example.com": {username: ci, passwordFile: secrets/pw}
    rules:
      - name: prod
        images: ["registry.example.com/prod/**"]
        namespaces: [payments]
        tags: {forbidLatest: true, requireDigest: false}
        signatures: {keys: [keys/release.pub]}
      - {name: system, images: ["registry.k8s.io/**"], action: allow}
    defaultAction: deny
    "#,
        );
        let c = load(&dir.path().join("portcullis.yaml")).unwrap();
        assert_eq!(c.policy.rules.len(), 2);
        assert!(c.policy.rules[0].tags.forbid_latest);
        assert!(
            matches!(&c.policy.rules[0].action, RuleAction::Verify(v) if v.signatures.as_ref().unwrap().authorities.len() == 1)
        );
        assert!(c.registries["127.0.0.1:5000"].insecure);
        assert_eq!(
            c.registries["registry.example.com"].credentials,
            Some(Credentials::new("ci", "s3cret"))
        );
        assert_eq!(c.policy.default_action, DefaultAction::Deny);
        assert_ne!(c.policy.rules[0].fingerprint, c.policy.rules[1].fingerprint);
    }

    #[test]
    fn reports_every_problem_at_once_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bad.pub", "not a key");
        write(
            dir.path(),
            "c.yaml",
            r#"
    registries:
      "https://r.io/": {username: u}
    limits: {requestTimeout: soon}
    rules:
      - name: a
        images: ["r.io//x"]
        signatures: {keys: [missing.pub, bad.pub]}
      - {images: ["q.io/**"]}
      - {name: a, images: ["z.io/**"], action: maybe}
    defaultAction: perhaps
    server: {reviewTimeout: 40s}
    "#,
        );
        let err = load(&dir.path().join("c.yaml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for want in [
            "limits.requestTimeout",
            "registries[\"https://r.io/\"]",
            "registries[\"https://r.io/\"].passwordFile",
            "rules[0].images[0]",
            "rules[0].signatures.keys[0]",
            "rules[0].signatures.keys[1]",
            "rules[1].name",
            "rules[1].action",
            "rules[2].action",
            "rules[2].name",
            "defaultAction",
            "server.reviewTimeout",
        ] {
            assert!(fields.contains(&want), "missing {want} in {fields:?}");
        }
        let text = err.to_string();
        assert!(text.contains("problem(s)"), "{text}");
    }

    #[test]
    fn platforms_mode_needs_signatures_and_thresholds_fit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "k.pub", KEY);
        write(
            dir.path(),
            "c.yaml",
            r#"
rules:
  - name: a
    images: ["a.io/**"]
    multiArch: platforms
    attestations: [{name: p, predicateType: t, authorities: [{key: k.pub}]}]
  - name: b
    images: ["b.io/**"]
    signatures: {threshold: 3, keys: [k.pub, k.pub]}
"#,
        );
        let err = load(&dir.path().join("c.yaml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["rules[0].multiArch", "rules[1].signatures.threshold"],
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c.yaml", "rulez: []\n");
        let err = load(&dir.path().join("c.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("rulez"), "{err}");
    }

    #[test]
    fn docker_config_supplies_credentials_and_explicit_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pw", "explicit");
        write(
            dir.path(),
            "docker.json",
            r#"{"auths":{"a.io":{"auth":"dTpw"},"b.io":{"auth":"dTpw"}}}"#,
        );
        write(
            dir.path(),
            "c.yaml",
            "dockerConfig: docker.json\nregistries:\n  a.io: {username: me, passwordFile: pw}\n",
        );
        let c = load(&dir.path().join("c.yaml")).unwrap();
        assert_eq!(
            c.registries["a.io"].credentials,
            Some(Credentials::new("me", "explicit"))
        );
        assert_eq!(
            c.registries["b.io"].credentials,
            Some(Credentials::new("u", "p"))
        );
    }
}
