//! HTTP handlers: the ImageReview endpoint, and /metrics, /livez, /readyz.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use super::AppState;
use crate::cache::Source;
use crate::config::TransientMode;
use crate::engine::Context;
use crate::review::{valid_audit_key, ImageReview, ImageReviewStatus};
use crate::telemetry::{ImageLabel, VerdictLabel};
use crate::verdict::{AllowBasis, DenyReason, ImageVerdict, Verdict};

/// Distinct images of one review verified at once.
const REVIEW_CONCURRENCY: usize = 16;
/// kube-apiserver puts the reason into an event and an error message: keep it readable.
const MAX_REASON_BYTES: usize = 8 * 1024;

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `POST <path>`: one ImageReview in, one out.
pub async fn review(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let metrics = std::sync::Arc::clone(&state.metrics);
    let count = |verdict: &'static str| {
        metrics
            .reviews
            .get_or_create(&VerdictLabel { verdict })
            .inc();
    };
    if let Some(expected) = &state.bearer_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), expected.as_bytes())) {
            count("unauthorized");
            return text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token\n".into(),
            );
        }
    }
    let review = match ImageReview::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            count("bad_request");
            tracing::info!(error = %e, "rejected a malformed ImageReview");
            return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    metrics.in_flight.inc();
    let engine = state.engine.borrow().clone();
    let ctx = Context {
        namespace: review.spec.namespace.clone(),
        break_glass: review.break_glass_requested(),
    };
    let mut images = review.images();
    let mut seen = std::collections::HashSet::new();
    images.retain(|i| seen.insert(i.clone()));
    let deadline = tokio::time::Instant::now() + state.review_timeout;
    let timeout_secs = state.review_timeout.as_secs();
    let shared = std::sync::Arc::new(ctx.clone());
    let verdicts: Vec<ImageVerdict> = futures_util::stream::iter(images)
        .map(|image| {
            let engine = std::sync::Arc::clone(&engine);
            let ctx = std::sync::Arc::clone(&shared);
            async move {
                match tokio::time::timeout_at(deadline, engine.decide(&image, &ctx)).await {
                    Ok(v) => v,
                    Err(_) => ImageVerdict {
                        image,
                        reference: None,
                        digest: None,
                        rule: None,
                        verdict: Verdict::deny(DenyReason::DeadlineExceeded {
                            seconds: timeout_secs,
                        }),
                        source: Source::Fresh,
                    },
                }
            }
        })
        .buffered(REVIEW_CONCURRENCY)
        .collect()
        .await;
    metrics.in_flight.dec();
    for v in &verdicts {
        metrics
            .images
            .get_or_create(&ImageLabel {
                verdict: if v.verdict.is_allowed() {
                    "allowed"
                } else {
                    "denied"
                },
                source: v.source.as_str(),
            })
            .inc();
    }
    let allowed = verdicts.iter().all(|v| v.verdict.is_allowed());
    let transient = verdicts.iter().any(|v| v.verdict.is_transient());
    let reason = reason(&verdicts);
    let elapsed = started.elapsed();
    metrics.review_seconds.observe(elapsed.as_secs_f64());
    log_review(&ctx, &verdicts, allowed, elapsed);
    if !allowed && transient && state.on_transient_error == TransientMode::Retry {
        count("retry");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("transient verification failure, retry: {reason}\n"),
        );
    }
    count(if allowed { "allowed" } else { "denied" });
    let status = ImageReviewStatus {
        allowed,
        reason,
        audit_annotations: audit_annotations(&verdicts, allowed),
    };
    (StatusCode::OK, axum::Json(ImageReview::answer(status))).into_response()
}

/// Denied images (and images admitted only by warn mode) grouped by identical explanation, so
/// ten containers failing the same way read as one line.
fn reason(verdicts: &[ImageVerdict]) -> String {
    let noted: Vec<&ImageVerdict> = verdicts
        .iter()
        .filter(|v| match &v.verdict {
            Verdict::Denied { .. } => true,
            Verdict::Allowed { basis } => matches!(basis, AllowBasis::Warned { .. }),
        })
        .collect();
    if noted.is_empty() {
        return String::new();
    }
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for v in noted {
        let name = v.reference.clone().unwrap_or_else(|| v.image.clone());
        let why = v.explanation();
        match groups.iter_mut().find(|(w, _)| *w == why) {
            Some((_, names)) => names.push(name),
            None => groups.push((why, vec![name])),
        }
    }
    let mut out = String::new();
    for (i, (why, names)) in groups.iter().enumerate() {
        let line = if names.len() == 1 {
            format!("image {}: {why}", names[0])
        } else {
            format!("{} images ({}): {why}", names.len(), names.join(", "))
        };
        if out.len() + line.len() + 2 > MAX_REASON_BYTES {
            out.push_str(&format!("; … and {} more", groups.len() - i));
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&line);
    }
    out
}

