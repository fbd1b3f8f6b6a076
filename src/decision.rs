//! The decision core: pure functions from a transport-neutral request (and, when needed, the
//! answer of the session lookup) to a [`Decision`].
//!
//! A check is two steps so that the core stays free of IO:
//! 1. [`plan`] decides everything that needs no session (public paths, preflights, missing or
//!    malformed cookies, unusable paths) or says which session to look up;
//! 2. [`decide`] turns the lookup's typed outcome into the final decision.
//!
//! No tonic, hyper, reqwest or tokio types appear here; the clock is a parameter.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::cookies::MAX_COOKIE_HEADER_BYTES;
use crate::credentials::{self, Credential, CredentialKind, Found, Presented};
use crate::headers::{self, Edits, MappedHeader};
use crate::path::{NormalPath, PathError};
use crate::reason::{Detail, Reason};
use crate::routes::{Demand, NamedRoute, OrgRef, RouteTable};

/// The rules, built once from the configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The credentials read, in order (`AUTHZ_CREDENTIALS`).
    pub credentials: Vec<CredentialKind>,
    /// The header an API key comes in (lower case).
    pub api_key_header: String,
    pub cookie_prefix: String,
    /// The routes (`AUTHZ_POLICY_FILE`, or the shorthand variables); replaced on reload.
    pub routes: Arc<RouteTable>,
    pub allow_preflight: bool,
    pub identity: IdentityHeaders,
    /// Fields of Better Auth's answer sent as headers (`AUTHZ_HEADER_MAP`).
    pub header_map: Vec<MappedHeader>,
    /// Where the `jwt` plugin's token goes (`AUTHZ_HEADER_JWT`).
    pub jwt_header: Option<String>,
    /// Remove the request's credentials before the back end (`AUTHZ_STRIP_CREDENTIALS`).
    pub strip_credentials: bool,
}

/// Lower-case names of the headers that carry the identity to the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// Which adapter a check came through.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Grpc,
    Http,
}

// === impl Transport ===

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// The W3C trace context of a proxied request, as the adapters found it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceHeaders<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

/// What the core needs of a proxied request, whichever proxy asked. Holds cookie values: its
/// `Debug` redacts them.
#[derive(Clone, Default)]
pub struct CheckRequest<'a> {
    /// Which adapter asked.
    pub transport: Transport,
    /// The proxy's trace context, parent of the check's span.
    pub trace: TraceHeaders<'a>,
    /// The original request's method.
    pub method: &'a str,
    /// The original request target: path, maybe with query; raw, not decoded. Empty when the
    /// proxy did not say.
    pub path: &'a str,
    /// The original request's host, as the proxy named it (routes' `hosts`).
    pub host: Option<&'a str>,
    /// The route the proxy named (Envoy `context_extensions`, `AUTHZ_ROUTE_HEADER`).
    pub route: NamedRoute<'a>,
    /// The original request's `Accept`: a browser navigation asks for `text/html`.
    pub accept: Option<&'a str>,
    /// The proxy's headers naming the original request disagree (HTTP transport).
    pub forwarded_conflict: bool,
    /// Every `Cookie` header value of the original request.
    pub cookies: Vec<&'a str>,
    /// Every `Authorization` header value.
    pub authorization: Vec<&'a str>,
    /// Every value of the API-key header (`Policy::api_key_header`).
    pub api_keys: Vec<&'a str>,
    pub origin: Option<&'a str>,
    pub access_control_request_method: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The downstream client's address, as the proxy saw it.
    pub client_addr: Option<&'a str>,
}

impl std::fmt::Debug for CheckRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckRequest")
            .field("transport", &self.transport)
            .field("trace", &self.trace)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("route", &self.route)
            .field("accept", &self.accept)
            .field("forwarded_conflict", &self.forwarded_conflict)
            .field(
                "cookies",
                &format_args!("<{} redacted>", self.cookies.len()),
            )
            .field(
                "authorization",
                &format_args!("<{} redacted>", self.authorization.len()),
            )
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("origin", &self.origin)
            .field(
                "access_control_request_method",
                &self.access_control_request_method,
            )
            .field("user_agent", &self.user_agent)
            .field("client_addr", &self.client_addr)
            .finish()
    }
}

