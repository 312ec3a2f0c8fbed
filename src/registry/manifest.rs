//! The parts of OCI / Docker manifests Portcullis reads. Unknown fields are ignored: the
//! bytes are what was hashed; these structs are only a view of them.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Every manifest type we accept, in the `Accept` header. Without the Docker schema-2 type,
/// CNCF distribution converts schema-2 manifests to a freshly signed schema 1 (a new digest on
/// every request); without the OCI types it answers 404 for OCI manifests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether `media_type` is one of the manifest types we accept.
pub fn is_supported(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// Whether `media_type` names an index (a multi-platform image).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Descriptor {
    /// `os/arch[/variant]`, or `unknown/unknown` without a platform.
    pub fn platform_name(&self) -> String {
        match &self.platform {
            Some(p) => {
                let os = if p.os.is_empty() { "unknown" } else { &p.os };
                let arch = if p.architecture.is_empty() {
                    "unknown"
                } else {
                    &p.architecture
                };
                match &p.variant {
                    Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
                    _ => format!("{os}/{arch}"),
                }
            }
            None => "unknown/unknown".to_owned(),
        }
    }
}

/// An image manifest or an index: both shapes in one view.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cosign_signature_manifest() {
        let json = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
          "config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"digest":"sha256:aa"},
          "layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":10,"digest":"sha256:bb",
            "annotations":{"dev.cosignproject.cosign/signature":"MEUC"}}]}"#;
        let m: Manifest = serde_json::from_str(json).unwrap();
        assert_eq!(m.layers.len(), 1);
        assert_eq!(
            m.layers[0].annotations["dev.cosignproject.cosign/signature"],
            "MEUC"
        );
        assert!(is_supported(OCI_MANIFEST));
        assert!(!is_supported(DOCKER_SCHEMA1));
        assert!(is_index(OCI_INDEX));
    }
}
