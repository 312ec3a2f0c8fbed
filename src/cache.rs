//! Caches around the digest-keyed part of the pipeline (moka, lock-free reads):
//!
//! - **verdicts**, keyed by (repository, digest, rule fingerprint) — never by tag: cosign
//!   signatures live in the image's repository, so the same digest elsewhere may be unsigned,
//!   and a policy change gives the rule a new fingerprint. Allowed verdicts live `allowTTL`,
//!   denied `denyTTL` (set them to the apiserver's). Transient denials (registry down, 429,
//!   timeout) are never stored. Concurrent identical misses coalesce into one verification.
//! - **manifests**, keyed by (repository, tag or digest), for `resolveTTL`: tag → digest
//!   resolution, bounded by total bytes.

use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::reference::{Digest, Repository};
use crate::registry::{FetchedManifest, RegistryError};
use crate::verdict::Verdict;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub repository: Repository,
    pub digest: Digest,
    pub rule_fingerprint: u64,
}

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Verified by this call.
    Fresh,
    /// Already in the cache.
    Cache,
    /// Verified by a concurrent identical call that this one waited for.
    Coalesced,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Cache => "cache",
            Self::Coalesced => "coalesced",
        }
    }
}

struct VerdictExpiry {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<VerdictKey, Arc<Verdict>> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _key: &VerdictKey,
        value: &Arc<Verdict>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.is_allowed() {
            self.allow
        } else {
            self.deny
        })
    }
}

pub struct VerdictCache {
    verdicts: moka::future::Cache<VerdictKey, Arc<Verdict>>,
    manifests: moka::future::Cache<(Repository, String), Arc<FetchedManifest>>,
}

impl VerdictCache {
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            verdicts: moka::future::Cache::builder()
                .max_capacity(config.max_entries)
                .expire_after(VerdictExpiry {
                    allow: config.allow_ttl,
                    deny: config.deny_ttl,
                })
                .build(),
            manifests: moka::future::Cache::builder()
                .max_capacity(64 * 1024 * 1024)
                .weigher(|_k, v: &Arc<FetchedManifest>| {
                    u32::try_from(v.bytes.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(config.resolve_ttl)
                .build(),
        }
    }

    /// The cached verdict for `key`, or the result of `verify` — run once however many callers
    /// ask at the same time. Transient verdicts are returned but not stored.
    ///
    /// `verify` makes the (boxed) verification only on a miss: the hit path neither builds nor
    /// moves the large cold-path future.
    pub async fn verdict<'a, F>(&self, key: VerdictKey, verify: F) -> (Verdict, Source)
    where
        F: FnOnce() -> BoxFuture<'a, Verdict>,
    {
        if let Some(v) = self.verdicts.get(&key).await {
            return ((*v).clone(), Source::Cache);
        }
        let ran = AtomicBool::new(false);
        let init = async {
            ran.store(true, Ordering::Relaxed);
            let v = verify().await;
            if v.is_transient() {
                Err(v)
            } else {
                Ok(Arc::new(v))
            }
        };
        let result = self.verdicts.entry(key).or_try_insert_with(init).await;
        let source = if ran.load(Ordering::Relaxed) {
            Source::Fresh
        } else {
            Source::Coalesced
        };
        match result {
            Ok(entry) => ((*entry.into_value()).clone(), source),
            Err(transient) => ((*transient).clone(), source),
        }
    }

    /// A manifest by (repository, tag or digest), fetched once per `resolveTTL` however many
    /// callers ask at the same time. A manifest fetched by tag is also stored under its digest,
    /// so verifying it next costs no request.
    pub async fn manifest<'a, F>(
        &self,
        repository: &Repository,
        reference: &str,
        fetch: F,
    ) -> Result<Arc<FetchedManifest>, Arc<RegistryError>>
    where
        F: FnOnce() -> BoxFuture<'a, Result<FetchedManifest, RegistryError>>,
    {
        let key = (repository.clone(), reference.to_owned());
        if let Some(m) = self.manifests.get(&key).await {
            return Ok(m);
        }
        self.manifests
            .try_get_with(key, async {
                let m = Arc::new(fetch().await?);
                let by_digest = m.digest.to_string();
                if by_digest != reference {
                    self.manifests
                        .insert((repository.clone(), by_digest), Arc::clone(&m))
                        .await;
                }
                Ok(m)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageRef;
    use crate::verdict::{AllowBasis, DenyReason, RegistryFailure};
    use std::sync::atomic::AtomicUsize;

    fn key(n: u64) -> VerdictKey {
        VerdictKey {
            repository: ImageRef::parse("r.io/a").unwrap().repository().clone(),
            digest: Digest::of(b"x"),
            rule_fingerprint: n,
        }
    }

    fn cache(allow: u64, deny: u64) -> VerdictCache {
        VerdictCache::new(&CacheConfig {
            allow_ttl: Duration::from_millis(allow),
            deny_ttl: Duration::from_millis(deny),
            resolve_ttl: Duration::from_secs(1),
            max_entries: 100,
        })
    }

    fn allowed() -> Verdict {
        Verdict::Allowed {
            basis: AllowBasis::DefaultAllow,
        }
    }

    #[tokio::test]
    async fn caches_then_serves_from_cache_per_key() {
        let c = cache(60_000, 60_000);
        let (_, s) = c.verdict(key(1), || Box::pin(async { allowed() })).await;
        assert_eq!(s, Source::Fresh);
        let (v, s) = c
            .verdict(key(1), || Box::pin(async { unreachable!() }))
            .await;
        assert_eq!(s, Source::Cache);
        assert!(v.is_allowed());
        // Another rule fingerprint is another key.
        let (_, s) = c.verdict(key(2), || Box::pin(async { allowed() })).await;
        assert_eq!(s, Source::Fresh);
    }

    #[tokio::test]
    async fn transient_denials_are_not_cached() {
        let c = cache(60_000, 60_000);
        let transient = || {
            Verdict::deny(DenyReason::Registry {
                failure: RegistryFailure::TimedOut,
                detail: String::new(),
            })
        };
        let (v, _) = c.verdict(key(1), || Box::pin(async { transient() })).await;
        assert!(v.is_transient());
        let (_, s) = c.verdict(key(1), || Box::pin(async { allowed() })).await;
        assert_eq!(s, Source::Fresh);
    }

    #[tokio::test]
    async fn allow_and_deny_ttls_differ() {
        let c = cache(60_000, 50);
        c.verdict(key(1), || Box::pin(async { allowed() })).await;
        c.verdict(key(2), || {
            Box::pin(async { Verdict::deny(DenyReason::NoRuleMatches) })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.verdicts.run_pending_tasks().await;
        assert!(c.verdicts.get(&key(1)).await.is_some());
        assert!(c.verdicts.get(&key(2)).await.is_none());
    }

    #[tokio::test]
    async fn concurrent_identical_misses_verify_once() {
        let c = Arc::new(cache(60_000, 60_000));
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = Arc::clone(&c);
                let runs = Arc::clone(&runs);
                tokio::spawn(async move {
                    c.verdict(key(1), || {
                        Box::pin(async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            allowed()
                        })
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().0.is_allowed());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
