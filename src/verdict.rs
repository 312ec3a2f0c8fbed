//! Verdicts and deny reasons: the only user-facing text Portcullis produces.
//!
//! A reason says what failed in words a person can act on, and never contains credentials.
//! The image is named by [`ImageVerdict`]'s `Display`, so every reason reads
//! `image <ref>: <what failed>`.

use std::fmt;

use serde::Serialize;

use crate::reference::Digest;
use crate::registry::RegistryError;

/// What a registry failure amounts to, for the person reading the reason and for the cache
/// (transient failures are never cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryFailure {
    Unreachable,
    TimedOut,
    RateLimited,
    AuthFailed,
    ServerError,
    /// The registry answered, but with something we refuse: wrong digest, oversized, bad type.
    BadResponse,
}

impl RegistryFailure {
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Unreachable | Self::TimedOut | Self::RateLimited | Self::ServerError
        )
    }
}

/// Why one image was denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DenyReason {
    /// The reference could not be parsed.
    InvalidReference { error: String },
    /// No rule's `images` glob matched and `defaultAction` is deny.
    NoRuleMatches,
    /// The matching rule has `action: deny`.
    RuleDenies { rule: String },
    /// `tags.forbidLatest` and the image uses `latest` (explicitly or by default).
    LatestTagForbidden { rule: String },
    /// `tags.requireDigest` and the image is not pinned by digest.
    DigestRequired { rule: String },
    /// The registry has no such manifest.
    ImageNotFound { location: String },
    /// No signature artifact exists where cosign puts them.
    NoSignatures { location: String },
    /// Signature artifacts exist, but none of their layers is a cosign signature.
    NoSignatureLayers { location: String, layers: usize },
    /// Signatures exist but none verifies with a trusted key.
    UntrustedSignatures {
        location: String,
        signatures: usize,
        keys: usize,
    },
    /// A signature is malformed (not base64 / not a signature encoding / payload not JSON).
    SignatureInvalid { location: String, detail: String },
    /// A trusted key signed a payload for another image digest (a replayed signature).
    PayloadForOtherDigest {
        location: String,
        payload_digest: String,
    },
    /// A trusted key signed a payload that is not a cosign container image signature.
    PayloadWrongType { location: String, found: String },
    /// Fewer distinct authorities signed than the rule's threshold.
    ThresholdNotMet {
        location: String,
        verified: Vec<String>,
        threshold: usize,
        authorities: usize,
    },
    /// An `attestations:` requirement failed.
    Attestation {
        name: String,
        predicate_type: String,
        failure: AttestationFailure,
    },
    /// `multiArch: platforms`: one platform's manifest failed.
    Platform {
        platform: String,
        digest: String,
        reasons: Vec<DenyReason>,
    },
    /// More signature layers than `limits.maxSignatures`, and none of those examined passed.
    TooManySignatures {
        location: String,
        examined: usize,
        total: usize,
    },
    /// Talking to the registry failed.
    Registry {
        failure: RegistryFailure,
        detail: String,
    },
    /// Verification did not finish before the deadline.
    DeadlineExceeded { seconds: u64 },
}

/// Why one `attestations:` requirement failed (the failure closest to passing is reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "failure", rename_all = "kebab-case")]
pub enum AttestationFailure {
    NoneFound {
        location: String,
        found_types: Vec<String>,
    },
    Malformed {
        location: String,
        detail: String,
    },
    NotTrusted {
        location: String,
        count: usize,
    },
    OtherSubject {
        subjects: Vec<String>,
    },
    ConditionFalse {
        condition: String,
    },
    ConditionError {
        condition: String,
        error: String,
    },
}

impl AttestationFailure {
    /// Closeness to passing, to pick the most useful failure to report.
    pub fn rank(&self) -> u8 {
        match self {
            Self::NoneFound { .. } => 0,
            Self::Malformed { .. } => 1,
            Self::NotTrusted { .. } => 2,
            Self::OtherSubject { .. } => 3,
            Self::ConditionError { .. } => 4,
            Self::ConditionFalse { .. } => 5,
        }
    }
}

