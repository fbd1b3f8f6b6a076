//! The HTTP adapter: `/auth` for nginx `auth_request`, ingress-nginx `auth-url` and Traefik
//! ForwardAuth.
//!
//! The proxy tells us which request it means through headers: the URI in `X-Original-URI`
//! (nginx), `X-Original-URL` (ingress-nginx, a full URL) or `X-Forwarded-Uri` (Traefik), the
//! method in `X-Original-Method` / `X-Forwarded-Method`. Those headers are trusted, which is why
//! this listener must be reachable by the proxy only. Allow is `200` with the identity as
//! response headers for the proxy to copy upstream; deny is the status with the JSON body.
//! Only this module knows axum and hyper types.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::authorizer::Authorizer;
use crate::decision::{CheckRequest, Decision};
use crate::metrics::Transport;
use crate::reason::{Detail, Reason};
use crate::telemetry::TraceHeaders;

pub const AUTH_PATH: &str = "/auth";

/// The TCP peer of a connection, plain or TLS.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The plain listener, with `TCP_NODELAY` on every connection: answers go out in one write and
/// must not wait for Nagle.
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop: retries and backs off on errors.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

pub fn router(authorizer: Arc<Authorizer>) -> Router {
    Router::new()
        .route(AUTH_PATH, any(auth))
        .with_state(authorizer)
}

async fn auth(
    State(authorizer): State<Arc<Authorizer>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(uri) = original_uri(&headers) else {
        let d = Decision::deny(Reason::BadRequest, Detail::MissingOriginalUri);
        tracing::debug!(
            transport = "http",
            reason = d.reason.code(),
            "check without original URI"
        );
        return response(&d);
    };
    let original_method = text(&headers, "x-original-method")
        .or_else(|| text(&headers, "x-forwarded-method"))
        .unwrap_or(Cow::Borrowed(method.as_str()));
    let cookies: Vec<Cow<'_, str>> = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    let client_addr = client_address(&headers, peer);
    let origin = text(&headers, "origin");
    let preflight_method = text(&headers, "access-control-request-method");
    let user_agent = text(&headers, USER_AGENT.as_str());

    let req = CheckRequest {
        method: &original_method,
        path: &uri,
        cookies: cookies.iter().map(|c| c.as_ref()).collect(),
        origin: origin.as_deref(),
        access_control_request_method: preflight_method.as_deref(),
        user_agent: user_agent.as_deref(),
        client_addr: Some(&client_addr),
    };
    let trace = TraceHeaders {
        traceparent: text_ref(&headers, "traceparent"),
        tracestate: text_ref(&headers, "tracestate"),
    };
    let decision = authorizer.check(Transport::Http, &req, trace).await;
    response(&decision)
}

/// The original request target, from whichever header this proxy sets. `Some("")` when a
/// header is present but unusable, so the core answers `BAD_REQUEST`.
fn original_uri(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    if let Some(v) = headers.get("x-original-uri") {
        return Some(v.to_str().map_or(Cow::Borrowed(""), Cow::Borrowed));
    }
    if let Some(v) = headers.get("x-original-url") {
        return Some(
            v.to_str()
                .map_or(Cow::Borrowed(""), |url| Cow::Borrowed(target_of_url(url))),
        );
    }
    if let Some(v) = headers.get("x-forwarded-uri") {
        return Some(v.to_str().map_or(Cow::Borrowed(""), Cow::Borrowed));
    }
    None
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

/// The client as the proxy saw it: the last `X-Forwarded-For` entry (the one the proxy in front
/// of us appended), else `X-Real-IP`, else the TCP peer (the proxy itself).
fn client_address(headers: &HeaderMap, peer: SocketAddr) -> String {
    let last_forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    last_forwarded
        .or_else(|| text_ref(headers, "x-real-ip"))
        .map(str::to_owned)
        .unwrap_or_else(|| peer.ip().to_string())
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<Cow<'h, str>> {
    text_ref(headers, name).map(Cow::Borrowed)
}

fn text_ref<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The core's decision as the HTTP answer the proxy expects.
pub fn response(d: &Decision) -> Response {
    let status =
        StatusCode::from_u16(d.reason.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    let body = if d.is_allow() {
        for (name, value) in &d.set_headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                builder = builder.header(name, value);
            }
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
    builder.body(body).unwrap_or_else(|_| {
        // Only reachable if a header above were invalid, and those are filtered: deny anyway.
        let mut fallback = Response::new(Body::from(Reason::AuthError.deny_body(Detail::None)));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
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
