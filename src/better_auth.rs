//! The only code that talks to Better Auth.
//!
//! [`BetterAuthClient::lookup`] sends `GET <session path>` with the request's Better Auth
//! cookies and returns a typed [`SessionLookup`], never a raw response. Facts it relies on
//! (checked against Better Auth 1.7.25): a missing, forged or expired session is `200 null`, not
//! 401; a refresh answers with `Set-Cookie`; the rate limiter answers 429.
//!
//! Every failure maps to a denying outcome; nothing here can allow a request.

use std::time::Duration;

use http::header::{
    ACCEPT, AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, SET_COOKIE, USER_AGENT,
};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::credentials::{Credential, CredentialKind};
use crate::decision::{SessionLookup, SessionQuery, SessionUser};
use crate::headers;
use crate::reason::Detail;

mod members;
mod transport;

pub use transport::POOL_IDLE_TIMEOUT;
use transport::{BodyError, Outgoing, Transport, read_bounded};

/// Largest session body we read. A real one is well under 2 KiB; plugins add fields, so leave
/// generous room while refusing to buffer a runaway answer.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `User-Agent` when the client sent none.
const DEFAULT_USER_AGENT: &str = concat!("better-authz/", env!("CARGO_PKG_VERSION"));

/// Where Better Auth answers.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Absolute URL of the session endpoint.
    pub session: url::Url,
    /// Absolute URL of Better Auth's `/ok` probe, beside the session endpoint.
    pub ok: url::Url,
    /// The session endpoint past Better Auth's cookie cache (`disableCookieCache=true`).
    pub session_fresh: url::Url,
    /// The organization plugin's `list-members`, beside the session endpoint.
    pub members: url::Url,
}

/// How the client is set up.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Deadline for one whole call: connect, headers and body.
    pub timeout: Duration,
    /// Idle kept-alive connections per Better Auth host.
    pub pool_max_idle: usize,
    /// Extra PEM roots for an https:// Better Auth (added to the system's).
    pub ca: Option<CaBundle>,
    /// The `AUTHZ_HEADER_MAP` paths to read from each answer.
    pub fields: Vec<Vec<String>>,
    /// Keep the `jwt` plugin's `set-auth-jwt` (`AUTHZ_HEADER_JWT` is set).
    pub jwt: bool,
}

/// CA certificates read from a PEM file at start-up.
#[derive(Clone)]
pub struct CaBundle {
    pub path: std::path::PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// A pooled, kept-alive client for Better Auth.
#[derive(Clone, Debug)]
pub struct BetterAuthClient {
    http: Transport,
    /// Where to send each call, parsed once.
    uris: Uris,
    timeout: Duration,
    fields: Vec<Vec<String>>,
    jwt: bool,
}

#[derive(Clone, Debug)]
struct Uris {
    session: Uri,
    session_fresh: Uri,
    ok: Uri,
    /// `list-members`, whose query is built per call.
    members: url::Url,
}

// === impl Endpoints ===

impl Endpoints {
    /// The session URL under `base`, and the `/ok` probe beside it (`…/get-session` → `…/ok`).
    pub fn of(base: &url::Url, session_path: &str) -> Result<Self, String> {
        let root = base.as_str().trim_end_matches('/');
        let session = url::Url::parse(&format!("{root}{session_path}"))
            .map_err(|e| format!("{session_path:?} does not make a URL with the base ({e})"))?;
        let parent = session_path
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent);
        let ok = url::Url::parse(&format!("{root}{parent}/ok"))
            .map_err(|e| format!("{session_path:?} does not make a probe URL ({e})"))?;
        let members = url::Url::parse(&format!("{root}{parent}/organization/list-members"))
            .map_err(|e| format!("{session_path:?} does not make a members URL ({e})"))?;
        let mut session_fresh = session.clone();
        session_fresh
            .query_pairs_mut()
            .append_pair("disableCookieCache", "true");
        Ok(Endpoints {
            session,
            ok,
            session_fresh,
            members,
        })
    }
}

/// Why a lookup failed, for metrics labels and logs (never the client).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    NoSession,
    RateLimited,
    Unavailable,
    Error,
}

