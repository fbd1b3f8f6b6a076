//! The HTTP adapter: `/auth` for nginx `auth_request`, ingress-nginx `auth-url` and Traefik
//! ForwardAuth.
//!
//! The proxy tells us which request it means through headers: the URI in `X-Original-URI`
//! (nginx), `X-Original-URL` (ingress-nginx, a full URL) or `X-Forwarded-Uri` (Traefik), the
//! method in `X-Original-Method` / `X-Forwarded-Method`, the host in `Host`, `X-Original-URL` or
//! `X-Forwarded-Host`. [`ForwardAuth`] (`AUTHZ_FORWARD_AUTH`) fixes which one is trusted; in
//! `auto`, headers that disagree (or one repeated with different values) make the check a
//! `BAD_REQUEST`. The listener must
//! still be reachable by the proxy only. Allow is `200` with the identity as response headers
//! for the proxy to copy upstream; deny is the status with the JSON body; both carry
//! `Cache-Control: no-store`. Only this module knows axum and hyper types.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use http::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::authorizer::Authorizer;
use crate::decision::{CheckRequest, Decision, TraceHeaders, Transport};
use crate::names;
use crate::reason::{Detail, Reason};
use crate::routes::{NamedRoute, host_key};

pub const AUTH_PATH: &str = "/auth";

/// What `/auth` needs: the shared authorizer and which proxy's headers to trust.
pub struct HttpAdapter {
    pub authorizer: Arc<Authorizer>,
    pub forward_auth: ForwardAuth,
    /// `AUTHZ_ROUTE_HEADER`: the header the proxy names a route in (unset: none is read).
    pub route_header: Option<String>,
}

pub fn router(adapter: HttpAdapter) -> Router {
    Router::new()
        .route(AUTH_PATH, any(auth))
        .with_state(Arc::new(adapter))
}

async fn auth(
    State(adapter): State<Arc<HttpAdapter>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let original = Original::read(adapter.forward_auth, &headers);
    let all = |name: &str| -> Vec<Cow<'_, str>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect()
    };
    let cookies = all(COOKIE.as_str());
    let authorization = all(AUTHORIZATION.as_str());
    let api_keys = all(adapter.authorizer.api_key_header());
    let client_addr = client_address(&headers, peer);
    let origin = text_ref(&headers, "origin");
    let preflight_method = text_ref(&headers, "access-control-request-method");
    let user_agent = text_ref(&headers, USER_AGENT.as_str());
    let route = adapter
        .route_header
        .as_deref()
        .map_or(NamedRoute::None, |name| named_route(&headers, name));

    let req = CheckRequest {
        transport: Transport::Http,
        trace: TraceHeaders {
            traceparent: text_ref(&headers, "traceparent"),
            tracestate: text_ref(&headers, "tracestate"),
        },
        method: original.method.unwrap_or(method.as_str()),
        // Missing or unusable: "", which the core answers with `BAD_REQUEST`.
        path: original.uri.unwrap_or_default(),
        host: original.host,
        route,
        accept: text_ref(&headers, ACCEPT.as_str()),
        forwarded_conflict: original.conflict,
        cookies: cookies.iter().map(|c| c.as_ref()).collect(),
        authorization: authorization.iter().map(|c| c.as_ref()).collect(),
        api_keys: api_keys.iter().map(|c| c.as_ref()).collect(),
        origin,
        access_control_request_method: preflight_method,
        user_agent,
        client_addr: Some(&client_addr),
    };
    let decision = adapter.authorizer.check(&req).await;
    response(&decision)
}

/// `AUTHZ_FORWARD_AUTH`: which proxy calls `/auth`, and so which one header is trusted for each
/// of the original request's URI, method and host. ingress-nginx (without `auth-method`) and
/// Traefik pass every client header on and set only their own, so a client could otherwise
/// add the header another proxy would use and choose the request being judged.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ForwardAuth {
    /// Any of the known headers; where several name the same thing they must agree.
    #[default]
    Auto,
    /// The shipped `nginx.conf`: `X-Original-URI`, `X-Original-Method`, `Host`.
    Nginx,
    /// ingress-nginx's auth template: `X-Original-URL` (URI and host), `X-Original-Method`.
    IngressNginx,
    /// Traefik ForwardAuth: `X-Forwarded-Uri`, `X-Forwarded-Method`, `X-Forwarded-Host`.
    Traefik,
}