impl DenyReason {
    /// A short stable name for the reason (the JSON `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "invalid-reference",
            Self::NoRuleMatches => "no-rule-matches",
            Self::RuleDenies { .. } => "rule-denies",
            Self::LatestTagForbidden { .. } => "latest-tag-forbidden",
            Self::DigestRequired { .. } => "digest-required",
            Self::ImageNotFound { .. } => "image-not-found",
            Self::NoSignatures { .. } => "no-signatures",
            Self::NoSignatureLayers { .. } => "no-signature-layers",
            Self::UntrustedSignatures { .. } => "untrusted-signatures",
            Self::SignatureInvalid { .. } => "signature-invalid",
            Self::PayloadForOtherDigest { .. } => "payload-for-other-digest",
            Self::PayloadWrongType { .. } => "payload-wrong-type",
            Self::TooManySignatures { .. } => "too-many-signatures",
            Self::ThresholdNotMet { .. } => "threshold-not-met",
            Self::Attestation { .. } => "attestation",
            Self::Platform { .. } => "platform",
            Self::Registry { .. } => "registry",
            Self::DeadlineExceeded { .. } => "deadline-exceeded",
        }
    }

    /// Transient reasons are worth retrying and must never be cached.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Registry { failure, .. } => failure.is_transient(),
            Self::DeadlineExceeded { .. } => true,
            Self::Platform { reasons, .. } => reasons.iter().any(Self::is_transient),
            _ => false,
        }
    }

    /// Maps a registry error to a reason; `location` says what we were fetching.
    pub fn from_registry(err: &RegistryError) -> Self {
        if let RegistryError::NotFound { url, .. } = err {
            return Self::ImageNotFound {
                location: url.clone(),
            };
        }
        Self::Registry {
            failure: err.failure(),
            detail: err.to_string(),
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidReference { error } => write!(f, "{error}"),
            Self::NoRuleMatches => write!(f, "no policy rule matches this image and defaultAction is deny"),
            Self::RuleDenies { rule } => write!(f, "rule {rule:?} denies this image (action: deny)"),
            Self::LatestTagForbidden { rule } => write!(
                f,
                "rule {rule:?} forbids the tag latest: use a versioned tag or a digest"
            ),
            Self::DigestRequired { rule } => write!(
                f,
                "rule {rule:?} requires the image to be pinned by digest (name@sha256:...)"
            ),
            Self::ImageNotFound { location } => {
                write!(f, "image not found in the registry ({location})")
            }
            Self::NoSignatures { location } => write!(
                f,
                "no signatures found (looked for the cosign signature tag {location}); sign the image with cosign"
            ),
            Self::NoSignatureLayers { location, layers } => write!(
                f,
                "no signatures found: {location} has {layers} layer(s) but none is a cosign signature (application/vnd.dev.cosign.simplesigning.v1+json with a signature annotation)"
            ),
            Self::UntrustedSignatures {
                location,
                signatures,
                keys,
            } => write!(
                f,
                "signed, but not by a trusted key: none of the {signatures} signature(s) in {location} verifies with the rule's {keys} key(s) (signed by another key, or the signed payload was altered)"
            ),
            Self::SignatureInvalid { location, detail } => {
                write!(f, "signature invalid in {location}: {detail}")
            }
            Self::PayloadForOtherDigest {
                location,
                payload_digest,
            } => write!(
                f,
                "a trusted signature in {location} is for another image ({payload_digest}): a signature copied from another digest does not count"
            ),
            Self::PayloadWrongType { location, found } => write!(
                f,
                "a trusted signature in {location} has payload type {found:?}, not \"cosign container image signature\""
            ),
            Self::ThresholdNotMet {
                location,
                verified,
                threshold,
                authorities,
            } => write!(
                f,
                "signatures in {location}: {} of the {threshold} required authorities verified (threshold {threshold} of {authorities}){}",
                verified.len(),
                if verified.is_empty() { String::new() } else { format!("; verified: {}", verified.join(", ")) }
            ),
            Self::Attestation {
                name,
                predicate_type,
                failure,
            } => {
                write!(f, "attestation {name:?}: ")?;
                match failure {
                    AttestationFailure::NoneFound {
                        location,
                        found_types,
                    } => {
                        write!(f, "none of predicate type {predicate_type} found in {location}")?;
                        if !found_types.is_empty() {
                            write!(f, " (found: {})", found_types.join(", "))?;
                        }
                        Ok(())
                    }
                    AttestationFailure::NotTrusted { location, count } => write!(
                        f,
                        "{count} attestation(s) of type {predicate_type} in {location}, but not signed by a trusted authority"
                    ),
                    AttestationFailure::OtherSubject { subjects } => write!(
                        f,
                        "a trusted attestation of type {predicate_type} is for another image (subject {})",
                        subjects.join(", ")
                    ),
                    AttestationFailure::ConditionFalse { condition } => {
                        write!(f, "condition is false: {condition}")
                    }
                    AttestationFailure::ConditionError { condition, error } => {
                        write!(f, "condition failed to evaluate: {condition}: {error}")
                    }
                    AttestationFailure::Malformed { location, detail } => {
                        write!(f, "malformed attestation in {location}: {detail}")
                    }
                }
            }
            Self::Platform {
                platform,
                digest,
                reasons,
            } => write!(
                f,
                "platform {platform} ({digest}): {}",
                reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ),
            Self::TooManySignatures {
                location,
                examined,
                total,
            } => write!(
                f,
                "{location} has {total} signature layers; only the first {examined} were examined (limits.maxSignatures) and none verified"
            ),
            Self::Registry { failure, detail } => {
                let what = match failure {
                    RegistryFailure::Unreachable => "registry unreachable",
                    RegistryFailure::TimedOut => "registry timed out",
                    RegistryFailure::RateLimited => "registry rate limited us",
                    RegistryFailure::AuthFailed => "registry authentication failed",
                    RegistryFailure::ServerError => "registry server error",
                    RegistryFailure::BadResponse => "registry sent a bad response",
                };
                write!(f, "{what}: {detail}")
            }
            Self::DeadlineExceeded { seconds } => write!(
                f,
                "verification did not finish within the {seconds}s deadline"
            ),
        }
    }
}