/// The first step's answer.
#[derive(Debug)]
pub enum Plan {
    /// Decided without Better Auth.
    Done(Decision),
    /// Ask Better Auth, then call [`decide`] with the pending state.
    Lookup(Pending),
}

/// A check waiting for its session lookup.
#[derive(Debug)]
pub struct Pending {
    pub query: SessionQuery,
    /// What the routes demand of the session.
    demand: Demand,
    /// Where a browser denied for want of a session goes (`on_deny: login`).
    login_redirect: Option<String>,
    /// The credentials to strip on an allow.
    strip: Edits,
}

/// The second step's answer: done, or the organizations to ask about.
#[derive(Debug)]
pub enum Step {
    Done(Decision),
    Orgs(PendingOrgs),
}

/// A session that passed every other requirement, waiting for its memberships.
#[derive(Debug)]
pub struct PendingOrgs {
    /// One query per organization the routes name, in order.
    pub queries: Vec<OrgQuery>,
    /// The roles each organization requires, in the same order.
    required: Vec<Vec<String>>,
    /// The decision if every membership holds.
    allow: Decision,
    /// Where a browser goes if the session ended meanwhile (`on_deny: login`).
    login_redirect: Option<String>,
}

/// Is the user a member of this organization, and with which role? Holds the credential.
#[derive(Clone, PartialEq, Eq)]
pub struct OrgQuery {
    pub session: SessionQuery,
    pub org: OrgRef,
    /// The caller, as Better Auth named them: the answer must name them too.
    pub user_id: String,
}

impl std::fmt::Debug for OrgQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgQuery")
            .field("session", &self.session)
            .field("org", &self.org)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// Better Auth's typed answer about a membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrgLookup {
    /// A member, with this role (a comma-separated list).
    Member {
        role: String,
    },
    /// Not a member, or no such organization.
    NotMember,
    /// The session ended between the two calls.
    NoSession,
    Unavailable(Detail),
    BadAnswer,
}

/// Everything the Better Auth client sends. Holds a credential: its `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionQuery {
    /// The one credential forwarded.
    pub credential: Credential,
    /// Ask past Better Auth's cookie cache and ours (`revalidate`).
    pub fresh: bool,
    /// What the answer depends on (the credential's kind and value; for cookies, the session
    /// cookies alone): the cache and coalescing key. Never logged.
    pub key: String,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for SessionQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionQuery")
            .field("credential", &self.credential)
            .field("fresh", &self.fresh)
            .field("key", &"<redacted>")
            .field("client_addr", &self.client_addr)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// The Better Auth client's typed answer.
// `Valid` is the common answer: boxing it would cost an allocation on every allow.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionLookup {
    /// 200 with a user and a session.
    Valid {
        user: SessionUser,
        expires_at: OffsetDateTime,
        set_cookies: Vec<String>,
        /// Better Auth's `set-auth-token` answer header (the `bearer` plugin on a refresh).
        set_auth_token: Option<String>,
    },
    /// 200 `null` or 401: no such session (forged, signed out, expired, revoked).
    NoSession { set_cookies: Vec<String> },
    /// The credential itself is over its own rate limit (an API key's `RATE_LIMITED` or
    /// `USAGE_EXCEEDED`), retry after this many seconds when Better Auth says.
    RateLimited { retry_after: Option<u64> },
    /// Better Auth could not answer: refused, timeout, 5xx, its global 429, shed.
    Unavailable(Detail),
    /// Better Auth answered something that is not a session.
    BadAnswer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionUser {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The `AUTHZ_HEADER_MAP` fields, in the map's order.
    pub mapped: Vec<Option<String>>,
    /// The `jwt` plugin's `set-auth-jwt`, when `AUTHZ_HEADER_JWT` asks for it.
    pub jwt: Option<String>,
    /// `user.role` (admin plugin): a comma-separated list.
    pub role: Option<String>,
    pub email_verified: bool,
    /// `session.impersonatedBy` is set (admin plugin).
    pub impersonated: bool,
    /// `session.createdAt`: when the user signed in.
    pub signed_in_at: Option<OffsetDateTime>,
}