// === impl Outcome ===

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Valid,
        Outcome::NoSession,
        Outcome::RateLimited,
        Outcome::Unavailable,
        Outcome::Error,
    ];

    pub fn of(lookup: &SessionLookup) -> Self {
        match lookup {
            SessionLookup::Valid { .. } => Outcome::Valid,
            SessionLookup::NoSession { .. } => Outcome::NoSession,
            SessionLookup::RateLimited { .. } => Outcome::RateLimited,
            SessionLookup::Unavailable(_) => Outcome::Unavailable,
            SessionLookup::BadAnswer => Outcome::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::NoSession => "no_session",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

// === impl BetterAuthClient ===

impl BetterAuthClient {
    pub fn new(endpoints: Endpoints, options: &ClientOptions) -> Result<Self, String> {
        install_crypto_provider();
        let roots = options.ca.as_ref().map_or(&[][..], |ca| &ca.certs[..]);
        let http = Transport::new(options.timeout, options.pool_max_idle, roots)?;
        let uris = Uris {
            session: uri(&endpoints.session)?,
            session_fresh: uri(&endpoints.session_fresh)?,
            ok: uri(&endpoints.ok)?,
            members: endpoints.members,
        };
        Ok(BetterAuthClient {
            http,
            uris,
            timeout: options.timeout,
            fields: options.fields.clone(),
            jwt: options.jwt,
        })
    }

    /// Ask Better Auth whether the cookies carry a session.
    /// `trace` holds the W3C headers (`traceparent`, `tracestate`) of the lookup's span.
    pub async fn lookup(
        &self,
        query: &SessionQuery,
        trace: &[(&'static str, String)],
    ) -> SessionLookup {
        match tokio::time::timeout(self.timeout, self.call(query, trace)).await {
            Ok(lookup) => lookup,
            Err(_elapsed) => SessionLookup::Unavailable(Detail::UpstreamTimeout),
        }
    }

    /// A GET to Better Auth as the caller: their credential, user agent and address, and the
    /// trace context. `None` when the credential is not a header value.
    fn request_as(
        &self,
        uri: Uri,
        query: &SessionQuery,
        trace: &[(&'static str, String)],
    ) -> Option<Outgoing> {
        let mut request = get(uri);
        let headers = request.headers_mut();
        let user_agent = query
            .user_agent
            .as_deref()
            .and_then(|ua| HeaderValue::from_str(ua).ok())
            .unwrap_or(HeaderValue::from_static(DEFAULT_USER_AGENT));
        headers.insert(USER_AGENT, user_agent);
        // The core only forwards visible ASCII; a value that is not a header denies.
        let (name, value) = credential_header(&query.credential)?;
        headers.insert(name, value);
        if let Some(addr) = query
            .client_addr
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            // Better Auth's rate limiter keys on the first X-Forwarded-For value: give it the
            // real client, so one busy user cannot exhaust everyone's bucket.
            headers.insert("x-forwarded-for", addr);
        }
        for (name, value) in trace {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        Some(request)
    }

    async fn call(&self, query: &SessionQuery, trace: &[(&'static str, String)]) -> SessionLookup {
        let uri = if query.fresh {
            &self.uris.session_fresh
        } else {
            &self.uris.session
        };
        let Some(request) = self.request_as(uri.clone(), query, trace) else {
            return SessionLookup::BadAnswer;
        };
        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(detail) => return SessionLookup::Unavailable(detail),
        };
        let status = response.status();
        // Read now, before the body takes the response: no copy of the whole header map.
        let set_auth_token = text_header(response.headers(), "set-auth-token");
        let jwt = if self.jwt {
            text_header(response.headers(), "set-auth-jwt")
        } else {
            None
        };
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();

        let api_key = query.credential.kind() == CredentialKind::ApiKey;
        match status.as_u16() {
            200 => {}
            401 => return SessionLookup::NoSession { set_cookies },
            // The API-key plugin answers an invalid key 403 `INVALID_API_KEY`.
            403 if api_key => return SessionLookup::NoSession { set_cookies },
            429 if api_key => return key_rate_limit(response).await,
            429 => return SessionLookup::Unavailable(Detail::UpstreamRateLimited),
            500..=599 => return SessionLookup::Unavailable(Detail::UpstreamServerError),
            other => {
                tracing::warn!(
                    status = other,
                    "Better Auth session endpoint answered an unexpected status"
                );
                return SessionLookup::BadAnswer;
            }
        }

        let body = match read_bounded(response, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                tracing::warn!(
                    limit = MAX_BODY_BYTES,
                    "Better Auth session body exceeds the limit"
                );
                return SessionLookup::BadAnswer;
            }
            Err(BodyError::Read) => {
                return SessionLookup::Unavailable(Detail::UpstreamUnreachable);
            }
        };
        match parse_session(&body, set_cookies, &self.fields) {
            SessionLookup::Valid {
                mut user,
                expires_at,
                set_cookies,
                ..
            } => {
                user.jwt = jwt;
                SessionLookup::Valid {
                    user,
                    expires_at,
                    set_cookies,
                    set_auth_token,
                }
            }
            other => other,
        }
    }

    /// `GET /ok`: is Better Auth answering at all? Used by readiness.
    pub async fn probe(&self) -> bool {
        let call = self.http.send(get(self.uris.ok.clone()));
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), call).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }
}

/// A GET of `uri` asking for JSON.
fn get(uri: Uri) -> Outgoing {
    let mut request = Request::new(Default::default());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static("application/json"));
    request
}

/// A URL as the client sends it.
fn uri(url: &url::Url) -> Result<Uri, String> {
    url.as_str()
        .parse()
        .map_err(|e| format!("{url}: not a request URI ({e})"))
}

/// The header that carries the one credential.
fn credential_header(credential: &Credential) -> Option<(HeaderName, HeaderValue)> {
    Some(match credential {
        Credential::Cookie(header) => (COOKIE, HeaderValue::from_str(header).ok()?),
        Credential::Bearer(token) => (
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
        ),
        Credential::ApiKey { header, key } => (
            HeaderName::from_bytes(header.as_bytes()).ok()?,
            HeaderValue::from_str(key).ok()?,
        ),
    })
}

/// A 429 to an API key: the key's own limit (`RATE_LIMITED`, `USAGE_EXCEEDED`, with
/// `details.tryAgainIn` in milliseconds) is the client's to wait out; anything else is Better
/// Auth's global limiter, which makes it unavailable for everyone.
async fn key_rate_limit(response: Response<Incoming>) -> SessionLookup {
    #[derive(Deserialize)]
    struct Limited {
        code: String,
        #[serde(default)]
        details: Option<Details>,
    }
    #[derive(Deserialize)]
    struct Details {
        #[serde(rename = "tryAgainIn")]
        try_again_in: Option<f64>,
    }
    let body = read_bounded(response, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    match serde_json::from_slice::<Limited>(&body) {
        Ok(limited) if matches!(limited.code.as_str(), "RATE_LIMITED" | "USAGE_EXCEEDED") => {
            let retry_after = limited
                .details
                .and_then(|d| d.try_again_in)
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| (ms / 1000.0).ceil() as u64);
            SessionLookup::RateLimited { retry_after }
        }
        _ => SessionLookup::Unavailable(Detail::UpstreamRateLimited),
    }
}

fn text_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// rustls is built without a default crypto provider: install ring, process-wide, for the
/// OpenTelemetry exporter's client and the TLS listeners. Installing twice is a harmless no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The parts of get-session's answer we rely on; everything else (the raw `session.token`
/// included) is ignored and never stored.
#[derive(Deserialize)]
struct SessionBody {
    user: UserBody,
    session: SessionFields,
}

#[derive(Deserialize)]
struct UserBody {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Admin plugin: a comma-separated list (or, from custom plugins, a list).
    #[serde(default)]
    role: Option<Roles>,
    #[serde(default, rename = "emailVerified")]
    email_verified: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Roles {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct SessionFields {
    #[serde(rename = "expiresAt")]
    expires_at: Instant,
    #[serde(default, rename = "createdAt")]
    created_at: Option<Instant>,
    /// Admin plugin: the admin's id while they impersonate this user.
    #[serde(default, rename = "impersonatedBy")]
    impersonated_by: Option<String>,
}

/// Better Auth serialises dates as ISO 8601 strings; accept epoch milliseconds too, as
/// custom session plugins may.
#[derive(Deserialize)]
#[serde(untagged)]
enum Instant {
    Text(String),
    Millis(i64),
}

impl Instant {
    fn into_time(self) -> Option<OffsetDateTime> {
        match self {
            Instant::Text(text) => OffsetDateTime::parse(&text, &Rfc3339).ok(),
            Instant::Millis(ms) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            }
        }
    }
}

/// Turn a 200 body into a lookup outcome. Logs parse failures by position and category only:
/// serde's messages can quote the offending value, and the body holds the session token.
///
/// `fields` are the `AUTHZ_HEADER_MAP` paths: without any, the body is read into the few typed
/// fields only; with some, into a JSON value first, so that any field can be mapped.
pub fn parse_session(
    body: &[u8],
    set_cookies: Vec<String>,
    fields: &[Vec<String>],
) -> SessionLookup {
    let body = body.trim_ascii();
    if body == b"null" {
        return SessionLookup::NoSession { set_cookies };
    }
    let parsed = if fields.is_empty() {
        serde_json::from_slice(body).map(|parsed| (parsed, Vec::new()))
    } else {
        serde_json::from_slice::<serde_json::Value>(body).and_then(|value| {
            let mapped = fields
                .iter()
                .map(|f| headers::field_text(&value, f))
                .collect();
            SessionBody::deserialize(&value).map(|parsed| (parsed, mapped))
        })
    };
    let (parsed, mapped): (SessionBody, Vec<Option<String>>) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::warn!(
                category = ?error.classify(),
                line = error.line(),
                column = error.column(),
                bytes = body.len(),
                "Better Auth session body is not a session"
            );
            return SessionLookup::BadAnswer;
        }
    };
    let Some(expires_at) = parsed.session.expires_at.into_time() else {
        tracing::warn!("Better Auth session.expiresAt is not a date");
        return SessionLookup::BadAnswer;
    };
    SessionLookup::Valid {
        user: SessionUser {
            id: parsed.user.id,
            email: parsed.user.email,
            name: parsed.user.name,
            mapped,
            jwt: None,
            role: parsed.user.role.map(|roles| match roles {
                Roles::One(list) => list,
                Roles::Many(list) => list.join(","),
            }),
            email_verified: parsed.user.email_verified == Some(true),
            impersonated: parsed
                .session
                .impersonated_by
                .is_some_and(|by| !by.is_empty()),
            signed_in_at: parsed.session.created_at.and_then(Instant::into_time),
        },
        expires_at,
        set_cookies,
        set_auth_token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_better_auth_body() {
        let body = br#"{"session":{"expiresAt":"2026-12-03T01:02:03.456Z","token":"SECRET","createdAt":"2026-11-26T01:02:03.456Z","updatedAt":"2026-11-26T01:02:03.456Z","ipAddress":"","userAgent":"curl","userId":"u1","id":"s1"},"user":{"name":"Ann","email":"ann@example.com","emailVerified":false,"image":null,"createdAt":"2026-11-26T01:02:03.450Z","updatedAt":"2026-11-26T01:02:03.450Z","id":"u1"}}"#;
        let SessionLookup::Valid {
            user, expires_at, ..
        } = parse_session(body, vec![], &[])
        else {
            panic!("expected a valid session");
        };
        assert_eq!(user.id, "u1");
        assert_eq!(user.email.as_deref(), Some("ann@example.com"));
        assert_eq!(user.name.as_deref(), Some("Ann"));
        assert_eq!(expires_at.unix_timestamp(), 1_796_259_723);
    }

    #[test]
    fn null_is_no_session() {
        for body in [&b"null"[..], b" null\n"] {
            assert_eq!(
                parse_session(body, vec!["c=1".into()], &[]),
                SessionLookup::NoSession {
                    set_cookies: vec!["c=1".into()]
                }
            );
        }
    }

    #[test]
    fn anything_else_is_a_bad_answer() {
        for body in [
            &b""[..],
            b"{}",
            b"[]",
            b"<html>",
            br#"{"user":{"id":"u1"}}"#,
            br#"{"session":{"expiresAt":"2026-12-03T01:02:03Z"}}"#,
            br#"{"user":{"id":5},"session":{"expiresAt":"2026-12-03T01:02:03Z"}}"#,
            br#"{"user":{"id":"u1"},"session":{"expiresAt":"tomorrow"}}"#,
            br#"{"user":{"id":"u1"},"session":{"expiresAt":null}}"#,
        ] {
            assert_eq!(
                parse_session(body, vec![], &[]),
                SessionLookup::BadAnswer,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn policy_fields_are_read_from_the_session() {
        let body = br#"{"session":{"expiresAt":"2026-12-03T01:02:03Z","createdAt":"2026-11-26T01:02:03.456Z","impersonatedBy":"admin-1"},"user":{"id":"u1","role":"user,admin","emailVerified":true}}"#;
        let SessionLookup::Valid { user, .. } = parse_session(body, vec![], &[]) else {
            panic!("expected a valid session");
        };
        assert_eq!(user.role.as_deref(), Some("user,admin"));
        assert!(user.email_verified && user.impersonated);
        assert_eq!(
            user.signed_in_at.map(OffsetDateTime::unix_timestamp),
            Some(1_795_654_923)
        );

        // As lists, as epoch milliseconds, as nulls, or absent.
        for (fields, role, verified, impersonated, signed_in) in [
            (
                r##""role":["user","admin"],"emailVerified":false},"session":{"createdAt":1800000000000,"impersonatedBy":"""##,
                Some("user,admin"),
                false,
                false,
                Some(1_800_000_000),
            ),
            (
                r#""role":null,"emailVerified":null},"session":{"createdAt":null,"impersonatedBy":null"#,
                None,
                false,
                false,
                None,
            ),
            (
                r#""name":"n"},"session":{"createdAt":"yesterday""#,
                None,
                false,
                false,
                None,
            ),
        ] {
            let body =
                format!(r#"{{"user":{{"id":"u1",{fields},"expiresAt":"2026-12-03T01:02:03Z"}}}}"#);
            let SessionLookup::Valid { user, .. } = parse_session(body.as_bytes(), vec![], &[])
            else {
                panic!("expected a valid session: {body}");
            };
            assert_eq!(user.role.as_deref(), role, "{body}");
            assert_eq!(user.email_verified, verified, "{body}");
            assert_eq!(user.impersonated, impersonated, "{body}");
            assert_eq!(
                user.signed_in_at.map(OffsetDateTime::unix_timestamp),
                signed_in,
                "{body}"
            );
        }
    }

    #[test]
    fn the_membership_and_fresh_session_urls_sit_beside_the_session_endpoint() {
        let base = url::Url::parse("http://auth.internal:3000/").unwrap();
        let e = Endpoints::of(&base, "/api/auth/get-session").unwrap();
        assert_eq!(
            e.members.as_str(),
            "http://auth.internal:3000/api/auth/organization/list-members"
        );
        assert_eq!(
            e.session_fresh.as_str(),
            "http://auth.internal:3000/api/auth/get-session?disableCookieCache=true"
        );
        let e = Endpoints::of(&base, "/auth/v2/session").unwrap();
        assert_eq!(
            e.members.as_str(),
            "http://auth.internal:3000/auth/v2/organization/list-members"
        );
    }

    #[test]
    fn epoch_millis_are_accepted() {
        let body = br#"{"user":{"id":"u1"},"session":{"expiresAt":1800000000000}}"#;
        let SessionLookup::Valid { expires_at, .. } = parse_session(body, vec![], &[]) else {
            panic!("expected a valid session");
        };
        assert_eq!(expires_at.unix_timestamp(), 1_800_000_000);
    }
}
