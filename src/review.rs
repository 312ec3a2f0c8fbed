//! `imagepolicy.k8s.io/v1alpha1` ImageReview wire types, with kube-apiserver's exact field
//! names (`plugin/pkg/admission/imagepolicy` and `k8s.io/api/imagepolicy/v1alpha1`).
//!
//! kube-apiserver ≥ 1.33 sends `"metadata":{}`; older ones `{"creationTimestamp":null}`: both
//! are accepted (metadata is not read). `containers`, `annotations` and `namespace` may be
//! absent, and a container may be `{}` (no image).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "imagepolicy.k8s.io/v1alpha1";
pub const KIND: &str = "ImageReview";
/// Pod annotation that asks for break-glass admission (GKE Binary Authorization's convention;
/// the apiserver forwards it because its key contains `.image-policy.k8s.io/`).
pub const BREAK_GLASS_ANNOTATION: &str = "alpha.image-policy.k8s.io/break-glass";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReview {
    pub api_version: String,
    pub kind: String,
    /// Not read (and not parsed beyond skipping it).
    #[serde(default, skip_serializing)]
    pub metadata: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "ImageReviewSpec::is_empty")]
    pub spec: ImageReviewSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ImageReviewStatus>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReviewSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ImageReviewContainerSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ImageReviewSpec {
    fn is_empty(&self) -> bool {
        self.containers.is_none() && self.annotations.is_none() && self.namespace.is_none()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ImageReviewContainerSpec {
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReviewStatus {
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// Why a request body is not an ImageReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not a valid ImageReview: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported apiVersion {0:?} (expected imagepolicy.k8s.io/v1alpha1)")]
    ApiVersion(String),
    #[error("unsupported kind {0:?} (expected ImageReview)")]
    Kind(String),
}

impl ImageReview {
    /// Parses and checks apiVersion and kind.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        let review: Self = serde_json::from_slice(body)?;
        if review.api_version != API_VERSION {
            return Err(ReviewError::ApiVersion(review.api_version));
        }
        if review.kind != KIND {
            return Err(ReviewError::Kind(review.kind));
        }
        Ok(review)
    }

    /// The images in order, empty entries skipped.
    pub fn images(&self) -> Vec<String> {
        self.spec
            .containers
            .iter()
            .flatten()
            .filter_map(|c| c.image.clone())
            .filter(|i| !i.is_empty())
            .collect()
    }

    pub fn break_glass_requested(&self) -> bool {
        self.spec
            .annotations
            .as_ref()
            .and_then(|a| a.get(BREAK_GLASS_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The answer: the same kind and apiVersion with a status.
    pub fn answer(status: ImageReviewStatus) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: None,
            spec: ImageReviewSpec::default(),
            status: Some(status),
        }
    }
}

/// kube-apiserver drops audit annotation keys that are not 1–63 chars of `[A-Za-z0-9-_.]`.
pub fn valid_audit_key(key: &str) -> bool {
    (1..=63).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_apiserver_body_byte_for_byte() {
        let body = br#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{},"spec":{"containers":[{"image":"app:1"},{"image":"init:1"}],"annotations":{"x.image-policy.k8s.io/k":"v"},"namespace":"ns"},"status":{"allowed":false}}
"#;
        let r = ImageReview::parse(body).unwrap();
        assert_eq!(r.images(), vec!["app:1", "init:1"]);
        assert_eq!(r.spec.namespace.as_deref(), Some("ns"));
        assert!(!r.break_glass_requested());
    }

    #[test]
    fn accepts_old_metadata_absent_fields_and_empty_containers() {
        let body = br#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[{},{"image":"a"}]},"status":{"allowed":false}}"#;
        assert_eq!(ImageReview::parse(body).unwrap().images(), vec!["a"]);
        let body =
            br#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{}}"#;
        assert!(ImageReview::parse(body).unwrap().images().is_empty());
    }

    #[test]
    fn rejects_wrong_kind_version_and_types() {
        for body in [
            &br#"{"kind":"Pod","apiVersion":"imagepolicy.k8s.io/v1alpha1"}"#[..],
            br#"{"kind":"ImageReview","apiVersion":"v1"}"#,
            br#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":"x"}}"#,
            br#"not json"#,
        ] {
            assert!(ImageReview::parse(body).is_err());
        }
    }

    #[test]
    fn answer_serialises_with_exact_field_names() {
        let mut status = ImageReviewStatus {
            allowed: false,
            reason: "no".into(),
            ..Default::default()
        };
        status.audit_annotations.insert("k".into(), "v".into());
        let json = serde_json::to_string(&ImageReview::answer(status)).unwrap();
        assert!(json.contains(r#""apiVersion":"imagepolicy.k8s.io/v1alpha1""#));
        assert!(!json.contains("spec"), "{json}");
        assert!(
            json.contains(
                r#""status":{"allowed":false,"reason":"no","auditAnnotations":{"k":"v"}}"#
            ),
            "{json}"
        );
        assert!(valid_audit_key("image.0.digest"));
        assert!(!valid_audit_key("a/b"));
        assert!(!valid_audit_key(&"x".repeat(64)));
    }

    #[test]
    fn break_glass_annotation_is_read() {
        let body = br#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"annotations":{"alpha.image-policy.k8s.io/break-glass":"true"}}}"#;
        assert!(ImageReview::parse(body).unwrap().break_glass_requested());
    }
}
