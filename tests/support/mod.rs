//! Test harness: a **stand-in Better Auth** the tests control (for the answers a real one will
//! not give on demand: slow, garbage, 5xx, 429, redirects, huge bodies; and its organization
//! plugin's `list-members`, answering from a table the test sets), and the real service
//! started in-process on port 0 through the same `run` the binary calls.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use axum::routing::get;
use better_authz::config::{Args, Config};
use better_authz::{Listeners, run};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::sync::oneshot;

/// A well-formed Better Auth session cookie value (token.signature, URL-encoded).
pub const TOKEN: &str = "Zx9TokenValue42.c2lnbmF0dXJlLXZhbHVl%2Bx%3D";

pub fn session_cookie() -> String {
    format!("better-auth.session_token={TOKEN}")
}

/// What the stand-in answers on `GET /api/auth/get-session`.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a session for this user, expiring in `expires_in` seconds (negative: expired).
    Valid {
        user_id: String,
        expires_in: i64,
        set_cookies: Vec<String>,
    },
    /// 200 `null` (with optional clearing cookies), as for a forged or signed-out session.
    Null { set_cookies: Vec<String> },
    /// This status with a JSON `null` body.
    Status(u16),
    /// Wait this long, then answer as `then`.
    Slow(Duration, Box<Behavior>),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a body of this many bytes.
    Huge(usize),
    /// 302 to another host.
    Redirect,
    /// 200 with this JSON body, as given.
    Json(String),
    /// This status, body and response headers, as given.
    Answer {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
}

/// What the stand-in answers on `GET /api/auth/organization/list-members` (the organization
/// plugin), as Better Auth would for the memberships it is given.
#[derive(Clone, Debug)]
pub enum Members {
    /// Better Auth's rules over these memberships: an organization (by `organizationId` or
    /// `organizationSlug`) no membership names is 400 `ORGANIZATION_NOT_FOUND`; a caller (the
    /// `filterValue`) without a membership in it is 403
    /// `YOU_ARE_NOT_A_MEMBER_OF_THIS_ORGANIZATION`; otherwise 200 with the members that match
    /// the filter.
    Table(Vec<Membership>),
    /// This status and body, whatever was asked.
    Answer(u16, String),
}

/// One member record of the stand-in's organization plugin.
#[derive(Clone, Debug)]
pub struct Membership {
    pub org_id: String,
    pub org_slug: String,
    pub user_id: String,
    pub role: String,
}

pub fn membership(org_id: &str, org_slug: &str, user_id: &str, role: &str) -> Membership {
    Membership {
        org_id: org_id.into(),
        org_slug: org_slug.into(),
        user_id: user_id.into(),
        role: role.into(),
    }
}

pub struct StandInState {
    pub behavior: Mutex<Behavior>,
    pub calls: AtomicUsize,
    pub seen: Mutex<Vec<HeaderMap>>,
    /// The raw query of each `get-session` call, in order.
    pub session_queries: Mutex<Vec<String>>,
    pub ok_status: Mutex<u16>,
    pub members: Mutex<Members>,
    pub member_calls: AtomicUsize,
    /// The raw query and headers of each `list-members` call, in order.
    pub members_seen: Mutex<Vec<(String, HeaderMap)>>,
}

/// A stand-in Better Auth on loopback.
pub struct StandIn {
    pub addr: SocketAddr,
    pub state: Arc<StandInState>,
    _stop: oneshot::Sender<()>,
}

