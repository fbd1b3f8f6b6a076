//! The Envoy adapter: `envoy.service.auth.v3.Authorization/Check` over gRPC (tonic).
//!
//! Translates a `CheckRequest` into the core's [`CheckRequest`](crate::decision::CheckRequest)
//! and the core's [`Decision`] back into a `CheckResponse`. Every decision, deny included, is an
//! OK gRPC response: a tonic `Err(Status)` would be an *error* to Envoy, which then drops our
//! status, body and cookies and applies `status_on_error`. Only this module knows tonic and
//! Envoy types.

use std::borrow::Cow;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;

use crate::authorizer::Authorizer;
use crate::decision::{self, Decision, TraceHeaders, Transport};
use crate::routes::NamedRoute;
use wire::{AddressKind, CheckRequest, Entry, HttpRequest};

mod service;
pub mod wire;

pub use service::{Answer, AuthorizationService, Checker};

/// The [`Checker`] of better-authz: Envoy's request to the core and back. Cheap to clone.
#[derive(Clone)]
pub struct ExtAuthz {
    authorizer: Arc<Authorizer>,
}

impl ExtAuthz {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        ExtAuthz { authorizer }
    }
}

impl Checker for ExtAuthz {
    /// Judge one `CheckRequest`. Every decision, deny included, is an answer.
    fn check(&self, check: CheckRequest) -> Answer {
        let this = self.clone();
        Box::pin(async move { this.judge(check).await })
    }
}

impl ExtAuthz {
    async fn judge(&self, check: CheckRequest) -> CheckResponse {
        // Without `attributes.request.http` there is nothing to judge: the core answers an
        // empty path with `BAD_REQUEST`, counted and logged like every decision.
        let empty = HttpRequest::default();
        let http = http_request(&check).unwrap_or(&empty);
        let headers = Headers::of(http);
        let cookies = headers.all("cookie");
        let authorization = headers.all("authorization");
        let api_keys = headers.all(self.authorizer.api_key_header());
        let client_addr = client_address(&check).or_else(|| {
            headers
                .last("x-forwarded-for")
                .and_then(|xff| crate::decision::last_forwarded_for(&xff).map(str::to_owned))
                .map(Cow::Owned)
        });
        let origin = headers.first("origin");
        let preflight_method = headers.first("access-control-request-method");
        let user_agent = headers.first("user-agent");
        let traceparent = headers.first("traceparent");
        let tracestate = headers.first("tracestate");
        let accept = headers.first("accept");
        let req = decision::CheckRequest {
            transport: Transport::Grpc,
            trace: TraceHeaders {
                traceparent: traceparent.as_deref(),
                tracestate: tracestate.as_deref(),
            },
            method: &http.method,
            path: &http.path,
            host: Some(http.host.as_str()).filter(|h| !h.is_empty()),
            route: named_route(&check),
            accept: accept.as_deref(),
            forwarded_conflict: false,
            cookies: cookies.iter().map(|c| c.as_ref()).collect(),
            authorization: authorization.iter().map(|c| c.as_ref()).collect(),
            api_keys: api_keys.iter().map(|c| c.as_ref()).collect(),
            origin: origin.as_deref(),
            access_control_request_method: preflight_method.as_deref(),
            user_agent: user_agent.as_deref(),
            client_addr: client_addr.as_deref(),
        };
        let decision = self.authorizer.check(&req).await;
        check_response(&decision)
    }
}

/// The route the Envoy route (or Envoy Gateway's `contextExtensions`) named:
/// `check_settings.context_extensions` key `route`. Set by the proxy's configuration, never
/// by the client.
fn named_route(check: &CheckRequest) -> NamedRoute<'_> {
    check
        .attributes
        .as_ref()
        .and_then(|a| Entry::last(&a.context_extensions, "route"))
        .map_or(NamedRoute::None, NamedRoute::Named)
}

