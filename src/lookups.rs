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
use tokio::sync::{Semaphore, SemaphorePermit, watch};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::better_auth::{BetterAuthClient, Outcome};
use crate::credentials::CredentialKind;
use crate::decision::{
    OrgLookup, OrgQuery, SessionLookup, SessionQuery, SessionUser, TraceHeaders,
};
use crate::headers;
use crate::metrics::{InflightGuard, Metrics};
use crate::reason::Detail;
use crate::routes::OrgRef;
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

/// A cache entry: a valid session, or a membership. Served until `until`.
#[derive(Clone)]
enum Cached {
    Session {
        user: SessionUser,
        expires_at: OffsetDateTime,
        until: Instant,
        /// What the entry counts against `AUTHZ_CACHE_MAX_BYTES`, fixed at insertion.
        weight: u64,
    },
    Member {
        role: String,
        until: Instant,
        weight: u64,
    },
}

/// Weighs entries by the weight fixed at insertion (their estimated size, never below
/// max bytes ÷ max entries).
#[derive(Clone)]
struct ByteWeighter;

impl quick_cache::Weighter<Key, Cached> for ByteWeighter {
    fn weight(&self, _key: &Key, entry: &Cached) -> u64 {
        match entry {
            Cached::Session { weight, .. } | Cached::Member { weight, .. } => *weight,
        }
    }
}

type SessionCache = quick_cache::sync::Cache<Key, Cached, ByteWeighter>;