impl StandIn {
    pub async fn start(behavior: Behavior) -> StandIn {
        // Test clients are reqwest clients too: they need the process-wide TLS provider.
        better_authz::better_auth::install_crypto_provider();
        let state = Arc::new(StandInState {
            behavior: Mutex::new(behavior),
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            session_queries: Mutex::new(Vec::new()),
            ok_status: Mutex::new(200),
            members: Mutex::new(Members::Table(Vec::new())),
            member_calls: AtomicUsize::new(0),
            members_seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/auth/get-session", get(get_session))
            .route("/api/auth/ok", get(ok))
            .route("/api/auth/organization/list-members", get(list_members))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        StandIn {
            addr,
            state,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn set_members(&self, members: Members) {
        *self.state.members.lock().unwrap() = members;
    }

    pub fn member_calls(&self) -> usize {
        self.state.member_calls.load(Ordering::SeqCst)
    }

    /// The query of each `list-members` call, decoded into pairs, in order.
    pub fn member_queries(&self) -> Vec<Vec<(String, String)>> {
        let seen = self.state.members_seen.lock().unwrap();
        seen.iter().map(|(query, _)| pairs(query)).collect()
    }

    /// The raw query of each `list-members` call, as sent.
    pub fn member_raw_queries(&self) -> Vec<String> {
        let seen = self.state.members_seen.lock().unwrap();
        seen.iter().map(|(query, _)| query.clone()).collect()
    }

    /// The headers of the last `list-members` call.
    pub fn last_member_headers(&self) -> HeaderMap {
        let seen = self.state.members_seen.lock().unwrap();
        seen.last().map(|(_, h)| h.clone()).unwrap_or_default()
    }

    /// The raw query of each `get-session` call, in order (`""` when none).
    pub fn session_queries(&self) -> Vec<String> {
        self.state.session_queries.lock().unwrap().clone()
    }

    pub fn last_seen(&self) -> HeaderMap {
        self.state
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn ok(State(state): State<Arc<StandInState>>) -> Response<Body> {
    let status = *state.ok_status.lock().unwrap();
    Response::builder()
        .status(status)
        .body(Body::from(r#"{"ok":true}"#))
        .unwrap()
}

/// A query string decoded into its pairs, in order.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

async fn list_members(
    State(state): State<Arc<StandInState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    state.member_calls.fetch_add(1, Ordering::SeqCst);
    let query = uri.query().unwrap_or_default().to_owned();
    state
        .members_seen
        .lock()
        .unwrap()
        .push((query.clone(), headers));
    let members = state.members.lock().unwrap().clone();
    let json = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let table = match members {
        Members::Answer(status, body) => return json(status, body),
        Members::Table(table) => table,
    };
    let asked = pairs(&query);
    let param = |name: &str| {
        asked
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let in_org: Vec<&Membership> = match (param("organizationId"), param("organizationSlug")) {
        (Some(id), _) => table.iter().filter(|m| m.org_id == id).collect(),
        (None, Some(slug)) => table.iter().filter(|m| m.org_slug == slug).collect(),
        (None, None) => {
            return json(400, r#"{"code":"NO_ACTIVE_ORGANIZATION"}"#.into());
        }
    };
    if in_org.is_empty() {
        return json(
            400,
            r#"{"code":"ORGANIZATION_NOT_FOUND","message":"Organization not found"}"#.into(),
        );
    }
    let caller = param("filterValue").unwrap_or_default();
    if !in_org.iter().any(|m| m.user_id == caller) {
        return json(
            403,
            r#"{"code":"YOU_ARE_NOT_A_MEMBER_OF_THIS_ORGANIZATION","message":"You are not a member of this organization"}"#
                .into(),
        );
    }
    let filtered: Vec<serde_json::Value> = in_org
        .iter()
        .filter(|m| param("filterField").as_deref() != Some("userId") || m.user_id == caller)
        .map(|m| {
            serde_json::json!({
                "id": format!("member-{}-{}", m.org_id, m.user_id),
                "organizationId": m.org_id,
                "userId": m.user_id,
                "role": m.role,
                "createdAt": "2026-11-26T01:02:03.456Z",
                "user": {"id": m.user_id, "name": "U", "email": "u@example.com", "image": null},
            })
        })
        .collect();
    let total = filtered.len();
    json(
        200,
        serde_json::json!({"members": filtered, "total": total}).to_string(),
    )
}

async fn get_session(
    State(state): State<Arc<StandInState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(headers);
    state
        .session_queries
        .lock()
        .unwrap()
        .push(uri.query().unwrap_or_default().to_owned());
    let behavior = state.behavior.lock().unwrap().clone();
    answer(behavior).await
}

fn answer(
    behavior: Behavior,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
    Box::pin(async move {
        let json = |status: u16, body: String, cookies: &[String]| {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            for c in cookies {
                b = b.header("set-cookie", c);
            }
            b.body(Body::from(body)).unwrap()
        };
        match behavior {
            Behavior::Valid {
                user_id,
                expires_in,
                set_cookies,
            } => {
                let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(expires_in);
                let expires = expires
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let body = serde_json::json!({
                    "session": {"id": "s1", "userId": user_id, "token": TOKEN, "expiresAt": expires,
                                "ipAddress": "", "userAgent": "", "createdAt": expires, "updatedAt": expires},
                    "user": {"id": user_id, "email": format!("{user_id}@example.com"),
                             "name": format!("User {user_id}"), "emailVerified": false, "image": null},
                });
                json(200, body.to_string(), &set_cookies)
            }
            Behavior::Null { set_cookies } => json(200, "null".into(), &set_cookies),
            Behavior::Status(status) => json(status, "null".into(), &[]),
            Behavior::Slow(delay, then) => {
                tokio::time::sleep(delay).await;
                answer(*then).await
            }
            Behavior::Garbage => json(200, format!("<html>{TOKEN}</html>"), &[]),
            Behavior::Huge(n) => json(200, "x".repeat(n), &[]),
            Behavior::Json(body) => json(200, body, &[]),
            Behavior::Answer {
                status,
                body,
                headers,
            } => {
                let mut b = Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                b.body(Body::from(body)).unwrap()
            }
            Behavior::Redirect => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", "http://198.51.100.1/elsewhere")
                .body(Body::empty())
                .unwrap(),
        }
    })
}

/// A valid session whose user has these id, email and name, expiring in an hour.
pub fn valid_user(id: &str, email: &str, name: &str) -> Behavior {
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = serde_json::json!({
        "session": {"id": "s1", "userId": id, "token": TOKEN, "expiresAt": expires},
        "user": {"id": id, "email": email, "name": name},
    });
    Behavior::Json(body.to_string())
}

pub fn valid(user_id: &str) -> Behavior {
    Behavior::Valid {
        user_id: user_id.into(),
        expires_in: 3600,
        set_cookies: vec![],
    }
}

/// The real service, in-process on port 0.
pub struct Service {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// For `/auth` and `/metrics`: one connection pool, made on first use.
    client: OnceLock<reqwest::Client>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), better_authz::Error>>>,
}

pub fn base_args(better_auth_url: &str) -> Args {
    Args {
        better_auth_url: Some(better_auth_url.into()),
        grpc_addr: Some("127.0.0.1:0".into()),
        http_addr: Some("127.0.0.1:0".into()),
        admin_addr: Some("127.0.0.1:0".into()),
        public_paths: Some("/api/auth/".into()),
        user_path_pattern: Some("/api/{user_id}/".into()),
        upstream_timeout_ms: Some("300".into()),
        ..Default::default()
    }
}

/// [`base_args`] for this stand-in with a 2 s deadline (room for stand-ins slow on purpose, on a
/// busy machine), then `change`.
pub fn args_for(stand_in: &StandIn, change: impl FnOnce(&mut Args)) -> Args {
    let mut a = base_args(&stand_in.url());
    a.upstream_timeout_ms = Some("2000".into());
    change(&mut a);
    a
}

/// A plausible session cookie of its own for each `i` (so that no two are coalesced or cached
/// together).
pub fn cookie_for(i: usize) -> String {
    format!("better-auth.session_token=user{i}token.c2ln{i}")
}

impl Service {
    pub async fn start(args: Args) -> Service {
        let config = Config::from_args(&args).expect("valid test config");
        let listeners = Listeners::bind(&config).await.expect("bind port 0");
        let addrs = listeners.addrs().unwrap();
        let off: SocketAddr = ([127, 0, 0, 1], 1).into();
        let (grpc, http, admin) = (
            addrs.grpc.unwrap_or(off),
            addrs.http.unwrap_or(off),
            addrs.admin,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listeners, async {
            let _ = stopped.await;
        }));
        Service {
            grpc,
            http,
            admin,
            client: OnceLock::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signal shutdown and wait for `run` to return.
    pub async fn stop(&mut self) -> Result<(), better_authz::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("run task"),
            None => Ok(()),
        }
    }

    pub async fn grpc_client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::new(self.grpc_channel().await)
    }

    /// A connected channel to the gRPC listener, for any service on it.
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("gRPC URI")
            .connect()
            .await
            .expect("connect gRPC")
    }

    /// One Envoy-style check over a fresh gRPC connection, flattened for assertions.
    pub async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(envoy_check(method, path, headers)).await
    }

    /// This `CheckRequest` over a fresh gRPC connection, flattened for assertions.
    pub async fn send(&self, check: CheckRequest) -> Answer {
        send_to(self.grpc, check).await
    }

    /// `GET /auth` as nginx's `auth_request` asks it, with these request headers.
    pub async fn auth(&self, headers: &[(&str, &str)]) -> HttpAnswer {
        self.auth_with(reqwest::Method::GET, headers).await
    }

    /// `/auth` with this method and these request headers.
    pub async fn auth_with(&self, method: reqwest::Method, headers: &[(&str, &str)]) -> HttpAnswer {
        auth_request(self.client(), method, &self.http_url(), headers).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("the admin listener answers")
            .text()
            .await
            .unwrap()
    }

    /// The value of one series (name and labels, as exported) in `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/auth", self.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            better_authz::better_auth::install_crypto_provider();
            // An answer of `/auth` is for the proxy to relay: a sign-in redirect is not followed.
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
        })
    }
}

/// This `CheckRequest` over a fresh gRPC connection to `grpc`, flattened for assertions.
pub async fn send_to(grpc: SocketAddr, check: CheckRequest) -> Answer {
    let resp = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect gRPC")
        .check(check)
        .await
        .expect("a decision is an OK gRPC response");
    flatten(resp.into_inner())
}

/// The value of one series (name and labels, as exported) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// What `/auth` answered, for assertions.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl HttpAnswer {
    /// The (first) value of this response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every value of this response header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// The body as JSON; `Null` when empty (an allow). A body that is there must be JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("deny body {:?} is not JSON: {e}", self.body))
    }

