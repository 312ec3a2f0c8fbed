//! The compiled policy: rules in order, each with image globs, optional namespaces, tag
//! constraints and an action. Finding the rule for an image is pure and happens before any
//! network I/O.

use std::hash::{Hash, Hasher};

pub mod condition;

use crate::reference::ImageRef;
use crate::verify::TrustedKey;
pub use condition::Condition;

/// A glob over the normalised repository name (`registry/path`), `/`-separated:
/// `*` matches within one segment, a whole `**` segment matches any number of segments.
/// A pattern whose last segment has `:tag-glob` also constrains the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGlob {
    source: String,
    segments: Vec<String>,
    tag: Option<String>,
}

/// Why a glob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("empty pattern")]
    Empty,
    #[error("empty segment in {0:?} (two slashes in a row?)")]
    EmptySegment(String),
    #[error("'**' must be a whole segment in {0:?}")]
    DoubleStarInSegment(String),
    #[error("digests cannot be matched by a glob in {0:?}; use tags.requireDigest")]
    Digest(String),
}

impl ImageGlob {
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.contains('@') {
            return Err(GlobError::Digest(pattern.to_owned()));
        }
        let mut segments: Vec<String> = pattern.split('/').map(str::to_owned).collect();
        let mut tag = None;
        if segments.len() > 1 {
            if let Some(last) = segments.last_mut() {
                if let Some((name, t)) = last.split_once(':') {
                    tag = Some(t.to_owned());
                    *last = name.to_owned();
                }
            }
        }
        for s in &segments {
            if s.is_empty() {
                return Err(GlobError::EmptySegment(pattern.to_owned()));
            }
            if s.contains("**") && s != "**" {
                return Err(GlobError::DoubleStarInSegment(pattern.to_owned()));
            }
        }
        Ok(Self {
            source: pattern.to_owned(),
            segments,
            tag,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        self.matches_subject(&Subject::of(image))
    }

    fn matches_subject(&self, subject: &Subject<'_>) -> bool {
        if !match_segments(&self.segments, &subject.parts) {
            return false;
        }
        match &self.tag {
            None => true,
            Some(t) => subject.tag.is_some_and(|tag| wildcard(t, tag)),
        }
    }
}

/// An image split into the segments globs match, once per lookup (not once per glob).
struct Subject<'a> {
    parts: Vec<&'a str>,
    tag: Option<&'a str>,
}

impl<'a> Subject<'a> {
    fn of(image: &'a ImageRef) -> Self {
        let repo = image.repository();
        let mut parts = vec![repo.registry()];
        parts.extend(repo.path().split('/'));
        Self {
            parts,
            tag: image.tag(),
        }
    }
}

fn match_segments(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((p, rest)) => match parts.split_first() {
            Some((first, tail)) => wildcard(p, first) && match_segments(rest, tail),
            None => false,
        },
    }
}

/// `*` matches any run of characters (within a segment; callers split on `/`).
fn wildcard(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What a rule does with the images it governs.
#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Admit without registry I/O (tag constraints still apply).
    Allow,
    /// Deny without registry I/O.
    Deny,
    /// Admit only when the evidence satisfies this.
    Verify(VerifyPolicy),
}

/// Someone whose signature counts. Keys today; keyless identities later.
#[derive(Debug, Clone)]
pub struct Authority {
    /// The name reasons use (the `name:` given, else the key path).
    pub name: String,
    pub key: TrustedKey,
}

/// `signatures:` — at least `threshold` distinct authorities must have signed the image.
#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    pub authorities: Vec<Authority>,
    pub threshold: usize,
}

impl SignaturePolicy {
    pub fn keys(&self) -> Vec<TrustedKey> {
        self.authorities.iter().map(|a| a.key.clone()).collect()
    }
}

/// One `attestations:` entry: an in-toto statement of `predicate_type` about the image,
/// signed by one of `authorities`, for which `condition` holds.
#[derive(Debug, Clone)]
pub struct AttestationPolicy {
    pub name: String,
    pub predicate_type: String,
    pub authorities: Vec<Authority>,
    pub condition: Option<Condition>,
}

/// How an index (multi-platform image) is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiArch {
    /// cosign: the evidence on the index digest suffices.
    #[default]
    Index,
    /// containers/image: every platform's manifest must carry its own valid signatures too.
    Platforms,
}

/// Whether failures deny (`enforce`) or only warn (`warn`: admit, say what failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    pub signatures: Option<SignaturePolicy>,
    pub attestations: Vec<AttestationPolicy>,
    pub multi_arch: MultiArch,
}

/// Tag constraints, checked before any network I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TagPolicy {
    pub forbid_latest: bool,
    pub require_digest: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub images: Vec<ImageGlob>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    pub tags: TagPolicy,
    pub action: RuleAction,
    /// `warn`: failures admit, with the reasons recorded.
    pub mode: Mode,
    /// Honour the pod annotation `alpha.image-policy.k8s.io/break-glass: "true"`.
    pub break_glass: bool,
    /// Changes whenever anything that affects this rule's verdicts changes (cache key part).
    pub fingerprint: u64,
}

