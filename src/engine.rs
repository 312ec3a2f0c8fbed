//! The one place the pipeline is wired:
//! reference → rule (no I/O) → resolve tag to digest → signatures → verify → verdict.
//!
//! The CLI and the webhook both call [`Engine::verify_image`], so they give the same answer for
//! the same image and policy.

mod checks;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Source, VerdictCache, VerdictKey};
use crate::config::Config;
use crate::policy::{DefaultAction, Match, Mode, Policy, Rule, RuleAction, VerifyPolicy};
use crate::reference::{Digest, ImageRef};
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};
use crate::telemetry::{Metrics, ResultLabel};
use crate::verdict::{AllowBasis, DenyReason, ImageVerdict, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What the caller knows about the request besides the images.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The pod's namespace (webhook) or `--namespace` (CLI).
    pub namespace: Option<String>,
    /// The pod carries `alpha.image-policy.k8s.io/break-glass: "true"`.
    pub break_glass: bool,
}

/// The verification engine. Share it behind an `Arc`; no locks on the request path.
pub struct Engine {
    policy: Policy,
    registry: RegistryClient,
    cache: VerdictCache,
    metrics: Arc<Metrics>,
    max_signatures: usize,
    deadline: Duration,
}

impl Engine {
    pub fn new(config: &Config) -> Result<Self, EngineError> {
        Self::with_metrics(config, Arc::new(Metrics::new()))
    }

    pub fn with_metrics(config: &Config, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let registry = RegistryClient::with_outcomes(
            config.registries.clone(),
            config.limits,
            Some(metrics.registry_requests.clone()),
        )?;
        Ok(Self {
            policy: config.policy.clone(),
            registry,
            cache: VerdictCache::new(&config.cache),
            metrics,
            max_signatures: config.max_signatures,
            deadline: config.server.review_timeout,
        })
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one image in `namespace` (see [`Engine::decide`]).
    pub async fn verify_image(&self, image: &str, namespace: Option<&str>) -> ImageVerdict {
        let ctx = Context {
            namespace: namespace.map(str::to_owned),
            break_glass: false,
        };
        self.decide(image, &ctx).await
    }

    /// Decides one image. Never fails: every error is a denial naming the cause. Bounded by the
    /// engine's deadline.
    pub async fn decide(&self, image: &str, ctx: &Context) -> ImageVerdict {
        let verdict = |reference: Option<&ImageRef>, rule: Option<&Rule>, verdict| ImageVerdict {
            image: image.to_owned(),
            reference: reference.map(ToString::to_string),
            digest: None,
            rule: rule.map(|r| r.name.clone()),
            verdict,
            source: Source::Fresh,
        };
        let reference = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => {
                return verdict(
                    None,
                    None,
                    Verdict::deny(DenyReason::InvalidReference {
                        error: e.to_string(),
                    }),
                )
            }
        };
        let rule = match self.policy.find(&reference, ctx.namespace.as_deref()) {
            Match::Default(DefaultAction::Allow) => {
                return verdict(
                    Some(&reference),
                    None,
                    Verdict::Allowed {
                        basis: AllowBasis::DefaultAllow,
                    },
                )
            }
            Match::Default(DefaultAction::Deny) => {
                return verdict(
                    Some(&reference),
                    None,
                    Verdict::deny(DenyReason::NoRuleMatches),
                )
            }
            Match::Rule(rule) => rule,
        };
        if ctx.break_glass && rule.break_glass {
            tracing::warn!(image, rule = %rule.name, namespace = ?ctx.namespace, "break-glass admission");
            return verdict(
                Some(&reference),
                Some(rule),
                Verdict::Allowed {
                    basis: AllowBasis::BreakGlass {
                        rule: rule.name.clone(),
                    },
                },
            );
        }
        let tag_reasons = tag_violations(rule, &reference);
        let mut out = if !tag_reasons.is_empty() {
            verdict(
                Some(&reference),
                Some(rule),
                Verdict::Denied {
                    reasons: tag_reasons,
                },
            )
        } else {
            match &rule.action {
                RuleAction::Allow => verdict(
                    Some(&reference),
                    Some(rule),
                    Verdict::Allowed {
                        basis: AllowBasis::RuleAllows {
                            rule: rule.name.clone(),
                        },
                    },
                ),
                RuleAction::Deny => verdict(
                    Some(&reference),
                    Some(rule),
                    Verdict::deny(DenyReason::RuleDenies {
                        rule: rule.name.clone(),
                    }),
                ),
                RuleAction::Verify(policy) => {
                    let work = self.verify(&reference, rule, policy);
                    let (digest, v, source) = match tokio::time::timeout(self.deadline, work).await
                    {
                        Ok(r) => r,
                        Err(_) => (
                            reference.digest().cloned(),
                            Verdict::deny(DenyReason::DeadlineExceeded {
                                seconds: self.deadline.as_secs(),
                            }),
                            Source::Fresh,
                        ),
                    };
                    let mut out =
                        verdict(Some(&reference), Some(rule), v).with_digest(digest.as_ref());
                    out.source = source;
                    out
                }
            }
        };
        if rule.mode == Mode::Warn {
            if let Verdict::Denied { reasons } = &out.verdict {
                tracing::warn!(image, rule = %rule.name, reasons = %out.explanation(), "warn mode: admitting an image that fails its rule");
                out.verdict = Verdict::Allowed {
                    basis: AllowBasis::Warned {
                        rule: rule.name.clone(),
                        reasons: reasons.clone(),
                    },
                };
            }
        }
        out
    }