    /// The deny body's `error_code`; `""` on an allow.
    pub fn error_code(&self) -> String {
        self.json()["error_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `/auth` at `url` through `client`, with these request headers (in order, repeats kept).
pub async fn auth_request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut req = client.request(method, url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("the /auth listener answers");
    HttpAnswer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// A `CheckRequest` whose headers come in `header_map` only, as raw bytes, one entry per header
/// line (Envoy with `encode_raw_headers: true`).
pub fn envoy_raw_check(method: &str, path: &str, headers: &[(&str, &[u8])]) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let mut check = envoy_check(method, path, &[]);
    let attributes = check.attributes.as_mut().expect("attributes");
    let http = attributes
        .request
        .as_mut()
        .expect("request")
        .http
        .as_mut()
        .expect("http");
    let headers = headers.iter().map(|(key, value)| HeaderValue {
        key: (*key).into(),
        raw_value: value.to_vec(),
        ..Default::default()
    });
    http.header_map = Some(HeaderMap {
        headers: headers.collect(),
    });
    check
}

/// A `CheckRequest` as Envoy builds it.
pub fn envoy_check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut map = std::collections::HashMap::new();
    for (k, v) in headers {
        // Envoy joins repeated headers with ','.
        map.entry(k.to_ascii_lowercase())
            .and_modify(|e: &mut String| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "203.0.113.9".into(),
                        port_specifier: Some(PortSpecifier::PortValue(51234)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "app.example".into(),
                    scheme: "http".into(),
                    headers: map,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a `CheckResponse` says, flattened for assertions.
#[derive(Debug, Default)]
pub struct Answer {
    pub grpc_code: i32,
    pub http_status: i32,
    pub body: serde_json::Value,
    /// (name, value, append)
    pub set: Vec<(String, String, Option<bool>)>,
    pub removed: Vec<String>,
    pub cookies: Vec<String>,
    /// Other headers for the client on an allow (`response_headers_to_add` but `set-cookie`).
    pub client: Vec<(String, String)>,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error_code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.as_str())
    }
}

#[allow(deprecated)]
pub fn flatten(resp: CheckResponse) -> Answer {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    let mut a = Answer {
        grpc_code: resp.status.map(|s| s.code).unwrap_or(-1),
        ..Default::default()
    };
    match resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            a.http_status = 200;
            for h in ok.headers {
                let hv = h.header.unwrap();
                a.set.push((hv.key, hv.value, h.append.map(|b| b.value)));
            }
            a.removed = ok.headers_to_remove;
            for h in ok.response_headers_to_add {
                let hv = h.header.unwrap();
                if hv.key == "set-cookie" {
                    assert_eq!(h.append.map(|b| b.value), Some(true), "cookies must append");
                    a.cookies.push(hv.value);
                } else {
                    a.client.push((hv.key, hv.value));
                }
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            a.http_status = denied.status.map(|s| s.code).unwrap_or(0);
            for h in denied.headers {
                let hv = h.header.unwrap();
                if hv.key == "set-cookie" {
                    assert_eq!(h.append.map(|b| b.value), Some(true), "cookies must append");
                    a.cookies.push(hv.value);
                } else {
                    a.set.push((hv.key, hv.value, h.append.map(|b| b.value)));
                }
            }
            a.body = serde_json::from_str(&denied.body).expect("deny body is JSON");
        }
        Some(other) => panic!("unexpected response kind {other:?}"),
        None => {}
    }
    a
}

/// A policy file in a directory of its own, removed on drop.
pub struct PolicyFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl PolicyFile {
    pub fn new(yaml: &str) -> PolicyFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "better-authz-policy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = PolicyFile {
            path: dir.join("policy.yaml"),
            dir,
        };
        file.write(yaml);
        file
    }

    /// Replace the text at once, as a ConfigMap update does (write beside, rename).
    pub fn write(&self, yaml: &str) {
        let tmp = self.dir.join(".policy.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until `/readyz` answers 200 (the first Better Auth probe runs at start-up).
pub async fn wait_ready(service: &Service) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(service.admin_url("/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("service never became ready");
}