impl Rule {
    /// Whether this rule governs `image` in `namespace` (`None`: not known, as in the CLI;
    /// then rules restricted to namespaces do not apply).
    pub fn governs(&self, image: &ImageRef, namespace: Option<&str>) -> bool {
        self.governs_subject(&Subject::of(image), namespace)
    }

    fn governs_subject(&self, subject: &Subject<'_>, namespace: Option<&str>) -> bool {
        let ns_ok = match (&self.namespaces, namespace) {
            (None, _) => true,
            (Some(list), Some(ns)) => list.iter().any(|n| n == ns),
            (Some(_), None) => false,
        };
        ns_ok && self.images.iter().any(|g| g.matches_subject(subject))
    }

    /// A fingerprint of everything that decides this rule's verdicts: its config text and
    /// its key files' bytes. A cache key part: a changed rule or key misses.
    pub fn fingerprint_of(config_text: &str, key_material: &[u8]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        config_text.hash(&mut h);
        key_material.hash(&mut h);
        h.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Allow,
    Deny,
}

/// The result of looking an image up in the policy.
#[derive(Debug, Clone, Copy)]
pub enum Match<'a> {
    Rule(&'a Rule),
    Default(DefaultAction),
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_action: DefaultAction,
}

impl Policy {
    /// The first rule that governs `image`, else the default action.
    pub fn find(&self, image: &ImageRef, namespace: Option<&str>) -> Match<'_> {
        let subject = Subject::of(image);
        self.rules
            .iter()
            .find(|r| r.governs_subject(&subject, namespace))
            .map_or(Match::Default(self.default_action), Match::Rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_matches(pattern: &str, image: &str) -> bool {
        ImageGlob::parse(pattern)
            .unwrap()
            .matches(&ImageRef::parse(image).unwrap())
    }

    #[test]
    fn glob_truth_table() {
        let cases = [
            (
                "registry.example.com/prod/**",
                "registry.example.com/prod/app:1",
                true,
            ),
            (
                "registry.example.com/prod/**",
                "registry.example.com/prod/a/b/c",
                true,
            ),
            (
                "registry.example.com/prod/**",
                "registry.example.com/production/app",
                false,
            ),
            (
                "registry.example.com/prod/*",
                "registry.example.com/prod/a/b",
                false,
            ),
            (
                "registry.example.com/prod/*",
                "registry.example.com/prod/a",
                true,
            ),
            ("registry.k8s.io/**", "registry.k8s.io/pause:3.9", true),
            ("docker.io/library/*", "nginx", true),
            ("docker.io/library/nginx", "nginx:1.25", true),
            ("docker.io/library/nginx:1.*", "nginx:1.25", true),
            ("docker.io/library/nginx:1.*", "nginx:2.0", false),
            ("docker.io/library/nginx:1.*", "nginx", false),
            (
                "127.0.0.1:5000/starter/**",
                "127.0.0.1:5000/starter/signed:v1",
                true,
            ),
            ("127.0.0.1:*/**", "127.0.0.1:5000/starter/signed:v1", true),
            ("*/team-*/**", "ghcr.io/team-a/x/y", true),
            ("*/team-*/**", "ghcr.io/other/x", false),
            ("**", "anything.io/x", true),
            ("**/app", "a.io/b/c/app", true),
        ];
        for (p, i, want) in cases {
            assert_eq!(glob_matches(p, i), want, "{p} vs {i}");
        }
    }

    #[test]
    fn bad_globs_are_rejected() {
        assert!(ImageGlob::parse("").is_err());
        assert!(ImageGlob::parse("a//b").is_err());
        assert!(ImageGlob::parse("a/b**").is_err());
        assert!(ImageGlob::parse("a/b@sha256:x").is_err());
    }

    #[test]
    fn first_matching_rule_wins_and_namespaces_filter() {
        let rule = |name: &str, pat: &str, ns: Option<Vec<&str>>, action| Rule {
            name: name.into(),
            images: vec![ImageGlob::parse(pat).unwrap()],
            namespaces: ns.map(|v| v.into_iter().map(String::from).collect()),
            tags: TagPolicy::default(),
            action,
            mode: Mode::Enforce,
            break_glass: false,
            fingerprint: 0,
        };
        let p = Policy {
            rules: vec![
                rule("pay", "r.io/**", Some(vec!["payments"]), RuleAction::Deny),
                rule("all", "r.io/**", None, RuleAction::Allow),
            ],
            default_action: DefaultAction::Deny,
        };
        let img = ImageRef::parse("r.io/x").unwrap();
        let name = |m: Match<'_>| match m {
            Match::Rule(r) => r.name.clone(),
            Match::Default(_) => "default".into(),
        };
        assert_eq!(name(p.find(&img, Some("payments"))), "pay");
        assert_eq!(name(p.find(&img, Some("web"))), "all");
        assert_eq!(name(p.find(&img, None)), "all");
        assert_eq!(
            name(p.find(&ImageRef::parse("q.io/x").unwrap(), None)),
            "default"
        );
    }
}
