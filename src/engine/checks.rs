//! The evidence checks a `Verify` rule asks for, for one digest: signatures (M-of-N
//! authorities), attestations (each with its own authorities and CEL condition), and with
//! `multiArch: platforms` the signatures of every platform of an index.

use std::collections::BTreeSet;

use crate::evidence::{self, Kind};
use crate::policy::condition::ImageFacts;
use crate::policy::{AttestationPolicy, MultiArch, Rule, SignaturePolicy, VerifyPolicy};
use crate::reference::{Digest, ImageRef, Repository};
use crate::registry::manifest::is_index;
use crate::registry::{FetchedManifest, RegistryError};
use crate::verdict::{AllowBasis, AttestationFailure, AttestationPass, DenyReason, Verdict};
use crate::verify::dsse::{self, AttestationOutcome};
use crate::verify::{self, SignatureOutcome, TrustedKey};

use super::Engine;

impl Engine {
    /// All checks of `policy` for the image whose (digest-verified) manifest is `manifest`.
    pub(super) async fn evaluate(
        &self,
        reference: &ImageRef,
        manifest: &FetchedManifest,
        rule: &Rule,
        policy: &VerifyPolicy,
    ) -> Verdict {
        let repo = reference.repository();
        let digest = &manifest.digest;
        let mut reasons = Vec::new();
        let mut signed_by = Vec::new();
        if let Some(sp) = &policy.signatures {
            match self.signatures(repo, digest, sp).await {
                Ok(names) => signed_by = names,
                Err(r) => reasons.extend(r),
            }
        }
        let mut attestations = Vec::new();
        if !policy.attestations.is_empty() {
            match self
                .attestations(reference, digest, &policy.attestations)
                .await
            {
                Ok(passes) => attestations = passes,
                Err(r) => reasons.extend(r),
            }
        }
        let mut platforms = Vec::new();
        if reasons.is_empty()
            && policy.multi_arch == MultiArch::Platforms
            && is_index(&manifest.media_type)
        {
            if let Some(sp) = &policy.signatures {
                match self.platforms(repo, manifest, sp).await {
                    Ok(p) => platforms = p,
                    Err(r) => reasons.extend(r),
                }
            }
        }
        if reasons.is_empty() {
            Verdict::Allowed {
                basis: AllowBasis::Verified {
                    rule: rule.name.clone(),
                    signed_by,
                    attestations,
                    platforms,
                },
            }
        } else {
            Verdict::Denied { reasons }
        }
    }

    /// Distinct authorities whose signatures verify, until the threshold is met.
    async fn signatures(
        &self,
        repo: &Repository,
        digest: &Digest,
        sp: &SignaturePolicy,
    ) -> Result<Vec<String>, Vec<DenyReason>> {
        let location = evidence::location(repo, digest, Kind::Signatures);
        let artifact =
            match evidence::artifact(&self.registry, repo, digest, Kind::Signatures).await {
                Ok(Some(a)) => a,
                Ok(None) => return Err(vec![DenyReason::NoSignatures { location }]),
                Err(e) => return Err(vec![registry_reason(&e)]),
            };
        let (layers, others) = artifact.signature_layers();
        if layers.is_empty() {
            return Err(vec![DenyReason::NoSignatureLayers {
                location,
                layers: others,
            }]);
        }
        let keys = sp.keys();
        let mut verified = BTreeSet::new();
        let mut tally = Tally::default();
        for layer in layers.iter().take(self.max_signatures) {
            let payload = match self.registry.fetch_blob(repo, &layer.blob).await {
                Ok(p) => p,
                Err(e) => {
                    tally.fetch_errors.push(registry_reason(&e));
                    continue;
                }
            };
            match verify::simple_signing(&payload, &layer.signature, digest, &keys) {
                SignatureOutcome::Verified { key_index } => {
                    verified.insert(key_index);
                    if verified.len() >= sp.threshold {
                        break;
                    }
                }
                outcome => tally.add(outcome),
            }
        }
        let names: Vec<String> = verified
            .iter()
            .filter_map(|&i| sp.authorities.get(i).map(|a| a.name.clone()))
            .collect();
        if names.len() >= sp.threshold {
            return Ok(names);
        }
        let mut reasons = Vec::new();
        if sp.threshold > 1 || !names.is_empty() {
            reasons.push(DenyReason::ThresholdNotMet {
                location: location.clone(),
                verified: names,
                threshold: sp.threshold,
                authorities: sp.authorities.len(),
            });
        }
        reasons.extend(tally.reasons(&location, keys.len(), layers.len(), self.max_signatures));
        Err(reasons)
    }

