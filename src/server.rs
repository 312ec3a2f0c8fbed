//! `portcullis serve`: the ImagePolicyWebhook backend. A thin adapter over the engine:
//! HTTPS (rustls, HTTP/1.1 + HTTP/2, optional mTLS) on `server.listen`, plain HTTP
//! /metrics, /livez, /readyz on `server.metricsListen`.
//!
//! Lifecycle: the config, keys and TLS material are loaded before any port is bound;
//! `/readyz` turns ready once both listeners are up; SIGHUP reloads the policy and the TLS
//! certificates (keeping the old ones when the new ones are bad); SIGTERM stops accepting,
//! turns `/readyz` unready and drains in-flight reviews.

pub mod handlers;
pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::config::{self, Config, TransientMode};
use crate::engine::{Engine, EngineError};
use crate::telemetry::Metrics;

/// How long in-flight connections get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(25);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Shared by all handlers. The engine sits behind a watch channel so SIGHUP can swap it.
#[derive(Clone)]
pub struct AppState {
    pub engine: watch::Receiver<Arc<Engine>>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub review_timeout: Duration,
    pub on_transient_error: TransientMode,
    pub bearer_token: Option<Arc<str>>,
}

impl AppState {
    pub fn new(
        config: &Config,
        engine: watch::Receiver<Arc<Engine>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            review_timeout: config.server.review_timeout,
            on_transient_error: config.server.on_transient_error,
            bearer_token: config.server.bearer_token.as_deref().map(Arc::from),
        }
    }
}

/// The webhook router: `POST <path>` with a body limit (413 beyond it).
pub fn router(state: AppState, path: &str, max_body_bytes: usize) -> Router {
    Router::new()
        .route(path, post(handlers::review))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The operations router: `/metrics`, `/livez`, `/readyz`.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/livez", get(handlers::livez))
        .route("/readyz", get(handlers::readyz))
        .with_state(state)
}

/// Serves `router` on `listener` — over TLS when `tls` carries a config (read per connection,
/// so a reload takes effect for new connections) — until `shutdown` resolves; then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<watch::Receiver<Arc<rustls::ServerConfig>>>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let watcher = graceful.watcher();
        let tls = tls
            .as_ref()
            .map(|rx| tokio_rustls::TlsAcceptor::from(rx.borrow().clone()));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

/// `portcullis serve`: load everything, bind, serve until SIGTERM/SIGINT; SIGHUP reloads.
pub async fn run(config_path: PathBuf) -> Result<(), ServerError> {
    let config = config::load(&config_path)?;
    let tls_config = config.server.tls.as_ref().map(tls::load).transpose()?;
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(Engine::with_metrics(&config, Arc::clone(&metrics))?);
    let (engine_tx, engine_rx) = watch::channel(engine);
    let tls_channel = tls_config.map(watch::channel);
    let state = AppState::new(&config, engine_rx, Arc::clone(&metrics));

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let ops_listener = match config.server.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?,
        ),
        None => None,
    };
    if tls_channel.is_none() {
        tracing::warn!("server.tls is not set: serving plain HTTP (kube-apiserver requires HTTPS; use only for local tests)");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = shutdown::Signals::install().map_err(ServerError::Signals)?;
    let reloader = shutdown::Reloader {
        config_path: config_path.clone(),
        engine: engine_tx,
        tls: tls_channel.as_ref().map(|(tx, _)| tx.clone()),
        metrics: Arc::clone(&metrics),
    };
    tokio::spawn(signals.run(reloader, stop_tx, Arc::clone(&state.ready)));

    let ops = ops_listener.map(|l| {
        let router = ops_router(state.clone());
        let stop = wait_stop(stop_rx.clone());
        tokio::spawn(serve(l, None, router, stop))
    });
    tracing::info!(
        listen = %config.server.listen,
        path = %config.server.path,
        tls = tls_channel.is_some(),
        mtls = config.server.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        rules = config.policy.rules.len(),
        "portcullis serving"
    );
    state.ready.store(true, Ordering::Relaxed);
    let router = router(
        state.clone(),
        &config.server.path,
        config.server.max_body_bytes,
    );
    serve(
        listener,
        tls_channel.map(|(_, rx)| rx),
        router,
        wait_stop(stop_rx),
    )
    .await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