/// What allowed an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AllowBasis {
    /// The rule has `action: allow` (no verification, no registry I/O).
    RuleAllows { rule: String },
    /// `defaultAction: allow` and no rule matched.
    DefaultAllow,
    /// The pod asked for break-glass and the rule honours it (audited).
    BreakGlass { rule: String },
    /// The evidence the rule asks for verified.
    Verified {
        rule: String,
        /// Authorities whose signatures verified.
        signed_by: Vec<String>,
        attestations: Vec<AttestationPass>,
        /// `multiArch: platforms`: the platforms verified too.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        platforms: Vec<String>,
    },
    /// `mode: warn`: the rule's checks failed, but it only warns.
    Warned {
        rule: String,
        reasons: Vec<DenyReason>,
    },
}

/// One attestation requirement that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationPass {
    pub name: String,
    pub predicate_type: String,
    pub signed_by: String,
}

impl fmt::Display for AllowBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RuleAllows { rule } => write!(f, "allowed by rule {rule:?} (action: allow)"),
            Self::DefaultAllow => write!(f, "no rule matches; defaultAction is allow"),
            Self::BreakGlass { rule } => write!(
                f,
                "BREAK-GLASS: admitted without verification (rule {rule:?} honours alpha.image-policy.k8s.io/break-glass)"
            ),
            Self::Verified {
                rule,
                signed_by,
                attestations,
                platforms,
            } => {
                let mut parts = Vec::new();
                if !signed_by.is_empty() {
                    parts.push(format!("signature verified with key {}", signed_by.join(", ")));
                }
                for a in attestations {
                    parts.push(format!("attestation {:?} verified with {}", a.name, a.signed_by));
                }
                if !platforms.is_empty() {
                    parts.push(format!("platforms {} verified", platforms.join(", ")));
                }
                write!(f, "{} (rule {rule:?})", parts.join("; "))
            }
            Self::Warned { rule, reasons } => write!(
                f,
                "WARNING (rule {rule:?} is in warn mode, so this is admitted): {}",
                reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ),
        }
    }
}

/// The answer for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Allowed { basis: AllowBasis },
    Denied { reasons: Vec<DenyReason> },
}

impl Verdict {
    pub fn deny(reason: DenyReason) -> Self {
        Self::Denied {
            reasons: vec![reason],
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Allowed { .. } => false,
            Self::Denied { reasons } => reasons.iter().any(DenyReason::is_transient),
        }
    }
}

/// One image's verdict with the facts around it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageVerdict {
    /// The image as it was given.
    pub image: String,
    /// Normalised reference, when it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The digest the decision is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The rule that governed the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether the verdict was computed now or came from the cache.
    pub source: crate::cache::Source,
}

impl ImageVerdict {
    pub fn with_digest(mut self, digest: Option<&Digest>) -> Self {
        self.digest = digest.map(ToString::to_string);
        self
    }

    /// `; `-joined reasons, or the allow basis.
    pub fn explanation(&self) -> String {
        match &self.verdict {
            Verdict::Allowed { basis } => basis.to_string(),
            Verdict::Denied { reasons } => reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl fmt::Display for ImageVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.verdict.is_allowed() {
            "ALLOWED"
        } else {
            "DENIED"
        };
        let name = self.reference.as_deref().unwrap_or(&self.image);
        write!(f, "{word} image {name}")?;
        if let Some(d) = &self.digest {
            if !name.contains(d.as_str()) {
                write!(f, "@{d}")?;
            }
        }
        write!(f, ": {}", self.explanation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_reasons_are_registry_blips_and_deadlines() {
        let r = |failure| DenyReason::Registry {
            failure,
            detail: String::new(),
        };
        assert!(r(RegistryFailure::TimedOut).is_transient());
        assert!(r(RegistryFailure::RateLimited).is_transient());
        assert!(r(RegistryFailure::ServerError).is_transient());
        assert!(r(RegistryFailure::Unreachable).is_transient());
        assert!(!r(RegistryFailure::AuthFailed).is_transient());
        assert!(!r(RegistryFailure::BadResponse).is_transient());
        assert!(!DenyReason::NoRuleMatches.is_transient());
        assert!(DenyReason::DeadlineExceeded { seconds: 1 }.is_transient());
    }

    #[test]
    fn display_names_the_image_and_digest() {
        let v = ImageVerdict {
            image: "app:1".into(),
            reference: Some("docker.io/library/app:1".into()),
            digest: Some("sha256:ab".into()),
            rule: Some("prod".into()),
            source: crate::cache::Source::Fresh,
            verdict: Verdict::deny(DenyReason::NoSignatures {
                location: "docker.io/library/app:sha256-ab.sig".into(),
            }),
        };
        let s = v.to_string();
        assert!(
            s.starts_with("DENIED image docker.io/library/app:1@sha256:ab: no signatures found")
        );
    }
}
