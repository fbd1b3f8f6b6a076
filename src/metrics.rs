//! Prometheus metrics, served on the admin listener.
//!
//! Labels are closed sets (transport, decision, reason code, lookup outcome): no label ever
//! carries a user id, path, cookie or token, so cardinality stays bounded whatever traffic does.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::better_auth::Outcome;
use crate::decision::Transport;
use crate::reason::{Detail, Reason};

/// Latency buckets in seconds: fine below a millisecond (the service's own cost), coarse up to
/// a second (Better Auth round trips and timeouts).
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Handles the request path records into. Cheap to clone (each metric is an `Arc` inside).
/// Every labelled series is resolved once at start-up, so recording is an atomic add, not a
/// label lookup.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Indexed by `transport * Reason::ALL.len() + reason`.
    decisions: Vec<IntCounter>,
    /// Indexed by transport.
    check_duration: Vec<Histogram>,
    /// Indexed by lookup outcome.
    upstream_duration: Vec<Histogram>,
    upstream_inflight: IntGauge,
    cache: IntCounterVec,
    coalesced: IntCounter,
    shed: IntCounter,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    deny_details: IntCounterVec,
    dropped_identity: IntCounter,
    ready: IntGauge,
    routes: IntCounterVec,
    policy_reloads: IntCounterVec,
    policy_routes: IntGauge,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "better_authz_decisions_total",
                "Authorization decisions by transport, verdict and reason code",
            ),
            &["transport", "decision", "reason"],
        )?;
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "better_authz_check_duration_seconds",
                "Time to answer one check, Better Auth call included",
            )
            .buckets(BUCKETS.to_vec()),
            &["transport"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "better_authz_better_auth_request_duration_seconds",
                "Duration of Better Auth session lookups by outcome",
            )
            .buckets(BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let upstream_inflight = IntGauge::new(
            "better_authz_better_auth_inflight",
            "Better Auth session lookups in flight",
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "better_authz_cache_requests_total",
                "Session cache look-ups (only with AUTHZ_CACHE_TTL_MS > 0) by result",
            ),
            &["result"],
        )?;
        let coalesced = IntCounter::new(
            "better_authz_coalesced_total",
            "Checks that joined a Better Auth call already in flight for the same cookies",
        )?;
        let shed = IntCounter::new(
            "better_authz_shed_total",
            "Checks answered 503 at once because AUTHZ_MAX_INFLIGHT calls were in flight",
        )?;
        let cache_entries = IntGauge::new(
            "better_authz_cache_entries",
            "Sessions held in the cache (bounded by AUTHZ_CACHE_MAX_ENTRIES)",
        )?;
        let cache_bytes = IntGauge::new(
            "better_authz_cache_bytes",
            "Estimated bytes held by the cache's entries (bounded by AUTHZ_CACHE_MAX_BYTES)",
        )?;
        let deny_details = IntCounterVec::new(
            Opts::new(
                "better_authz_deny_details_total",
                "Denials by client-safe detail code: which refusal, finer than the reason",
            ),
            &["detail"],
        )?;
        let dropped_identity = IntCounter::new(
            "better_authz_identity_headers_dropped_total",
            "Identity headers removed on an allow because Better Auth's value was too long or \
             unsendable",
        )?;
        let routes = IntCounterVec::new(
            Opts::new(
                "better_authz_route_decisions_total",
                "Decisions by the route of the path (the policy's names; _default when none \
                 matched)",
            ),
            &["route", "decision"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "better_authz_policy_reloads_total",
                "Policy file reloads: ok (the new routes serve), error (the last good policy \
                 stays)",
            ),
            &["result"],
        )?;
        let policy_routes = IntGauge::new(
            "better_authz_policy_routes",
            "Routes in the policy being served",
        )?;
        let ready = IntGauge::new(
            "better_authz_ready",
            "1 while /readyz answers ready (listeners up, Better Auth's /ok answered recently, \
             not shutting down), else 0; read at scrape time",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("better_authz_build_info", "Build information; always 1"),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_inflight.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(coalesced.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(deny_details.clone()))?;
        registry.register(Box::new(dropped_identity.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(policy_routes.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        // Every series exists from the start, so rates and ratios are defined at zero.
        let mut decision_series = Vec::new();
        let mut check_series = Vec::new();
        for transport in Transport::ALL {
            check_series.push(check_duration.with_label_values(&[transport.label()]));
            for &reason in Reason::ALL {
                decision_series.push(decisions.with_label_values(&[
                    transport.label(),
                    reason.verdict_label(),
                    reason.code(),
                ]));
            }
        }
        for result in ["hit", "miss"] {
            cache.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            policy_reloads.with_label_values(&[result]);
        }
        let upstream_series = Outcome::ALL
            .iter()
            .map(|o| upstream_duration.with_label_values(&[o.label()]))
            .collect();

        Ok(Metrics {
            registry,
            decisions: decision_series,
            check_duration: check_series,
            upstream_duration: upstream_series,
            upstream_inflight,
            cache,
            coalesced,
            shed,
            cache_entries,
            cache_bytes,
            deny_details,
            dropped_identity,
            ready,
            routes,
            policy_reloads,
            policy_routes,
        })
    }

    pub fn record_check(&self, transport: Transport, reason: Reason, seconds: f64) {
        let t = transport as usize;
        if let Some(counter) = self.decisions.get(t * Reason::ALL.len() + reason as usize) {
            counter.inc();
        }
        if let Some(histogram) = self.check_duration.get(t) {
            histogram.observe(seconds);
        }
    }

    pub fn record_lookup(&self, outcome: Outcome, seconds: f64) {
        if let Some(histogram) = self.upstream_duration.get(outcome as usize) {
            histogram.observe(seconds);
        }
    }

    pub fn record_cache(&self, hit: bool) {
        self.cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    pub fn set_cache_size(&self, entries: usize, bytes: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A denial's detail (a closed set, so the series stay bounded); only denials pay the
    /// label lookup.
    pub fn record_deny_detail(&self, detail: Detail) {
        self.deny_details.with_label_values(&[detail.code()]).inc();
    }

    pub fn record_dropped_identity(&self, headers: usize) {
        self.dropped_identity.inc_by(headers as u64);
    }

    pub fn record_coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn record_shed(&self) {
        self.shed.inc();
    }

    /// Counts a lookup in flight until the guard drops (also when the check is cancelled).
    pub fn inflight(&self) -> InflightGuard {
        self.upstream_inflight.inc();
        InflightGuard(self.upstream_inflight.clone())
    }

    /// One decision on `route`. The names come from the policy, a bounded set.
    pub fn record_route(&self, route: &str, allow: bool) {
        let decision = if allow { "allow" } else { "deny" };
        self.routes.with_label_values(&[route, decision]).inc();
    }

    /// A policy (re)load: `Some(routes)` when it serves, `None` when it was refused.
    pub fn record_policy_load(&self, routes: Option<usize>) {
        let result = if routes.is_some() { "ok" } else { "error" };
        self.policy_reloads.with_label_values(&[result]).inc();
        if let Some(routes) = routes {
            self.set_policy_routes(routes);
        }
    }

    pub fn set_policy_routes(&self, routes: usize) {
        self.policy_routes
            .set(i64::try_from(routes).unwrap_or(i64::MAX));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

pub struct InflightGuard(IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_indexes_follow_declaration_order() {
        for (i, t) in Transport::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn each_record_lands_on_its_own_series() {
        let m = Metrics::new().unwrap();
        m.record_check(Transport::Http, Reason::UserMismatch, 0.001);
        m.record_lookup(Outcome::Unavailable, 0.2);
        m.record_deny_detail(Detail::ConflictingForwardedHeaders);
        let text = m.render();
        assert!(
            text.lines().any(|l| l
                == r#"better_authz_deny_details_total{detail="conflicting_forwarded_headers"} 1"#),
            "{text}"
        );
        let one = |series: &str| text.lines().any(|l| l == format!("{series} 1"));
        assert!(
            one(
                r#"better_authz_decisions_total{decision="deny",reason="USER_MISMATCH",transport="http"}"#
            ),
            "{text}"
        );
        assert!(one(
            r#"better_authz_check_duration_seconds_count{transport="http"}"#
        ));
        assert!(one(
            r#"better_authz_better_auth_request_duration_seconds_count{outcome="unavailable"}"#
        ));
        assert!(text.contains(r#"better_authz_check_duration_seconds_count{transport="grpc"} 0"#));
    }
}
