//! Serde mirror of the YAML config file. Never used past `config`: it is validated into
//! typed structs there, with every problem reported at once.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryFile>,
    #[serde(default)]
    pub docker_config: Option<String>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    #[serde(default)]
    pub default_action: Option<String>,
    #[serde(default)]
    pub server: Option<ServerFile>,
    #[serde(default)]
    pub cache: Option<CacheFile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryFile {
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default)]
    pub token_realm_hosts: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsFile {
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_manifest_bytes: Option<u64>,
    pub max_blob_bytes: Option<u64>,
    pub max_signatures: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub tags: TagsFile,
    #[serde(default)]
    pub signatures: Option<SignaturesFile>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub break_glass: bool,
    #[serde(default)]
    pub attestations: Vec<AttestationFile>,
    #[serde(default)]
    pub multi_arch: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagsFile {
    #[serde(default)]
    pub forbid_latest: bool,
    #[serde(default)]
    pub require_digest: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignaturesFile {
    /// Shorthand for `authorities: [{key: ...}, ...]`.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub authorities: Vec<AuthorityFile>,
    #[serde(default)]
    pub threshold: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorityFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AttestationFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub predicate_type: Option<String>,
    #[serde(default)]
    pub authorities: Vec<AuthorityFile>,
    #[serde(default)]
    pub condition: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerFile {
    pub listen: Option<String>,
    pub path: Option<String>,
    pub tls: Option<TlsFile>,
    pub metrics_listen: Option<String>,
    pub review_timeout: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub on_transient_error: Option<String>,
    pub bearer_token_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(rename = "clientCA")]
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheFile {
    #[serde(rename = "allowTTL")]
    pub allow_ttl: Option<String>,
    #[serde(rename = "denyTTL")]
    pub deny_ttl: Option<String>,
    pub max_entries: Option<u64>,
    #[serde(rename = "resolveTTL")]
    pub resolve_ttl: Option<String>,
}