/// Compact per-image audit annotations; keys valid for kube-apiserver (≤ 63 chars, no `/`).
fn audit_annotations(verdicts: &[ImageVerdict], allowed: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(
        "verdict".to_owned(),
        if allowed { "allowed" } else { "denied" }.to_owned(),
    );
    for (i, v) in verdicts.iter().enumerate() {
        let what = match &v.verdict {
            Verdict::Allowed { basis } => match basis {
                AllowBasis::Verified {
                    signed_by,
                    attestations,
                    ..
                } => {
                    let mut by = signed_by.clone();
                    by.extend(
                        attestations
                            .iter()
                            .map(|a| format!("{}:{}", a.name, a.signed_by)),
                    );
                    format!("allowed by {}", by.join(","))
                }
                AllowBasis::Warned { rule, reasons } => {
                    out.insert(
                        "warning".to_owned(),
                        format!("rule {rule} (warn mode): {}", kinds(reasons)),
                    );
                    "WARN".to_owned()
                }
                AllowBasis::RuleAllows { rule } => format!("allowed by rule {rule}"),
                AllowBasis::DefaultAllow => "allowed by defaultAction".to_owned(),
                AllowBasis::BreakGlass { rule } => {
                    out.insert("break-glass".to_owned(), format!("rule {rule}"));
                    "BREAK-GLASS".to_owned()
                }
            },
            Verdict::Denied { reasons } => format!("denied: {}", kinds(reasons)),
        };
        let name = v.reference.as_deref().unwrap_or(&v.image);
        let digest = v
            .digest
            .as_deref()
            .map(|d| format!("@{d}"))
            .unwrap_or_default();
        let source = v.source.as_str();
        out.insert(
            format!("image-{i}"),
            format!("{name}{digest} {what} [{source}]"),
        );
    }
    out.retain(|k, _| valid_audit_key(k));
    out
}

fn kinds(reasons: &[DenyReason]) -> String {
    reasons
        .iter()
        .map(DenyReason::kind)
        .collect::<Vec<_>>()
        .join(",")
}

fn log_review(
    ctx: &Context,
    verdicts: &[ImageVerdict],
    allowed: bool,
    elapsed: std::time::Duration,
) {
    tracing::info!(
        namespace = ctx.namespace.as_deref().unwrap_or(""),
        allowed,
        images = %ImagesField(verdicts),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        break_glass = ctx.break_glass,
        "review"
    );
}

/// `ref@digest allowed, ref denied`, formatted only when the log line is written.
struct ImagesField<'a>(&'a [ImageVerdict]);

impl std::fmt::Display for ImagesField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(v.reference.as_deref().unwrap_or(&v.image))?;
            if let Some(d) = &v.digest {
                write!(f, "@{d}")?;
            }
            f.write_str(if v.verdict.is_allowed() {
                " allowed"
            } else {
                " denied"
            })?;
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn livez() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(name: &str, why: DenyReason) -> ImageVerdict {
        ImageVerdict {
            image: name.into(),
            reference: Some(name.into()),
            digest: None,
            rule: None,
            verdict: Verdict::deny(why),
            source: Source::Fresh,
        }
    }

    #[test]
    fn identical_reasons_are_grouped() {
        let vs: Vec<_> = (0..10)
            .map(|i| denied(&format!("r.io/app{i}:1"), DenyReason::NoRuleMatches))
            .collect();
        let r = reason(&vs);
        assert!(r.starts_with("10 images (r.io/app0:1, "), "{r}");
        assert_eq!(r.matches("no policy rule matches").count(), 1, "{r}");
    }

    #[test]
    fn reason_is_bounded() {
        let vs: Vec<_> = (0..2000)
            .map(|i| {
                denied(
                    &format!("r.io/app{i}:1"),
                    DenyReason::RuleDenies {
                        rule: format!("rule-{i}"),
                    },
                )
            })
            .collect();
        let r = reason(&vs);
        assert!(r.len() <= MAX_REASON_BYTES + 64, "{}", r.len());
        assert!(r.contains("more"));
    }

    #[test]
    fn audit_keys_are_valid_for_the_apiserver() {
        let vs = vec![denied("a", DenyReason::NoRuleMatches)];
        let a = audit_annotations(&vs, false);
        assert!(a.keys().all(|k| valid_audit_key(k)));
        assert_eq!(a["verdict"], "denied");
        assert!(a["image-0"].contains("denied"));
    }
}