/// The outcome of a check, for any transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// Client-safe explanation for deny bodies.
    pub detail: Detail,
    /// The session's user, when one was established (also on `USER_MISMATCH`).
    pub user_id: Option<String>,
    /// Upstream request headers to set, overwriting any the client sent (allow only).
    pub set_headers: Vec<(String, String)>,
    /// Upstream request headers to remove (allow only).
    pub remove_headers: Vec<String>,
    /// `Set-Cookie` values from Better Auth for the client (allow and deny; cookie sessions only).
    pub set_cookies: Vec<String>,
    /// Other response headers for the client: `set-auth-token` for a bearer client on a
    /// refresh, `retry-after` on `RATE_LIMITED`.
    pub client_headers: Vec<(String, String)>,
    /// Identity headers removed rather than set because Better Auth's value could not be sent
    /// (over [`MAX_IDENTITY_VALUE_BYTES`], or control bytes), for the decision log.
    pub dropped_headers: Vec<String>,
    /// The credentials are stripped on this allow (`AUTHZ_STRIP_CREDENTIALS`): nginx then takes
    /// `Cookie` and `Authorization` from the answer instead of the request.
    pub strips_credentials: bool,
    /// The route of the path (`route` label of the per-route metrics); `None` when the check
    /// ended before the routes were consulted.
    pub route: Option<Arc<str>>,
}

/// Upper bound on one identity header value. Better Auth bounds neither names nor emails; a
/// longer value is dropped (the header removed, the request still allowed), a longer user id
/// denies, because the id rules cannot be judged without it.
pub const MAX_IDENTITY_VALUE_BYTES: usize = 1024;

// === impl Decision ===

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.reason.is_allow()
    }

    /// A deny with no cookies and no user.
    pub fn deny(reason: Reason, detail: Detail) -> Self {
        debug_assert!(!reason.is_allow());
        Decision {
            reason,
            detail,
            user_id: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            set_cookies: Vec::new(),
            client_headers: Vec::new(),
            dropped_headers: Vec::new(),
            strips_credentials: false,
            route: None,
        }
    }

    /// An allow that removes every identity header the client may have sent. Credentials are
    /// not stripped here: a public route may be Better Auth's own, which needs them.
    fn allow_anonymous(reason: Reason, policy: &Policy) -> Self {
        let session_headers = policy.identity.all().chain(headers::session_only(policy));
        let remove_headers: Vec<String> = session_headers.map(str::to_owned).collect();
        Decision {
            reason,
            detail: Detail::None,
            user_id: None,
            set_headers: Vec::new(),
            remove_headers,
            set_cookies: Vec::new(),
            client_headers: Vec::new(),
            dropped_headers: Vec::new(),
            strips_credentials: false,
            route: None,
        }
    }

    fn on_route(self, demand: &Demand) -> Self {
        Decision {
            route: demand.route.clone(),
            ..self
        }
    }
}

// === impl IdentityHeaders ===

impl IdentityHeaders {
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [&self.user_id, &self.email, &self.name]
            .into_iter()
            .map(String::as_str)
    }
}

