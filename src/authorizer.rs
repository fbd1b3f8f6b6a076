//! The check pipeline both adapters call: plan, look the session up if needed, decide, then
//! record the decision (metrics and one log line). The only place where the pure core meets IO.

use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use crate::better_auth::{BetterAuthClient, Outcome};
use crate::decision::{self, CheckRequest, Decision, Plan, Policy, SessionLookup, SessionQuery};
use crate::metrics::{Metrics, Transport};
use crate::reason::Reason;

/// Shared by every connection of both transports.
pub struct Authorizer {
    policy: Policy,
    client: BetterAuthClient,
    metrics: Metrics,
}

// === impl Authorizer ===

impl Authorizer {
    pub fn new(policy: Policy, client: BetterAuthClient, metrics: Metrics) -> Arc<Self> {
        Arc::new(Authorizer {
            policy,
            client,
            metrics,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Answer one check. Never fails: every error is a deny.
    pub async fn check(&self, transport: Transport, req: &CheckRequest<'_>) -> Decision {
        let start = Instant::now();
        let decision = match decision::plan(&self.policy, req) {
            Plan::Done(decision) => decision,
            Plan::Lookup(pending) => {
                let lookup = self.lookup(&pending.query).await;
                decision::decide(&self.policy, pending, lookup, OffsetDateTime::now_utc())
            }
        };
        let elapsed = start.elapsed();
        self.metrics
            .record_check(transport, decision.reason, elapsed.as_secs_f64());
        log_decision(transport, req, &decision, elapsed.as_micros());
        decision
    }

    async fn lookup(&self, query: &SessionQuery) -> SessionLookup {
        let _inflight = self.metrics.inflight();
        let start = Instant::now();
        let lookup = self.client.lookup(query).await;
        self.metrics
            .record_lookup(Outcome::of(&lookup), start.elapsed().as_secs_f64());
        lookup
    }
}

/// One line per decision: debug for the expected ones, warn where an operator should look.
/// Never a cookie or token: the request's cookies are not among the fields.
fn log_decision(transport: Transport, req: &CheckRequest<'_>, d: &Decision, latency_us: u128) {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    let decision = if d.is_allow() { "allow" } else { "deny" };
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
                detail = d.detail.text(),
                "check"
            )
        };
    }
    match d.reason {
        Reason::AuthError | Reason::AuthUnavailable => line!(warn),
        _ => line!(debug),
    }
}
