//! The fast path in front of the Better Auth client: coalescing, the opt-in cache and load
//! shedding. Every path ends in a [`SessionLookup`] for the core to judge; none of them can allow
//! on its own.
//!
//! - **Coalescing**: concurrent checks carrying the same session cookies share one call in
//!   flight; each gets the same answer. Nothing outlives the call.
//! - **Cache** (opt-in, `AUTHZ_CACHE_TTL_MS` > 0): valid sessions only, keyed by the SHA-256 of
//!   the session cookies alone (`session_token`, `session_data`: never the value itself, never
//!   the other Better Auth cookies, so junk cookies cannot mint keys), kept for the TTL capped by
//!   the session's `expiresAt`. Bounded twice: by `AUTHZ_CACHE_MAX_BYTES` (each entry weighs
//!   its estimated size, so long names cannot outgrow memory) and by `AUTHZ_CACHE_MAX_ENTRIES`
//!   (no entry weighs less than bytes ÷ entries). A revoked or signed-out session stays
//!   accepted for at most the TTL.
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
use crate::credentials::CredentialKind;
use crate::decision::{SessionLookup, SessionQuery, SessionUser, TraceHeaders};
use crate::headers;
use crate::metrics::Metrics;
use crate::reason::Detail;
use crate::telemetry;

/// SHA-256 of the session cookies.
type Key = [u8; 32];

/// Bytes an entry costs beyond its strings: the key, the entry, the cache's own slot.
const ENTRY_OVERHEAD_BYTES: u64 = 160;

#[derive(Clone, Debug, Default)]
pub struct LookupOptions {
    /// Zero: no cache.
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub cache_max_bytes: u64,
    /// Cache and coalesce API-key lookups too (each one counts against the key's quota).
    pub cache_api_keys: bool,
    pub max_inflight: usize,
}

#[derive(Clone)]
struct Cached {
    user: SessionUser,
    expires_at: OffsetDateTime,
    /// When the entry stops being served: min(now + TTL, expiresAt).
    until: Instant,
    /// What the entry counts against `AUTHZ_CACHE_MAX_BYTES`, fixed at insertion.
    weight: u64,
}

/// Weighs entries by the weight fixed at insertion (their estimated size, never below
/// max bytes ÷ max entries).
#[derive(Clone)]
struct ByteWeighter;

impl quick_cache::Weighter<Key, Cached> for ByteWeighter {
    fn weight(&self, _key: &Key, entry: &Cached) -> u64 {
        entry.weight
    }
}

type SessionCache = quick_cache::sync::Cache<Key, Cached, ByteWeighter>;

/// A lookup in flight, for followers to wait on.
type InFlight = watch::Receiver<Option<SessionLookup>>;

pub struct Lookups {
    client: BetterAuthClient,
    metrics: Metrics,
    in_flight: Mutex<HashMap<Key, InFlight>>,
    cache: Option<SessionCache>,
    cache_ttl: Duration,
    cache_api_keys: bool,
    /// The least an entry weighs, so that the byte bound also bounds the entry count.
    weight_floor: u64,
    permits: Arc<Semaphore>,
}

// === impl Lookups ===

impl Lookups {
    pub fn new(client: BetterAuthClient, metrics: Metrics, options: &LookupOptions) -> Self {
        let max_entries = options.cache_max_entries.max(1);
        let max_bytes = options.cache_max_bytes.max(1);
        let cache = (!options.cache_ttl.is_zero())
            .then(|| SessionCache::with_weighter(max_entries, max_bytes, ByteWeighter));
        Lookups {
            client,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            cache,
            cache_ttl: options.cache_ttl,
            cache_api_keys: options.cache_api_keys,
            weight_floor: (max_bytes / max_entries as u64).max(1),
            permits: Arc::new(Semaphore::new(options.max_inflight)),
        }
    }

    /// Look the session up: from the cache, by joining a call in flight, or by calling.
    pub async fn lookup(&self, query: &SessionQuery, trace: TraceHeaders<'_>) -> SessionLookup {
        if query.credential.kind() == CredentialKind::ApiKey && !self.cache_api_keys {
            // Each get-session with an API key counts against the key's own quota: every
            // request is asked about, neither cached nor shared.
            return self.call(query, trace).await;
        }
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
                        set_auth_token: None,
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
            let now = OffsetDateTime::now_utc();
            // Never past the session's end, nor past the JWT's: a cached JWT is never served
            // expired (one without a readable `exp` is not cached at all).
            let mut until = *expires_at;
            if let Some(jwt) = &user.jwt {
                until = headers::jwt_expiry(jwt).map_or(now, |exp| until.min(exp));
            }
            let left = (until - now).try_into().unwrap_or(Duration::ZERO);
            let keep = self.cache_ttl.min(left);
            if !keep.is_zero() {
                cache.insert(
                    key,
                    Cached {
                        user: user.clone(),
                        expires_at: *expires_at,
                        until: Instant::now() + keep,
                        weight: estimated_bytes(user).max(self.weight_floor),
                    },
                );
                self.metrics.set_cache_size(cache.len(), cache.weight());
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

/// What an entry for `user` holds in memory, about.
fn estimated_bytes(user: &SessionUser) -> u64 {
    let text = |v: &Option<String>| v.as_ref().map_or(0, String::len);
    let strings = user.id.len()
        + text(&user.email)
        + text(&user.name)
        + text(&user.jwt)
        + user.mapped.iter().map(text).sum::<usize>();
    ENTRY_OVERHEAD_BYTES + strings as u64
}

fn key_of(query: &SessionQuery) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, query.key.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}
