//! Integration-test harness: a real CNCF distribution registry (Debian's `docker-registry`)
//! on a free loopback port, loaded with the starter fixtures (real cosign 2.5 / skopeo 1.18
//! signatures) and optionally with TLS and htpasswd; pushes of extra fixtures; configs.
#![allow(dead_code)]

pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn starter_dir() -> PathBuf {
    root().join("fixtures/registry-starter")
}

pub fn starter_fixtures() -> Value {
    let text = std::fs::read_to_string(starter_dir().join("fixtures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn trusted_pub() -> PathBuf {
    starter_dir().join("keys/trusted.pub")
}

pub fn untrusted_pub() -> PathBuf {
    starter_dir().join("keys/untrusted.pub")
}

/// A binary the test needs: fail (never skip) naming the Debian package.
pub fn require_binary(bin: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    for p in [
        Path::new("/usr/bin").join(bin),
        Path::new("/usr/sbin").join(bin),
    ] {
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{bin}`: install the Debian package `{package}` (apt-get install -y {package})");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
pub struct RegistryOptions {
    /// Extract the starter storage (else: an empty registry).
    pub starter: bool,
    /// Serve HTTPS with this certificate.
    pub tls: Option<pki::Leaf>,
    /// Require basic auth (htpasswd, bcrypt) for this user and password.
    pub htpasswd: Option<(String, String)>,
    /// Write the registry's access log (to count the requests it served).
    pub access_log: bool,
}

/// A running `docker-registry`, stopped and deleted on drop.
pub struct TestRegistry {
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub scheme: &'static str,
    pub credentials: Option<(String, String)>,
    log_path: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn starter() -> Self {
        Self::start(RegistryOptions {
            starter: true,
            ..Default::default()
        })
        .await
    }

    pub async fn start(opts: RegistryOptions) -> Self {
        let bin = require_binary("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        if opts.starter {
            let tar = require_binary("tar", "tar");
            let status = Command::new(tar)
                .arg("-xzf")
                .arg(starter_dir().join("registry-storage.tar.gz"))
                .arg("-C")
                .arg(&storage)
                .status()
                .unwrap();
            assert!(status.success(), "extracting the starter storage failed");
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: portcullis-test-not-a-secret\n",
            !opts.access_log,
            storage.display()
        );
        if let Some(leaf) = &opts.tls {
            let cert = dir.path().join("tls.crt");
            let key = dir.path().join("tls.key");
            std::fs::write(&cert, &leaf.cert_pem).unwrap();
            std::fs::write(&key, &leaf.key_pem).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, pass)) = &opts.htpasswd {
            let hash = bcrypt::hash(pass, 4).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: portcullis-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let reg = Self {
            addr,
            scheme,
            credentials: opts.htpasswd.clone(),
            log_path,
            child,
            _dir: dir,
        };
        reg.wait_ready().await;
        reg
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "docker-registry did not start listening on {} within 15 s",
            self.addr
        );
    }

    /// Access-log lines of GET requests whose path contains `needle` (needs `access_log`).
    pub fn served(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(needle))
            .count()
    }

    /// `$REGISTRY` substituted.
    pub fn reference(&self, template: &str) -> String {
        template.replace("$REGISTRY", &self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn client(&self, ca: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = ca {
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// Uploads a blob (monolithic: POST, then PUT with the digest).
    pub async fn push_blob(&self, ca: Option<&str>, repo: &str, bytes: &[u8]) {
        let c = self.client(ca);
        let digest = portcullis::reference::Digest::of(bytes).to_string();
        let resp = self
            .auth(c.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "starting upload to {repo}");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .auth(c.put(format!("{location}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "uploading blob {digest} to {repo}");
    }

    pub async fn push_manifest(
        &self,
        ca: Option<&str>,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) {
        let c = self.client(ca);
        let resp = self
            .auth(c.put(self.url(&format!("/v2/{repo}/manifests/{reference}"))))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "pushing {repo}:{reference}: {}",
            resp.text().await.unwrap()
        );
    }

    /// Fetches a manifest's raw bytes (for copying images between repositories).
    pub async fn get(&self, ca: Option<&str>, path: &str, accept: &str) -> Vec<u8> {
        let c = self.client(ca);
        let resp = self
            .auth(c.get(self.url(path)))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.bytes().await.unwrap().to_vec()
    }

    /// Copies an image manifest and its blobs from one repository to another (tag `tag`).
    pub async fn copy_image(
        &self,
        ca: Option<&str>,
        from: &str,
        digest: &str,
        to: &str,
        tag: &str,
    ) {
        let accept = portcullis::registry::manifest::ACCEPT_MANIFESTS;
        let bytes = self
            .get(ca, &format!("/v2/{from}/manifests/{digest}"), accept)
            .await;
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        let mut descs = vec![m["config"].clone()];
        descs.extend(m["layers"].as_array().unwrap().iter().cloned());
        for d in descs {
            let blob = self
                .get(
                    ca,
                    &format!("/v2/{from}/blobs/{}", d["digest"].as_str().unwrap()),
                    "*/*",
                )
                .await;
            self.push_blob(ca, to, &blob).await;
        }
        let mt = m["mediaType"].as_str().unwrap();
        self.push_manifest(ca, to, tag, mt, &bytes).await;
    }

    /// Pushes `fixtures/independent/plan.json` (made by scripts/gen-fixtures.py).
    pub async fn push_independent_plan(&self, ca: Option<&str>) -> Value {
        self.push_plan(ca, "fixtures/independent/plan.json").await
    }

    /// Pushes a plan file (`{blobs: {digest: b64}, pushes: [{repository, reference, mediaType,
    /// manifest: b64}], ...}`, path relative to the repository root); returns the whole plan.
    pub async fn push_plan(&self, ca: Option<&str>, path: &str) -> Value {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        let plan: Value = serde_json::from_str(&text).unwrap();
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        for push in plan["pushes"].as_array().unwrap() {
            let repo = push["repository"].as_str().unwrap();
            let manifest = b64(&push["manifest"]);
            let m: Value = serde_json::from_slice(&manifest).unwrap();
            // Image manifests carry blobs; an index only names manifests pushed before it.
            let mut digests = Vec::new();
            if let Some(d) = m["config"]["digest"].as_str() {
                digests.push(d.to_owned());
            }
            for l in m["layers"].as_array().into_iter().flatten() {
                digests.push(l["digest"].as_str().unwrap().to_owned());
            }
            for d in digests {
                self.push_blob(ca, repo, &b64(&plan["blobs"][&d])).await;
            }
            self.push_manifest(
                ca,
                repo,
                push["reference"].as_str().unwrap(),
                push["mediaType"].as_str().unwrap(),
                &manifest,
            )
            .await;
        }
        plan
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Writes a config file into a new temp dir and returns (dir, path).
pub fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// A config trusting `keys` for every image of `registry` (plain HTTP).
pub fn signed_only_config(registry: &str, keys: &[PathBuf]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{:?}", k.display().to_string()))
        .collect();
    format!(
        "registries:\n  \"{registry}\": {{insecure: true}}\nrules:\n  - name: signed-only\n    images: [\"{registry}/**\"]\n    signatures: {{keys: [{}]}}\ndefaultAction: deny\n",
        keys.join(", ")
    )
}

/// Builds an engine from YAML.
pub fn engine(yaml: &str) -> (tempfile::TempDir, portcullis::engine::Engine) {
    let (dir, path) = write_config(yaml);
    let config = portcullis::config::load(&path).unwrap();
    (dir, portcullis::engine::Engine::new(&config).unwrap())
}
