//! `AUTHZ_POLICY_FILE` is re-read when its text changes (polled: a Kubernetes ConfigMap mount
//! swaps a symlink, which no file event reports reliably). A good file replaces the routes for
//! the checks that start after it; a bad one keeps the last good policy, logs every problem
//! once and counts `better_authz_policy_reloads_total{result="error"}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::authorizer::Authorizer;
use crate::metrics::Metrics;
use crate::routes::file;

/// How often the file is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1000);

/// Watch `path` until stopped.
pub async fn watch(
    path: PathBuf,
    authorizer: Arc<Authorizer>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let shown = path.display().to_string();
    // What was last seen, good or bad: each change is judged (and counted) once.
    let mut last = file::read(&path);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = file::read(&path);
        if seen == last {
            continue;
        }
        last = seen.clone();
        let loaded = seen
            .map_err(|problem| vec![problem])
            .and_then(|text| file::parse(&text));
        match loaded {
            Ok(routes) => {
                let count = routes.routes().len();
                authorizer.replace_routes(routes);
                metrics.record_policy_load(Some(count));
                tracing::info!(file = %shown, routes = count, "policy reloaded");
            }
            Err(problems) => {
                for problem in &problems {
                    tracing::warn!(file = %shown, %problem, "policy problem");
                }
                metrics.record_policy_load(None);
                tracing::warn!(
                    file = %shown,
                    problems = problems.len(),
                    "policy file refused: the last good policy stays"
                );
            }
        }
    }
}