    /// Every requirement must be met by some envelope of the `.att` artifact.
    async fn attestations(
        &self,
        reference: &ImageRef,
        digest: &Digest,
        required: &[AttestationPolicy],
    ) -> Result<Vec<AttestationPass>, Vec<DenyReason>> {
        let repo = reference.repository();
        let location = evidence::location(repo, digest, Kind::Attestations);
        let artifact =
            match evidence::artifact(&self.registry, repo, digest, Kind::Attestations).await {
                Ok(a) => a,
                Err(e) => return Err(vec![registry_reason(&e)]),
            };
        let mut envelopes = Vec::new();
        let mut fetch_errors = Vec::new();
        let layers = artifact
            .as_ref()
            .map(|a| a.envelope_layers())
            .unwrap_or_default();
        for layer in layers.iter().take(self.max_signatures) {
            match self.registry.fetch_blob(repo, layer).await {
                Ok(blob) => envelopes.push(dsse::parse(&blob)),
                Err(e) => fetch_errors.push(registry_reason(&e)),
            }
        }
        let facts = ImageFacts {
            registry: repo.registry().to_owned(),
            repository: repo.path().to_owned(),
            tag: reference.tag().unwrap_or_default().to_owned(),
            digest: digest.to_string(),
        };
        let now = chrono::Utc::now();
        let mut passes = Vec::new();
        let mut reasons = Vec::new();
        for req in required {
            match check_one(req, &envelopes, digest, &facts, now, &location) {
                Ok(pass) => passes.push(pass),
                Err(failure) => {
                    reasons.push(DenyReason::Attestation {
                        name: req.name.clone(),
                        predicate_type: req.predicate_type.clone(),
                        failure,
                    });
                }
            }
        }
        if reasons.is_empty() {
            Ok(passes)
        } else {
            reasons.extend(fetch_errors);
            if layers.len() > self.max_signatures {
                reasons.push(DenyReason::TooManySignatures {
                    location,
                    examined: self.max_signatures,
                    total: layers.len(),
                });
            }
            Err(reasons)
        }
    }

    /// `multiArch: platforms`: each platform manifest of the index needs its own signatures.
    async fn platforms(
        &self,
        repo: &Repository,
        index: &FetchedManifest,
        sp: &SignaturePolicy,
    ) -> Result<Vec<String>, Vec<DenyReason>> {
        let mut verified = Vec::new();
        let mut reasons = Vec::new();
        for child in &index.manifest.manifests {
            let platform = child.platform_name();
            if platform.starts_with("unknown/") {
                continue; // BuildKit attestation manifests, not runnable images
            }
            let digest = match Digest::parse(&child.digest) {
                Ok(d) => d,
                Err(e) => {
                    reasons.push(DenyReason::Platform {
                        platform,
                        digest: child.digest.clone(),
                        reasons: vec![DenyReason::SignatureInvalid {
                            location: repo.to_string(),
                            detail: e.to_string(),
                        }],
                    });
                    continue;
                }
            };
            let result = match self
                .registry
                .fetch_manifest(repo, &digest.to_string())
                .await
            {
                Ok(_) => self.signatures(repo, &digest, sp).await.map(|_| ()),
                Err(e) => Err(vec![DenyReason::from_registry(&e)]),
            };
            match result {
                Ok(()) => verified.push(platform),
                Err(r) => reasons.push(DenyReason::Platform {
                    platform,
                    digest: digest.to_string(),
                    reasons: r,
                }),
            }
        }
        if reasons.is_empty() {
            Ok(verified)
        } else {
            Err(reasons)
        }
    }
}

