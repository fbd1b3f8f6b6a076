//! The check pipeline both adapters call: plan, look the session up if needed, decide, then
//! record the decision (metrics and one log line). The only place where the pure core meets IO.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use time::OffsetDateTime;
use tracing::Instrument;
use tracing::field::Empty;

use crate::decision::Transport;
use crate::decision::{self, CheckRequest, Decision, Plan, Policy, Step};
use crate::lookups::Lookups;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::routes::RouteTable;
use crate::telemetry;

/// Shared by every connection of both transports.
pub struct Authorizer {
    /// Swapped whole when the policy file is reloaded; a check keeps the one it started with.
    policy: RwLock<Arc<Policy>>,
    /// Fixed at start-up (the adapters read it before the policy).
    api_key_header: String,
    lookups: Lookups,
    metrics: Metrics,
}

// === impl Authorizer ===

impl Authorizer {
    pub fn new(policy: Policy, lookups: Lookups, metrics: Metrics) -> Arc<Self> {
        Arc::new(Authorizer {
            api_key_header: policy.api_key_header.clone(),
            policy: RwLock::new(Arc::new(policy)),
            lookups,
            metrics,
        })
    }

    /// The header API keys come in: the adapters read it for the core.
    pub fn api_key_header(&self) -> &str {
        &self.api_key_header
    }

    /// The policy checks start with from now on.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map_or_else(|p| p.into_inner().clone(), |p| p.clone())
    }

    /// Replace the routes; checks in flight finish with the ones they started with.
    pub fn replace_routes(&self, routes: RouteTable) {
        let next = Policy {
            routes: Arc::new(routes),
            ..(*self.policy()).clone()
        };
        let mut slot = self.policy.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(next);
    }

    /// Answer one check. Never fails: every error is a deny.
    pub async fn check(&self, req: &CheckRequest<'_>) -> Decision {
        let (transport, trace) = (req.transport, req.trace);
        let start = Instant::now();
        // Debug level: without an exporter and below RUST_LOG=debug nothing subscribes to it and
        // it costs nothing; the exporter's layer takes our spans at any level.
        let span = tracing::debug_span!(
            "authz.check",
            otel.kind = "server",
            otel.status_code = Empty,
            authz.transport = transport.label(),
            authz.decision = Empty,
            authz.reason = Empty,
            http.response.status_code = Empty,
            enduser.id = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        telemetry::set_parent(&span, trace);
        let (trace_id, span_id) = telemetry::ids(&span, trace);
        if let Some(id) = &trace_id {
            span.record("trace_id", id.as_str());
        }
        if let Some(id) = &span_id {
            span.record("span_id", id.as_str());
        }

        let policy = self.policy();
        let decision = async {
            let pending = match decision::plan(&policy, req) {
                Plan::Done(decision) => return decision,
                Plan::Lookup(pending) => pending,
            };
            let lookup = self.lookups.lookup(&pending.query, trace).await;
            let session_ends = match &lookup {
                decision::SessionLookup::Valid { expires_at, .. } => *expires_at,
                _ => OffsetDateTime::UNIX_EPOCH,
            };
            let orgs = match decision::decide(&policy, pending, lookup, OffsetDateTime::now_utc()) {
                Step::Done(decision) => return decision,
                Step::Orgs(orgs) => orgs,
            };
            let mut answers = Vec::with_capacity(orgs.queries.len());
            for query in &orgs.queries {
                answers.push(self.lookups.membership(query, session_ends, trace).await);
            }
            decision::finish(orgs, answers)
        }
        .instrument(span.clone())
        .await;

        let elapsed = start.elapsed();
        self.metrics
            .record_check(transport, decision.reason, elapsed.as_secs_f64());
        if !decision.is_allow() {
            self.metrics.record_deny_detail(decision.detail);
        }
        if let Some(route) = &decision.route {
            self.metrics.record_route(route, decision.is_allow());
        }
        if !decision.dropped_headers.is_empty() {
            self.metrics
                .record_dropped_identity(decision.dropped_headers.len());
        }
        span.record("authz.decision", decision.reason.verdict_label());
        span.record("authz.reason", decision.reason.code());
        span.record("http.response.status_code", decision.reason.http_status());
        if decision.is_allow()
            && let Some(user) = &decision.user_id
        {
            span.record("enduser.id", user.as_str());
        }
        if matches!(decision.reason, Reason::AuthError | Reason::AuthUnavailable) {
            span.record("otel.status_code", "ERROR");
        }
        span.in_scope(|| log_decision(transport, req, &decision, elapsed.as_micros()));
        decision
    }
}

/// One line per decision: debug for the expected ones, warn where an operator should look.
/// Never a cookie or token: the request's cookies are not among the fields.
fn log_decision(transport: Transport, req: &CheckRequest<'_>, d: &Decision, latency_us: u128) {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    let decision = d.reason.verdict_label();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                transport = transport.label(),
                method = req.method,
                path,
                decision,
                reason = d.reason.code(),
                status = d.reason.http_status(),
                latency_us = latency_us as u64,
                user_id = d.user_id.as_deref().unwrap_or(""),
                route = d.route.as_deref().unwrap_or(""),
                detail = d.detail.text(),
                "check"
            )
        };
    }
    match d.reason {
        Reason::AuthError | Reason::AuthUnavailable => line!(warn),
        _ => line!(debug),
    }
    if !d.dropped_headers.is_empty() {
        tracing::warn!(
            user_id = d.user_id.as_deref().unwrap_or(""),
            headers = d.dropped_headers.join(","),
            "identity value from Better Auth too long or unsendable: header removed"
        );
    }
}