/// Step one: everything that can be decided without Better Auth.
pub fn plan(policy: &Policy, req: &CheckRequest<'_>) -> Plan {
    if req.forwarded_conflict {
        return Plan::Done(Decision::deny(
            Reason::BadRequest,
            Detail::ConflictingForwardedHeaders,
        ));
    }
    let path = match NormalPath::parse(req.path) {
        Ok(path) => path,
        Err(PathError::NotAbsolute) if req.path.is_empty() => {
            return Plan::Done(Decision::deny(
                Reason::BadRequest,
                Detail::MissingOriginalUri,
            ));
        }
        Err(_) => return Plan::Done(Decision::deny(Reason::BadRequest, Detail::InvalidPath)),
    };

    let demand = policy.routes.demand(&path, req.method, req.host, req.route);
    if demand.anonymous {
        return Plan::Done(Decision::allow_anonymous(Reason::PublicPath, policy).on_route(&demand));
    }

    if policy.allow_preflight && is_preflight(req) {
        return Plan::Done(Decision::allow_anonymous(Reason::Preflight, policy).on_route(&demand));
    }

    if let Some((reason, detail)) = demand.deny {
        return Plan::Done(Decision::deny(reason, detail).on_route(&demand));
    }

    let cookie_bytes: usize = req.cookies.iter().map(|c| c.len()).sum();
    if cookie_bytes > MAX_COOKIE_HEADER_BYTES {
        return Plan::Done(
            Decision::deny(Reason::HeadersTooLarge, Detail::CookieHeaderTooLarge).on_route(&demand),
        );
    }

    let login_redirect = policy
        .routes
        .login
        .as_ref()
        .filter(|_| demand.login && is_navigation(req))
        .map(|login| login.redirect_for(&path, req.path));
    let presented = Presented {
        cookies: &req.cookies,
        authorization: &req.authorization,
        api_keys: &req.api_keys,
    };
    let found = credentials::find(
        &policy.credentials,
        &policy.cookie_prefix,
        &policy.api_key_header,
        presented,
    );
    let unauthenticated = |detail| {
        let deny = Decision::deny(
            if matches!(detail, Detail::NoSessionCookie | Detail::NoCredential) {
                Reason::SessionRequired
            } else {
                Reason::SessionInvalid
            },
            detail,
        );
        Plan::Done(to_login(deny, login_redirect.as_deref()).on_route(&demand))
    };
    match found {
        Found::Nothing if policy.credentials == [CredentialKind::Cookie] => {
            unauthenticated(Detail::NoSessionCookie)
        }
        Found::Nothing => unauthenticated(Detail::NoCredential),
        Found::Malformed(CredentialKind::Cookie) => unauthenticated(Detail::MalformedSessionCookie),
        Found::Malformed(_) => unauthenticated(Detail::MalformedCredential),
        Found::Plausible { credential, key } => Plan::Lookup(Pending {
            query: SessionQuery {
                credential,
                fresh: demand.revalidate,
                key,
                client_addr: req.client_addr.map(str::to_owned),
                user_agent: req.user_agent.map(str::to_owned),
            },
            demand,
            login_redirect,
            strip: headers::strip(policy, req),
        }),
    }
}

