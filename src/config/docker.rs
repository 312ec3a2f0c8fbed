//! Credentials from a docker `config.json` (or a `kubernetes.io/dockerconfigjson` secret's
//! `.dockerconfigjson`, which has the same shape). Credential helpers are not run.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde::Deserialize;

use crate::registry::auth::Credentials;

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Registry host (as references name it) → credentials. Errors never quote secret values.
pub fn credentials(bytes: &[u8]) -> Result<HashMap<String, Credentials>, String> {
    let cfg: DockerConfig = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a docker config.json (expected {{\"auths\": ...}}): line {} column {}",
            e.line(),
            e.column()
        )
    })?;
    let mut out = HashMap::new();
    for (key, entry) in cfg.auths {
        let host = normalise_host(&key);
        let creds = match (entry.username, entry.password, entry.auth) {
            (Some(u), Some(p), _) => Credentials::new(u, p),
            (_, _, Some(auth)) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
                Credentials::new(u, p)
            }
            _ => continue,
        };
        out.insert(host, creds);
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/` → `host:5000`.
fn normalise_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::reference::DOCKER_HUB.to_owned()
        }
        h => h.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_forms() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "r.example.com:5000":{"username":"ci","password":"pw"},
            "helper.example.com":{}
        }}"#;
        let m = credentials(json).unwrap();
        assert_eq!(m["docker.io"], Credentials::new("user", "pass"));
        assert_eq!(m["r.example.com:5000"], Credentials::new("ci", "pw"));
        assert!(!m.contains_key("helper.example.com"));
    }

    #[test]
    fn bad_auth_is_reported_without_the_secret() {
        let err = credentials(br#"{"auths":{"h":{"auth":"c2VjcmV0"}}}"#).unwrap_err();
        assert!(
            !err.contains("secret") && !err.contains("c2VjcmV0"),
            "{err}"
        );
    }
}