/// One requirement against the parsed envelopes: the first that passes, or the failure
/// closest to passing.
fn check_one(
    req: &AttestationPolicy,
    envelopes: &[Result<dsse::ParsedEnvelope, String>],
    digest: &Digest,
    facts: &ImageFacts,
    now: chrono::DateTime<chrono::Utc>,
    location: &str,
) -> Result<AttestationPass, AttestationFailure> {
    let keys: Vec<TrustedKey> = req.authorities.iter().map(|a| a.key.clone()).collect();
    let mut best: Option<AttestationFailure> = None;
    let mut found_types = BTreeSet::new();
    let mut not_trusted = 0;
    let consider = |f: AttestationFailure, best: &mut Option<AttestationFailure>| {
        if best.as_ref().is_none_or(|b| f.rank() > b.rank()) {
            *best = Some(f);
        }
    };
    for env in envelopes {
        let env = match env {
            Ok(e) => e,
            Err(detail) => {
                let f = AttestationFailure::Malformed {
                    location: location.to_owned(),
                    detail: detail.clone(),
                };
                consider(f, &mut best);
                continue;
            }
        };
        match env.check(digest, &req.predicate_type, &keys) {
            AttestationOutcome::Verified {
                authority_index,
                statement,
            } => {
                let signed_by = req
                    .authorities
                    .get(authority_index)
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                let Some(condition) = &req.condition else {
                    return Ok(pass(req, signed_by));
                };
                match condition.evaluate(&statement, facts, now) {
                    Ok(true) => return Ok(pass(req, signed_by)),
                    Ok(false) => consider(
                        AttestationFailure::ConditionFalse {
                            condition: condition.source().to_owned(),
                        },
                        &mut best,
                    ),
                    Err(e) => consider(
                        AttestationFailure::ConditionError {
                            condition: condition.source().to_owned(),
                            error: e.to_string(),
                        },
                        &mut best,
                    ),
                }
            }
            AttestationOutcome::OtherType(t) => {
                found_types.insert(t);
            }
            AttestationOutcome::NotTrusted => not_trusted += 1,
            AttestationOutcome::OtherSubject(subjects) => {
                consider(AttestationFailure::OtherSubject { subjects }, &mut best)
            }
            AttestationOutcome::Malformed(detail) => consider(
                AttestationFailure::Malformed {
                    location: location.to_owned(),
                    detail,
                },
                &mut best,
            ),
        }
    }
    if not_trusted > 0 {
        consider(
            AttestationFailure::NotTrusted {
                location: location.to_owned(),
                count: not_trusted,
            },
            &mut best,
        );
    }
    Err(best.unwrap_or(AttestationFailure::NoneFound {
        location: location.to_owned(),
        found_types: found_types.into_iter().collect(),
    }))
}

fn pass(req: &AttestationPolicy, signed_by: String) -> AttestationPass {
    AttestationPass {
        name: req.name.clone(),
        predicate_type: req.predicate_type.clone(),
        signed_by,
    }
}

/// Why no signature layer passed, kept per kind so the reason says what actually happened.
#[derive(Default)]
struct Tally {
    not_trusted: usize,
    malformed: Vec<String>,
    other_digest: Vec<String>,
    wrong_type: Vec<String>,
    fetch_errors: Vec<DenyReason>,
}

impl Tally {
    fn add(&mut self, outcome: SignatureOutcome) {
        match outcome {
            SignatureOutcome::Verified { .. } => {}
            SignatureOutcome::NotTrusted => self.not_trusted += 1,
            SignatureOutcome::Malformed(m) => self.malformed.push(m),
            SignatureOutcome::OtherDigest(d) => self.other_digest.push(d),
            SignatureOutcome::WrongType(t) => self.wrong_type.push(t),
        }
    }

    fn reasons(self, location: &str, keys: usize, total: usize, max: usize) -> Vec<DenyReason> {
        let location = location.to_owned();
        let mut out = Vec::new();
        if let Some(d) = self.other_digest.into_iter().next() {
            out.push(DenyReason::PayloadForOtherDigest {
                location: location.clone(),
                payload_digest: d,
            });
        }
        if let Some(t) = self.wrong_type.into_iter().next() {
            out.push(DenyReason::PayloadWrongType {
                location: location.clone(),
                found: t,
            });
        }
        if let Some(m) = self.malformed.into_iter().next() {
            out.push(DenyReason::SignatureInvalid {
                location: location.clone(),
                detail: m,
            });
        }
        if self.not_trusted > 0 {
            out.push(DenyReason::UntrustedSignatures {
                location: location.clone(),
                signatures: self.not_trusted,
                keys,
            });
        }
        out.extend(self.fetch_errors);
        if total > max {
            out.push(DenyReason::TooManySignatures {
                location,
                examined: max,
                total,
            });
        }
        out
    }
}

/// A registry error while fetching evidence: a 404 here means the artifact vanished, not that
/// the image is missing.
fn registry_reason(e: &RegistryError) -> DenyReason {
    DenyReason::Registry {
        failure: e.failure(),
        detail: e.to_string(),
    }
}