/// Step two: the lookup's outcome, at time `now`, becomes the decision, or the memberships
/// to ask about.
pub fn decide(
    policy: &Policy,
    pending: Pending,
    lookup: SessionLookup,
    now: OffsetDateTime,
) -> Step {
    let Pending {
        query,
        demand,
        login_redirect,
        strip,
    } = pending;
    let done = |d: Decision| Step::Done(d.on_route(&demand));
    let kind = query.credential.kind();
    // Session cookies go back to a cookie client only: a bearer or API-key client (a script,
    // a CLI, a mobile app) has no cookie jar to refresh, and clearing cookies would log out a
    // browser that happens to share it.
    let cookies_for_client = |set_cookies: Vec<String>| match kind {
        CredentialKind::Cookie => set_cookies,
        _ => Vec::new(),
    };
    let (user, expires_at, set_cookies, set_auth_token) = match lookup {
        SessionLookup::Valid {
            user,
            expires_at,
            set_cookies,
            set_auth_token,
        } => (
            user,
            expires_at,
            cookies_for_client(set_cookies),
            set_auth_token,
        ),
        SessionLookup::NoSession { set_cookies } => {
            let deny = Decision {
                set_cookies: cookies_for_client(set_cookies),
                ..Decision::deny(Reason::SessionInvalid, Detail::SessionNotFound)
            };
            return done(to_login(deny, login_redirect.as_deref()));
        }
        SessionLookup::RateLimited { retry_after } => {
            return done(Decision {
                client_headers: retry_after
                    .map(|secs| ("retry-after".to_owned(), secs.to_string()))
                    .into_iter()
                    .collect(),
                ..Decision::deny(Reason::RateLimited, Detail::CredentialRateLimited)
            });
        }

        SessionLookup::Unavailable(detail) => {
            return done(Decision::deny(Reason::AuthUnavailable, detail));
        }
        SessionLookup::BadAnswer => {
            return done(Decision::deny(Reason::AuthError, Detail::UpstreamBadAnswer));
        }
    };

    if expires_at <= now {
        let deny = Decision {
            set_cookies,
            ..Decision::deny(Reason::SessionInvalid, Detail::SessionExpired)
        };
        return done(to_login(deny, login_redirect.as_deref()));
    }

    // The id goes into a header and is compared with paths: it must be a clean header value,
    // without edge blanks (HTTP parsers strip them, so " u1" would arrive as "u1").
    if !is_header_safe(&user.id) || user.id.trim() != user.id {
        return done(Decision::deny(Reason::AuthError, Detail::UpstreamBadAnswer));
    }
    if user.id.len() > MAX_IDENTITY_VALUE_BYTES {
        return done(Decision::deny(Reason::AuthError, Detail::UserIdTooLong));
    }

    if let Some((reason, detail)) = unmet(&demand, &user, now) {
        let deny = Decision {
            user_id: Some(user.id),
            set_cookies,
            ..Decision::deny(reason, detail)
        };
        return done(if reason.http_status() == 401 {
            to_login(deny, login_redirect.as_deref())
        } else {
            deny
        });
    }

    // Every header set or removed: a missing (or unsendable) value must not leave a
    // client-sent header in place.
    let mut edits = strip;
    edits
        .set
        .push((policy.identity.user_id.clone(), user.id.clone()));
    for (name, value) in [
        (&policy.identity.email, &user.email),
        (&policy.identity.name, &user.name),
    ] {
        let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
        edits.set_or_remove(name, value.map(str::to_owned), MAX_IDENTITY_VALUE_BYTES);
    }
    headers::from_session(policy, &user, &mut edits);

    // The refreshed token goes back to a bearer client only: to a cookie or API-key client it
    // would hand page scripts the HttpOnly session token.
    let client_headers = match (kind, set_auth_token) {
        (CredentialKind::Bearer, Some(token)) if is_header_safe(&token) => {
            vec![("set-auth-token".to_owned(), token)]
        }
        _ => Vec::new(),
    };
    let allow = Decision {
        reason: Reason::SessionValid,
        detail: Detail::None,
        user_id: Some(user.id.clone()),
        set_headers: edits.set,
        remove_headers: edits.remove,
        set_cookies,
        client_headers,
        dropped_headers: edits.dropped,
        strips_credentials: edits.strips,
        route: demand.route.clone(),
    };
    if demand.orgs.is_empty() {
        return Step::Done(allow);
    }
    let (queries, required) = demand
        .orgs
        .into_iter()
        .map(|(org, roles)| {
            let query = OrgQuery {
                session: query.clone(),
                org,
                user_id: user.id.clone(),
            };
            (query, roles)
        })
        .unzip();
    Step::Orgs(PendingOrgs {
        queries,
        required,
        allow,
        login_redirect,
    })
}