pub struct Lookups {
    client: BetterAuthClient,
    metrics: Metrics,
    sessions: Flights<SessionLookup>,
    members: Flights<OrgLookup>,
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
            sessions: Flights::default(),
            members: Flights::default(),
            cache,
            cache_ttl: options.cache_ttl,
            cache_api_keys: options.cache_api_keys,
            weight_floor: (max_bytes / max_entries as u64).max(1),
            permits: Arc::new(Semaphore::new(options.max_inflight)),
        }
    }

    /// Look the session up: from the cache, by joining a call in flight, or by calling. A
    /// fresh query (`revalidate`) skips the cache both ways.
    pub async fn lookup(&self, query: &SessionQuery, trace: TraceHeaders<'_>) -> SessionLookup {
        if query.credential.kind() == CredentialKind::ApiKey && !self.cache_api_keys {
            // Each get-session with an API key counts against the key's own quota: every
            // request is asked about, neither cached nor shared.
            return self.call(query, trace).await;
        }
        let key = key_of(&[
            query.key.as_bytes(),
            if query.fresh { b"\0fresh" } else { b"" },
        ]);
        if !query.fresh
            && let Some(hit) = self.cached(&key, |entry| match entry {
                Cached::Session {
                    user, expires_at, ..
                } if *expires_at > OffsetDateTime::now_utc() => Some(SessionLookup::Valid {
                    user: user.clone(),
                    expires_at: *expires_at,
                    set_cookies: Vec::new(),
                    set_auth_token: None,
                }),
                _ => None,
            })
        {
            return hit;
        }
        let call = async {
            let lookup = self.call(query, trace).await;
            if !query.fresh {
                self.remember_session(key, &lookup);
            }
            lookup
        };
        self.sessions.share(key, &self.metrics, call).await
    }

    /// The caller's membership in an organization: cached (when the cache is on) and coalesced
    /// per credential, kind and organization, like sessions.
    pub async fn membership(
        &self,
        query: &OrgQuery,
        session_ends: OffsetDateTime,
        trace: TraceHeaders<'_>,
    ) -> OrgLookup {
        let (kind, org) = match &query.org {
            OrgRef::Id(id) => (&b"\0org-id\0"[..], id),
            OrgRef::Slug(slug) => (&b"\0org-slug\0"[..], slug),
        };
        let fresh: &[u8] = if query.session.fresh { b"\0fresh" } else { b"" };
        let key = key_of(&[query.session.key.as_bytes(), kind, org.as_bytes(), fresh]);
        let cacheable = !query.session.fresh
            && (query.session.credential.kind() != CredentialKind::ApiKey || self.cache_api_keys);
        if cacheable
            && let Some(hit) = self.cached(&key, |entry| match entry {
                Cached::Member { role, .. } => Some(OrgLookup::Member { role: role.clone() }),
                Cached::Session { .. } => None,
            })
        {
            return hit;
        }
        let call = async {
            let lookup = self.call_members(query, trace).await;
            if cacheable && let OrgLookup::Member { role } = &lookup {
                let weight = ENTRY_OVERHEAD_BYTES + role.len() as u64;
                self.remember(key, session_ends, |until| Cached::Member {
                    role: role.clone(),
                    until,
                    weight: weight.max(self.weight_floor),
                });
            }
            lookup
        };
        if cacheable {
            self.members.share(key, &self.metrics, call).await
        } else {
            call.await
        }
    }

    /// A live cache entry, as `serve` reads it; counts the hit or miss.
    fn cached<T>(&self, key: &Key, serve: impl FnOnce(&Cached) -> Option<T>) -> Option<T> {
        let cache = self.cache.as_ref()?;
        let hit = cache.get(key).and_then(|entry| {
            let until = match &entry {
                Cached::Session { until, .. } | Cached::Member { until, .. } => *until,
            };
            (until > Instant::now()).then(|| serve(&entry)).flatten()
        });
        self.metrics.record_cache(hit.is_some());
        hit
    }

    fn remember_session(&self, key: Key, lookup: &SessionLookup) {
        let SessionLookup::Valid {
            user, expires_at, ..
        } = lookup
        else {
            return;
        };
        // Never past the session's end, nor past the JWT's: a cached JWT is never served
        // expired (one without a readable `exp` is not cached at all).
        let mut ends = *expires_at;
        if let Some(jwt) = &user.jwt {
            ends = headers::jwt_expiry(jwt).map_or(OffsetDateTime::now_utc(), |exp| ends.min(exp));
        }
        let weight = estimated_bytes(user).max(self.weight_floor);
        self.remember(key, ends, |until| Cached::Session {
            user: user.clone(),
            expires_at: *expires_at,
            until,
            weight,
        });
    }

    /// Keep an entry for the TTL, never past `ends`.
    fn remember(&self, key: Key, ends: OffsetDateTime, entry: impl FnOnce(Instant) -> Cached) {
        let Some(cache) = &self.cache else {
            return;
        };
        let left = (ends - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        let keep = self.cache_ttl.min(left);
        if !keep.is_zero() {
            cache.insert(key, entry(Instant::now() + keep));
            self.metrics.set_cache_size(cache.len(), cache.weight());
        }
    }

    /// Room for one more Better Auth call (`AUTHZ_MAX_INFLIGHT`), counted in flight while
    /// held; `None` counts a shed check.
    fn slot(&self) -> Option<(SemaphorePermit<'_>, InflightGuard)> {
        let Ok(permit) = self.permits.try_acquire() else {
            self.metrics.record_shed();
            return None;
        };
        Some((permit, self.metrics.inflight()))
    }

    /// One real call to Better Auth, unless too many are in flight already.
    async fn call(&self, query: &SessionQuery, trace: TraceHeaders<'_>) -> SessionLookup {
        let Some(_slot) = self.slot() else {
            return SessionLookup::Unavailable(Detail::Overloaded);
        };
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

    /// One membership call, under the same in-flight bound.
    async fn call_members(&self, query: &OrgQuery, trace: TraceHeaders<'_>) -> OrgLookup {
        let Some(_slot) = self.slot() else {
            return OrgLookup::Unavailable(Detail::Overloaded);
        };
        let span = tracing::debug_span!(
            "better_auth.list_members",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "GET",
        );
        let outgoing = telemetry::outgoing(&span, trace);
        let lookup = self
            .client
            .membership(query, &outgoing)
            .instrument(span.clone())
            .await;
        if matches!(lookup, OrgLookup::Unavailable(_) | OrgLookup::BadAnswer) {
            span.record("otel.status_code", "ERROR");
        }
        lookup
    }
}

/// Calls in flight by key: concurrent askers of the same key share one call.
struct Flights<T> {
    in_flight: Mutex<HashMap<Key, watch::Receiver<Option<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

// === impl Flights ===

impl<T: Clone> Flights<T> {
    /// Join the call in flight for `key`, or lead one by running `call`. A follower whose
    /// leader was cancelled before answering runs `call` itself.
    async fn share(&self, key: Key, metrics: &Metrics, call: impl Future<Output = T>) -> T {
        let role = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(&key) {
                Some(receiver) => Err(receiver.clone()),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(key, receiver.clone());
                    Ok((
                        sender,
                        LeaderGuard {
                            flights: self,
                            key,
                            receiver,
                        },
                    ))
                }
            }
        };
        match role {
            Err(mut receiver) => {
                metrics.record_coalesced();
                if let Ok(answer) = receiver.wait_for(Option::is_some).await
                    && let Some(answer) = answer.clone()
                {
                    return answer;
                }
                call.await
            }
            Ok((sender, _guard)) => {
                let answer = call.await;
                let _ = sender.send(Some(answer.clone()));
                answer
            }
        }
    }
}

/// Removes the leader's in-flight entry when the call ends or is cancelled, so that followers
/// never wait on a call nobody makes.
struct LeaderGuard<'a, T> {
    flights: &'a Flights<T>,
    key: Key,
    receiver: watch::Receiver<Option<T>>,
}

impl<T> Drop for LeaderGuard<'_, T> {
    fn drop(&mut self) {
        let mut in_flight = self
            .flights
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

/// SHA-256 of the parts, each with its length first (no two tuples share a key).
fn key_of(parts: &[&[u8]]) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}
