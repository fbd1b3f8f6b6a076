//! The fast path in front of the Better Auth client: coalescing, the opt-in cache and load
//! shedding. Still IO-free in its decisions: every path ends in a [`SessionLookup`], and none of
//! them can allow on its own.
//!
//! - **Coalescing**: concurrent checks carrying the same Better Auth cookies share one call in
//!   flight; each gets the same answer. Nothing outlives the call.
//! - **Cache** (opt-in, `AUTHZ_CACHE_TTL_MS` > 0): valid sessions only, keyed by the SHA-256 of
//!   the forwarded Better Auth cookies (never the value itself), kept for the TTL capped by the
//!   session's `expiresAt`, bounded to `AUTHZ_CACHE_MAX_ENTRIES`. A revoked or signed-out session
//!   stays accepted for at most the TTL.
//! - **Shedding**: at most `AUTHZ_MAX_INFLIGHT` calls to Better Auth at once; beyond that a check
//!   is answered 503 at once instead of queueing without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::better_auth::{BetterAuthClient, Outcome};
use crate::decision::{SessionLookup, SessionQuery, SessionUser};
use crate::metrics::Metrics;
use crate::reason::Detail;
use crate::telemetry::{self, TraceHeaders};

/// SHA-256 of the forwarded Better Auth cookies.
type Key = [u8; 32];

#[derive(Clone, Debug)]
pub struct LookupOptions {
    /// Zero: no cache.
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub max_inflight: usize,
}

#[derive(Clone)]
struct Cached {
    user: SessionUser,
    expires_at: OffsetDateTime,
    /// When the entry stops being served: min(now + TTL, expiresAt).
    until: Instant,
}

/// A lookup in flight, for followers to wait on.
type InFlight = watch::Receiver<Option<SessionLookup>>;

pub struct Lookups {
    client: BetterAuthClient,
    metrics: Metrics,
    in_flight: Mutex<HashMap<Key, InFlight>>,
    cache: Option<quick_cache::sync::Cache<Key, Cached>>,
    cache_ttl: Duration,
    permits: Arc<Semaphore>,
}

// === impl Lookups ===

impl Lookups {
    pub fn new(client: BetterAuthClient, metrics: Metrics, options: LookupOptions) -> Self {
        let cache = (!options.cache_ttl.is_zero())
            .then(|| quick_cache::sync::Cache::new(options.cache_max_entries.max(1)));
        Lookups {
            client,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            cache,
            cache_ttl: options.cache_ttl,
            permits: Arc::new(Semaphore::new(options.max_inflight)),
        }
    }

    /// Look the session up: from the cache, by joining a call in flight, or by calling.
    pub async fn lookup(&self, query: &SessionQuery, trace: TraceHeaders<'_>) -> SessionLookup {
        let key = key_of(query);

        if let Some(cache) = &self.cache {
            match cache.get(&key) {
                Some(hit)
                    if hit.until > Instant::now() && hit.expires_at > OffsetDateTime::now_utc() =>
                {
                    self.metrics.record_cache(true);
                    return SessionLookup::Valid {
                        user: hit.user,
                        expires_at: hit.expires_at,
                        set_cookies: Vec::new(),
                    };
                }
                _ => self.metrics.record_cache(false),
            }
        }

        // Join a call in flight for the same cookies, or lead one.
        let role = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(&key) {
                Some(receiver) => Role::Follow(receiver.clone()),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(key, receiver.clone());
                    Role::Lead(
                        sender,
                        LeaderGuard {
                            lookups: self,
                            key,
                            receiver,
                        },
                    )
                }
            }
        };
        let (sender, _leader) = match role {
            Role::Follow(mut receiver) => {
                self.metrics.record_coalesced();
                if let Ok(answer) = receiver.wait_for(Option::is_some).await
                    && let Some(lookup) = answer.clone()
                {
                    return lookup;
                }
                // The leader was cancelled before answering: ask on our own.
                (None, None)
            }
            Role::Lead(sender, guard) => (Some(sender), Some(guard)),
        };

        let lookup = self.call(query, trace).await;
        if let (
            Some(cache),
            SessionLookup::Valid {
                user, expires_at, ..
            },
        ) = (&self.cache, &lookup)
        {
            let left = (*expires_at - OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO);
            let keep = self.cache_ttl.min(left);
            if !keep.is_zero() {
                cache.insert(
                    key,
                    Cached {
                        user: user.clone(),
                        expires_at: *expires_at,
                        until: Instant::now() + keep,
                    },
                );
                self.metrics.set_cache_entries(cache.len());
            }
        }
        if let Some(sender) = sender {
            let _ = sender.send(Some(lookup.clone()));
        }
        lookup
    }

    /// One real call to Better Auth, unless too many are in flight already.
    async fn call(&self, query: &SessionQuery, trace: TraceHeaders<'_>) -> SessionLookup {
        let Ok(_permit) = self.permits.try_acquire() else {
            self.metrics.record_shed();
            return SessionLookup::Unavailable(Detail::Overloaded);
        };
        let _inflight = self.metrics.inflight();
        let span = tracing::debug_span!(
            "better_auth.get_session",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "GET",
            better_auth.outcome = Empty,
        );
        let outgoing = telemetry::outgoing(&span, trace);
        let start = std::time::Instant::now();
        let lookup = self
            .client
            .lookup(query, &outgoing)
            .instrument(span.clone())
            .await;
        let outcome = Outcome::of(&lookup);
        span.record("better_auth.outcome", outcome.label());
        if matches!(outcome, Outcome::Unavailable | Outcome::Error) {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics
            .record_lookup(outcome, start.elapsed().as_secs_f64());
        lookup
    }

    /// Entries in the cache (for tests and metrics).
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

enum Role<'a> {
    Follow(InFlight),
    Lead(watch::Sender<Option<SessionLookup>>, LeaderGuard<'a>),
}

/// Removes the leader's in-flight entry when the call ends or is cancelled, so that followers
/// never wait on a call nobody makes.
struct LeaderGuard<'a> {
    lookups: &'a Lookups,
    key: Key,
    receiver: InFlight,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .lookups
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if in_flight
            .get(&self.key)
            .is_some_and(|r| r.same_channel(&self.receiver))
        {
            in_flight.remove(&self.key);
        }
    }
}

fn key_of(query: &SessionQuery) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, query.cookie_header.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}
