//! Logging: `tracing` to stderr, text or JSON, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabel {
    pub verdict: &'static str,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Prometheus metrics, exposed on `metricsListen` at `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Reviews answered, by verdict (allowed | denied | retry | bad_request).
    pub reviews: Family<VerdictLabel, Counter>,
    /// Image verdicts by verdict and source (fresh | cache | coalesced).
    pub images: Family<ImageLabel, Counter>,
    /// Seconds per fresh image verification (registry I/O included).
    pub verification_seconds: Histogram,
    /// Seconds per review.
    pub review_seconds: Histogram,
    /// Verdict cache lookups by result (hit | miss | coalesced).
    pub cache: Family<ResultLabel, Counter>,
    /// Registry HTTP requests by outcome.
    pub registry_requests: Family<OutcomeLabel, Counter>,
    /// Reviews in flight.
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let reviews = Family::<VerdictLabel, Counter>::default();
        let images = Family::<ImageLabel, Counter>::default();
        let verification_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let review_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let cache = Family::<ResultLabel, Counter>::default();
        let registry_requests = Family::<OutcomeLabel, Counter>::default();
        let in_flight = Gauge::default();
        registry.register(
            "reviews",
            "ImageReviews answered, by verdict",
            reviews.clone(),
        );
        registry.register(
            "image_verdicts",
            "Image verdicts, by verdict and source",
            images.clone(),
        );
        registry.register(
            "verification_duration_seconds",
            "Fresh image verification latency (registry I/O included)",
            verification_seconds.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "ImageReview latency",
            review_seconds.clone(),
        );
        registry.register(
            "verdict_cache_lookups",
            "Verdict cache lookups, by result",
            cache.clone(),
        );
        registry.register(
            "registry_requests",
            "HTTP requests to registries, by outcome",
            registry_requests.clone(),
        );
        registry.register(
            "reviews_in_flight",
            "ImageReviews being answered",
            in_flight.clone(),
        );
        Self {
            registry,
            reviews,
            images,
            verification_seconds,
            review_seconds,
            cache,
            registry_requests,
            in_flight,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