fn http_request(check: &CheckRequest) -> Option<&HttpRequest> {
    check.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// The downstream peer Envoy saw (`attributes.source.address`): with `use_remote_address`, the
/// real client, unlike a client-sent `X-Forwarded-For`.
fn client_address(check: &CheckRequest) -> Option<Cow<'_, str>> {
    let address = check
        .attributes
        .as_ref()?
        .source
        .as_ref()?
        .address
        .as_ref()?
        .address
        .as_ref()?;
    match address {
        AddressKind::Socket(socket) if !socket.address.is_empty() => {
            Some(Cow::Borrowed(socket.address.as_str()))
        }
        _ => None,
    }
}

/// Request headers from `headers` (lower-case keys, repeated headers joined with `,`), or from
/// `header_map` when Envoy sends raw headers (`encode_raw_headers: true`).
enum Headers<'a> {
    Map(&'a [Entry]),
    Raw(&'a [wire::HeaderValue]),
}

// === impl Headers ===

impl<'a> Headers<'a> {
    fn of(http: &'a HttpRequest) -> Self {
        match &http.header_map {
            Some(map) if http.headers.is_empty() => Headers::Raw(&map.headers),
            _ => Headers::Map(&http.headers),
        }
    }

    fn all(&self, name: &str) -> Vec<Cow<'a, str>> {
        self.values(name).collect()
    }

    /// Every value of `name`, in order, without collecting them (most headers are read once).
    fn values<'n>(&self, name: &'n str) -> impl DoubleEndedIterator<Item = Cow<'a, str>> + 'n
    where
        'a: 'n,
    {
        let (map, list) = match *self {
            Headers::Map(map) => (Entry::last(map, name), &[][..]),
            Headers::Raw(list) => (None, list),
        };
        let from_map = map.map(Cow::Borrowed);
        let from_list = list
            .iter()
            .filter(move |h| h.key.eq_ignore_ascii_case(name))
            .map(raw_value);
        from_map.into_iter().chain(from_list)
    }

    fn first(&self, name: &str) -> Option<Cow<'a, str>> {
        self.values(name).next()
    }

    fn last(&self, name: &str) -> Option<Cow<'a, str>> {
        self.values(name).next_back()
    }
}

/// `raw_value` bytes when set (non-UTF-8 bytes become U+FFFD, which the core refuses to
/// forward), else `value`.
fn raw_value(h: &wire::HeaderValue) -> Cow<'_, str> {
    if h.raw_value.is_empty() {
        Cow::Borrowed(h.value.as_str())
    } else {
        String::from_utf8_lossy(&h.raw_value)
    }
}

/// The core's decision as Envoy's `CheckResponse`.
pub fn check_response(d: &Decision) -> CheckResponse {
    let status = Some(rpc::Status {
        code: d.reason.grpc_code() as i32,
        ..Default::default()
    });
    let http_response = if d.is_allow() {
        HttpResponse::OkResponse(OkHttpResponse {
            // Overwrite, never append: a client-sent x-user-id must not survive next to ours.
            headers: d
                .set_headers
                .iter()
                .map(|(k, v)| header(k, v, false))
                .collect(),
            headers_to_remove: d.remove_headers.clone(),
            // One entry per cookie, appended: "set" would keep only the last one.
            response_headers_to_add: d
                .set_cookies
                .iter()
                .map(|c| header("set-cookie", c, true))
                .chain(d.client_headers.iter().map(|(k, v)| header(k, v, false)))
                .collect(),
            ..Default::default()
        })
    } else {
        let mut headers = vec![
            header("content-type", "application/json", false),
            // A deny is about this request only: no cache on the way may keep it.
            header("cache-control", "no-store", false),
        ];
        headers.extend(d.set_cookies.iter().map(|c| header("set-cookie", c, true)));
        headers.extend(d.client_headers.iter().map(|(k, v)| header(k, v, false)));
        HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(d.reason.http_status()),
            }),
            headers,
            body: d.reason.deny_body(d.detail),
        })
    };
    CheckResponse {
        status,
        http_response: Some(http_response),
        ..Default::default()
    }
}

/// Envoy's ext_authz reads the deprecated `append` flag on this path (`append_action` is
/// ignored there), so it is set explicitly: `false` overwrites, `true` appends.
#[allow(deprecated)]
fn header(key: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append: Some(BoolValue { value: append }),
        ..Default::default()
    }
}
