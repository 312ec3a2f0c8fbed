//! Signals: SIGTERM / SIGINT drain and stop; SIGHUP reloads the policy and TLS material,
//! keeping what is running when the new files are bad.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::config;
use crate::engine::Engine;
use crate::telemetry::Metrics;

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What SIGHUP rebuilds.
pub struct Reloader {
    pub config_path: PathBuf,
    pub engine: watch::Sender<Arc<Engine>>,
    pub tls: Option<watch::Sender<Arc<rustls::ServerConfig>>>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Reloads config (policy, keys, registries) and TLS; on any error keeps the old ones.
    pub fn reload(&self) {
        let config = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload failed: keeping the running policy");
                return;
            }
        };
        if let (Some(tx), Some(tls)) = (&self.tls, &config.server.tls) {
            match super::tls::load(tls) {
                Ok(t) => {
                    let _ = tx.send(t);
                    tracing::info!("TLS certificates reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed: keeping the running certificates")
                }
            }
        }
        match Engine::with_metrics(&config, Arc::clone(&self.metrics)) {
            Ok(e) => {
                let _ = self.engine.send(Arc::new(e));
                tracing::info!(rules = config.policy.rules.len(), "policy reloaded");
            }
            Err(e) => tracing::error!(error = %e, "reload failed: keeping the running policy"),
        }
    }
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Runs until SIGTERM/SIGINT, then marks the server unready and tells it to stop.
    pub async fn run(
        mut self,
        reloader: Reloader,
        stop: watch::Sender<bool>,
        ready: Arc<AtomicBool>,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => reloader.reload(),
            }
        }
        tracing::info!("shutting down: draining in-flight reviews");
        ready.store(false, Ordering::Relaxed);
        let _ = stop.send(true);
    }
}