// === impl ForwardAuth ===

impl ForwardAuth {
    pub const NAMES: [(&'static str, ForwardAuth); 4] = [
        ("auto", ForwardAuth::Auto),
        ("nginx", ForwardAuth::Nginx),
        ("ingress-nginx", ForwardAuth::IngressNginx),
        ("traefik", ForwardAuth::Traefik),
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        names::parse(&Self::NAMES, raw)
    }

    pub fn name(self) -> &'static str {
        names::name_of(&Self::NAMES, &self)
    }

    /// The headers trusted for the URI, the method and the host, in `auto`'s order.
    fn sources(self) -> Sources {
        use Source::*;
        match self {
            ForwardAuth::Auto => Sources {
                uri: &[Header("x-original-uri"), Url, Header("x-forwarded-uri")],
                method: &["x-original-method", "x-forwarded-method"],
                host: &[Url, Header("x-forwarded-host")],
                host_header_fallback: true,
            },
            ForwardAuth::Nginx => Sources::fixed(
                &[Header("x-original-uri")],
                &["x-original-method"],
                &[Header("host")],
            ),
            ForwardAuth::IngressNginx => Sources::fixed(&[Url], &["x-original-method"], &[Url]),
            ForwardAuth::Traefik => Sources::fixed(
                &[Header("x-forwarded-uri")],
                &["x-forwarded-method"],
                &[Header("x-forwarded-host")],
            ),
        }
    }
}

struct Sources {
    uri: &'static [Source],
    method: &'static [&'static str],
    host: &'static [Source],
    /// `auto` only: with no forwarded host, the request's own `Host` (the shipped nginx sets it).
    host_header_fallback: bool,
}

impl Sources {
    /// One proxy's own headers, and nothing else.
    fn fixed(
        uri: &'static [Source],
        method: &'static [&'static str],
        host: &'static [Source],
    ) -> Self {
        Sources {
            uri,
            method,
            host,
            host_header_fallback: false,
        }
    }
}

#[derive(Copy, Clone)]
enum Source {
    Header(&'static str),
    /// ingress-nginx's `X-Original-URL`: the target for a URI, the authority for a host.
    Url,
}

/// The original request as the trusted headers name it.
#[derive(Default)]
struct Original<'h> {
    /// `None` when no trusted header names it; `Some("")` when one is unusable.
    uri: Option<&'h str>,
    method: Option<&'h str>,
    host: Option<&'h str>,
    /// Two trusted headers, or two copies of one, disagree.
    conflict: bool,
}

// === impl Original ===

impl<'h> Original<'h> {
    fn read(mode: ForwardAuth, headers: &'h HeaderMap) -> Self {
        let sources = mode.sources();
        let mut conflict = false;
        let uri = agree(
            sources.uri.iter().map(|s| s.values(headers, Part::Target)),
            |a, b| a == b,
            &mut conflict,
        );
        let method = agree(
            sources
                .method
                .iter()
                .map(|name| Source::Header(name).values(headers, Part::Target)),
            |a, b| a == b,
            &mut conflict,
        );
        let mut host = agree(
            sources.host.iter().map(|s| s.values(headers, Part::Host)),
            |a, b| host_key(a) == host_key(b),
            &mut conflict,
        );
        if host.is_none() && sources.host_header_fallback {
            host = text_ref(headers, "host");
        }
        Original {
            uri,
            method,
            host,
            conflict,
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Part {
    Target,
    Host,
}

// === impl Source ===

impl Source {
    /// Every value this source has in `headers` (several when the header is repeated), each
    /// `""` when unusable.
    fn values(self, headers: &HeaderMap, part: Part) -> Vec<&str> {
        let name = match self {
            Source::Header(name) => name,
            Source::Url => "x-original-url",
        };
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                let v = v.to_str().unwrap_or_default();
                match (self, part) {
                    (Source::Header(_), _) => v,
                    (Source::Url, Part::Target) => target_of_url(v),
                    (Source::Url, Part::Host) => authority_of_url(v),
                }
            })
            .collect()
    }
}

/// The one value every source agrees on. Values that disagree, from two sources or from one
/// repeated header, set `conflict`; the first value is still returned (the core denies on the
/// conflict). A header repeated with the same value names the same request.
fn agree<'h>(
    sources: impl Iterator<Item = Vec<&'h str>>,
    same: impl Fn(&str, &str) -> bool,
    conflict: &mut bool,
) -> Option<&'h str> {
    let mut chosen: Option<&'h str> = None;
    for values in sources {
        for v in values {
            match chosen {
                None => chosen = Some(v),
                Some(c) if !same(c, v) => *conflict = true,
                Some(_) => {}
            }
        }
    }
    chosen
}