/// Step three, for routes that name an organization: every membership must hold with one of
/// the roles its route requires.
pub fn finish(pending: PendingOrgs, answers: Vec<OrgLookup>) -> Decision {
    let PendingOrgs {
        queries,
        required,
        allow,
        login_redirect,
    } = pending;
    let deny = |reason, detail| Decision {
        user_id: allow.user_id.clone(),
        set_cookies: allow.set_cookies.clone(),
        route: allow.route.clone(),
        ..Decision::deny(reason, detail)
    };
    if answers.len() != queries.len() {
        return deny(Reason::AuthError, Detail::UpstreamBadAnswer);
    }
    for (answer, roles) in answers.into_iter().zip(&required) {
        match answer {
            OrgLookup::Member { role } if has_any_role(&role, roles) => {}
            OrgLookup::Member { .. } => {
                return deny(Reason::OrgForbidden, Detail::OrgRoleMissing);
            }
            OrgLookup::NotMember => return deny(Reason::OrgForbidden, Detail::NotOrgMember),
            OrgLookup::NoSession => {
                let deny = Decision {
                    route: allow.route.clone(),
                    ..Decision::deny(Reason::SessionInvalid, Detail::SessionNotFound)
                };
                return to_login(deny, login_redirect.as_deref());
            }
            OrgLookup::Unavailable(detail) => return deny(Reason::AuthUnavailable, detail),
            OrgLookup::BadAnswer => return deny(Reason::AuthError, Detail::UpstreamBadAnswer),
        }
    }
    allow
}

/// The first requirement the session does not meet, in a fixed order.
fn unmet(demand: &Demand, user: &SessionUser, now: OffsetDateTime) -> Option<(Reason, Detail)> {
    if demand.users.iter().any(|segment| *segment != user.id) {
        return Some((Reason::UserMismatch, Detail::PathOwnedByOtherUser));
    }
    if let Some(max_age) = demand.max_age {
        let recent = user.signed_in_at.is_some_and(|at| {
            now - at <= time::Duration::try_from(max_age).unwrap_or(time::Duration::MAX)
        });
        if !recent {
            return Some((Reason::SessionTooOld, Detail::SignInTooOld));
        }
    }
    let role = user.role.as_deref().unwrap_or_default();
    if demand.roles.iter().any(|roles| !has_any_role(role, roles)) {
        return Some((Reason::RoleRequired, Detail::RoleMissing));
    }
    if demand.email_verified && !user.email_verified {
        return Some((Reason::EmailUnverified, Detail::EmailNotVerified));
    }
    if demand.not_impersonated && user.impersonated {
        return Some((Reason::ImpersonationForbidden, Detail::ImpersonatedSession));
    }
    None
}

/// Whether a comma-separated role list (Better Auth's `role` fields) holds one of `wanted`.
pub fn has_any_role(list: &str, wanted: &[String]) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|role| !role.is_empty() && wanted.iter().any(|w| w == role))
}

/// A browser navigation: `GET` or `HEAD` asking for HTML. Only these are redirected; an API
/// call keeps its JSON 401.
fn is_navigation(req: &CheckRequest<'_>) -> bool {
    (req.method == "GET" || req.method == "HEAD")
        && req
            .accept
            .is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// A 401 becomes the redirect to the sign-in page when the route asks for it; the detail
/// still says why.
fn to_login(deny: Decision, redirect: Option<&str>) -> Decision {
    match redirect {
        Some(location) if deny.reason.http_status() == 401 => Decision {
            reason: Reason::LoginRequired,
            client_headers: vec![("location".to_owned(), location.to_owned())],
            ..deny
        },
        _ => deny,
    }
}

/// The entry of an `X-Forwarded-For` value that the nearest proxy appended: the last one. Both
/// adapters read the client address through this, from the last header line.
pub fn last_forwarded_for(value: &str) -> Option<&str> {
    value
        .rsplit(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A real CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`. Browsers
/// never attach cookies to it, so it cannot carry a session.
fn is_preflight(req: &CheckRequest<'_>) -> bool {
    req.method.eq_ignore_ascii_case("OPTIONS")
        && req.origin.is_some_and(|v| !v.is_empty())
        && req
            .access_control_request_method
            .is_some_and(|v| !v.is_empty())
}

/// Non-empty, no control bytes: what both Envoy and nginx accept as a header value.
/// Non-ASCII (UTF-8 names) passes: both proxies carry it as opaque bytes.
fn is_header_safe(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
