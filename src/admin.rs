//! The admin listener: `/healthz` (the process answers), `/readyz` (ready to decide: listeners
//! up, Better Auth answered its `/ok` probe recently, not shutting down) and `/metrics`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use tokio_util::sync::CancellationToken;

use crate::better_auth::BetterAuthClient;
use crate::metrics::Metrics;

/// How often Better Auth's `/ok` is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one good probe keeps the service ready: three missed probes in a row make it
/// unready, so one slow answer does not flap the endpoints.
pub const READY_FOR: Duration = Duration::from_secs(6);

/// What `/readyz` reports. Shared with the probe task and the shutdown sequence.
#[derive(Default)]
pub struct Readiness {
    last_ok: Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
}

// === impl Readiness ===

impl Readiness {
    pub fn record_probe(&self, ok: bool) {
        if ok && let Ok(mut last) = self.last_ok.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Probe Better Auth's `/ok` until stopped; readiness follows the answers.
    pub async fn follow(self: Arc<Self>, client: BetterAuthClient, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    let ok = client.probe().await;
                    if !ok {
                        tracing::debug!("Better Auth /ok probe failed");
                    }
                    self.record_probe(ok);
                }
            }
        }
    }

    pub fn start_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Err` says why not ready.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down");
        }
        let last = self.last_ok.lock().map(|l| *l).unwrap_or(None);
        match last {
            Some(at) if at.elapsed() <= READY_FOR => Ok(()),
            Some(_) => Err("Better Auth has not answered its /ok probe recently"),
            None => Err("Better Auth has not answered its /ok probe yet"),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

pub fn router(readiness: Arc<Readiness>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    state.metrics.set_ready(state.readiness.check().is_ok());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