/// The route named in `name`: once, or a deny when repeated (a client copy got through) or
/// not text.
fn named_route<'h>(headers: &'h HeaderMap, name: &str) -> NamedRoute<'h> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => NamedRoute::None,
        (Some(value), None) => value
            .to_str()
            .map_or(NamedRoute::Named(""), NamedRoute::Named),
        (Some(_), Some(_)) => NamedRoute::Repeated,
    }
}

/// The request target of ingress-nginx's full `X-Original-URL` (`scheme://authority/path?query`),
/// as text. Not through a URL parser: WHATWG parsing turns `\` into `/` and resolves dot
/// segments, so the path judged would not be the one nginx passes to the back end. `""` (a
/// `BAD_REQUEST`) when there is no `scheme://` or no path.
fn target_of_url(url: &str) -> &str {
    let Some((_scheme, rest)) = url.split_once("://") else {
        return "";
    };
    match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        _ => "",
    }
}

/// The authority of `X-Original-URL`, `""` when there is none.
fn authority_of_url(url: &str) -> &str {
    let Some((_scheme, rest)) = url.split_once("://") else {
        return "";
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// The client as the proxy saw it: the last `X-Forwarded-For` entry (the one the proxy in front
/// of us appended), else `X-Real-IP`, else the TCP peer (the proxy itself).
fn client_address(headers: &HeaderMap, peer: SocketAddr) -> String {
    let last_forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(crate::decision::last_forwarded_for);
    last_forwarded
        .or_else(|| text_ref(headers, "x-real-ip"))
        .map(str::to_owned)
        .unwrap_or_else(|| peer.ip().to_string())
}

fn text_ref<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The core's decision as the HTTP answer the proxy expects.
pub fn response(d: &Decision) -> Response {
    let status =
        StatusCode::from_u16(d.reason.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Never replayed for another request: an allow holds for this method, URI and session only.
    let mut builder = Response::builder()
        .status(status)
        .header(CACHE_CONTROL, "no-store");
    let body = if d.is_allow() {
        for (name, value) in &d.set_headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                builder = builder.header(name, value);
            }
        }
        if d.strips_credentials {
            // nginx takes Cookie and Authorization from this answer (absent: dropped) rather
            // than from the request; it cannot remove a header on an auth answer's word.
            builder = builder.header("x-authz-strip", "1");
        }
        Body::empty()
    } else {
        // nginx never passes an auth subrequest's body on; it can read this header with
        // `auth_request_set` and answer with the exact code.
        builder = builder
            .header(CONTENT_TYPE, "application/json")
            .header("x-authz-error-code", d.reason.code());
        Body::from(d.reason.deny_body(d.detail))
    };
    for cookie in &d.set_cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            builder = builder.header(SET_COOKIE, value);
        }
    }
    for (name, value) in &d.client_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    builder.body(body).unwrap_or_else(|_| {
        // Only reachable if a header above were invalid, and those are filtered: deny anyway.
        let mut fallback = Response::new(Body::from(Reason::AuthError.deny_body(Detail::None)));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        fallback
    })
}

#[cfg(test)]
mod tests {
    use super::target_of_url;

    #[test]
    fn original_url_keeps_the_raw_target() {
        let cases = [
            ("https://app.example/api/u1/tasks?x=1", "/api/u1/tasks?x=1"),
            ("http://app.example:8080/", "/"),
            ("https://app.example/api/u2/x\\..\\u1", "/api/u2/x\\..\\u1"),
            ("https://app.example/a/../b", "/a/../b"),
            ("https://app.example?x=/api/u1/", ""),
            ("https://app.example", ""),
            ("/api/u1/tasks", ""),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(target_of_url(url), want, "{url}");
        }
    }
}