    /// Resolves the digest (through the manifest cache), then the verdict for
    /// (repository, digest, rule) through the verdict cache.
    async fn verify(
        &self,
        reference: &ImageRef,
        rule: &Rule,
        policy: &VerifyPolicy,
    ) -> (Option<Digest>, Verdict, Source) {
        let repo = reference.repository();
        let digest = match reference.digest() {
            Some(d) => d.clone(),
            None => match self
                .manifest(reference, &reference.manifest_reference())
                .await
            {
                Ok(m) => m.digest.clone(),
                Err(e) => {
                    return (
                        None,
                        Verdict::deny(DenyReason::from_registry(&e)),
                        Source::Fresh,
                    )
                }
            },
        };
        let key = VerdictKey {
            repository: repo.clone(),
            digest: digest.clone(),
            rule_fingerprint: rule.fingerprint,
        };
        let fresh = || -> futures_util::future::BoxFuture<'_, Verdict> {
            Box::pin(async {
                let started = std::time::Instant::now();
                // Pinned by digest: make sure the image exists in this repository (by tag: it
                // was just resolved, and the manifest cache answers).
                let v = match self.manifest(reference, &digest.to_string()).await {
                    Ok(m) => self.evaluate(reference, &m, rule, policy).await,
                    Err(e) => Verdict::deny(DenyReason::from_registry(&e)),
                };
                self.metrics
                    .verification_seconds
                    .observe(started.elapsed().as_secs_f64());
                v
            })
        };
        let (v, source) = self.cache.verdict(key, fresh).await;
        let result = match source {
            Source::Fresh => "miss",
            Source::Cache => "hit",
            Source::Coalesced => "coalesced",
        };
        self.metrics
            .cache
            .get_or_create(&ResultLabel { result })
            .inc();
        (Some(digest), v, source)
    }

    /// A manifest through the manifest cache. A tag resolution also caches the manifest
    /// under its digest, so verifying it next costs no request.
    async fn manifest(
        &self,
        reference: &ImageRef,
        manifest_ref: &str,
    ) -> Result<Arc<FetchedManifest>, Arc<RegistryError>> {
        let repo = reference.repository();
        self.cache
            .manifest(repo, manifest_ref, || {
                Box::pin(self.registry.fetch_manifest(repo, manifest_ref))
            })
            .await
    }
}

/// Tag constraints, checked before any network I/O.
fn tag_violations(rule: &Rule, reference: &ImageRef) -> Vec<DenyReason> {
    let mut out = Vec::new();
    if rule.tags.forbid_latest && reference.digest().is_none() && reference.tag() == Some("latest")
    {
        out.push(DenyReason::LatestTagForbidden {
            rule: rule.name.clone(),
        });
    }
    if rule.tags.require_digest && reference.digest().is_none() {
        out.push(DenyReason::DigestRequired {
            rule: rule.name.clone(),
        });
    }
    out
}
