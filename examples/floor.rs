//! The floor under better-authz's CPU per check (issue 14): the least an Envoy ext_authz server
//! built on the same libraries does per check, to run in better-authz's place in the benchmark's
//! Envoy rows. Not a product: no policy, no path rules, no deadlines worth the name, no metrics.
//!
//! Per `Check`: the `cookie` header as Envoy sends it (in `headers`, or raw in `header_map`);
//! with `AUTHZ_CACHE_TTL_MS` set, a user id already seen for that exact cookie header (a plain
//! `HashMap`, never expired); otherwise
//! `GET $BETTER_AUTH_URL/api/auth/get-session` with the cookie (hyper's pooled client, HTTP/1.1,
//! as better-authz), `user.id` read from the answer. Found: OK with `x-user-id`; else 401.
//!
//! The same runtime (tokio multi-thread), allocator (mimalloc), gRPC service (better-authz's own
//! `AuthorizationService` and slim `CheckRequest`, on tonic, with tonic-health) and HTTP client
//! (hyper-util, HTTP/1.1) as better-authz, with the environment variables the benchmark gives it:
//!
//!     BETTER_AUTHZ_BIN=target/release/examples/floor BENCH_ROWS=direct,envoy python3 bench/bench.py
//!
//! (bench.py's rows 2e and 2f run it beside better-authz).
//! `/readyz` and an empty `/metrics` on `AUTHZ_ADMIN_ADDR` are all the benchmark asks of the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_authz::grpc::wire::{self, Entry};
use better_authz::grpc::{Answer, AuthorizationService, Checker};
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Floor(Arc<Inner>);

struct Inner {
    client: Client<HttpConnector, Empty<Bytes>>,
    session: http::Uri,
    timeout: Duration,
    memo: Option<Mutex<HashMap<String, String>>>,
}

#[derive(Deserialize)]
struct Session {
    user: User,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

impl Inner {
    async fn user_of_request(&self, check: &wire::CheckRequest) -> Option<String> {
        let http = check.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
        // `headers`, or raw `header_map` with `encode_raw_headers: true` (the shipped Envoy's).
        let cookie = match Entry::last(&http.headers, "cookie") {
            Some(cookie) => cookie,
            None => {
                let raw = &http.header_map.as_ref()?.headers;
                let cookie = raw.iter().find(|h| h.key == "cookie")?;
                std::str::from_utf8(&cookie.raw_value).ok()?
            }
        };
        self.user_of(cookie).await
    }

    async fn user_of(&self, cookie: &str) -> Option<String> {
        if let Some(id) = self
            .memo
            .as_ref()
            .and_then(|m| m.lock().ok()?.get(cookie).cloned())
        {
            return Some(id);
        }
        let request = http::Request::get(self.session.clone())
            .header(http::header::COOKIE, cookie)
            .body(Empty::new())
            .ok()?;
        let call = async {
            let response = self.client.request(request).await.ok()?;
            if response.status() != http::StatusCode::OK {
                return None;
            }
            let body = response.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice::<Option<Session>>(&body).ok()?
        };
        let id = tokio::time::timeout(self.timeout, call)
            .await
            .ok()??
            .user
            .id;
        if let Some(memo) = &self.memo {
            memo.lock().ok()?.insert(cookie.to_owned(), id.clone());
        }
        Some(id)
    }
}

impl Checker for Floor {
    fn check(&self, check: wire::CheckRequest) -> Answer {
        let floor = self.0.clone();
        Box::pin(async move { answer(floor.user_of_request(&check).await) })
    }
}

fn answer(user: Option<String>) -> CheckResponse {
    let (code, http_response) = match user {
        Some(id) => (
            0,
            HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "x-user-id".into(),
                        value: id,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        ),
        None => (
            16,
            HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                ..Default::default()
            }),
        ),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code,
            ..Default::default()
        }),
        http_response: Some(http_response),
        ..Default::default()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc: std::net::SocketAddr = var("AUTHZ_GRPC_ADDR").ok_or("AUTHZ_GRPC_ADDR")?.parse()?;
    let admin = var("AUTHZ_ADMIN_ADDR").ok_or("AUTHZ_ADMIN_ADDR")?;
    let base = var("BETTER_AUTH_URL").ok_or("BETTER_AUTH_URL")?;
    let timeout_ms: u64 = var("AUTHZ_UPSTREAM_TIMEOUT_MS").map_or(Ok(150), |v| v.parse())?;
    let memo = var("AUTHZ_CACHE_TTL_MS").is_some_and(|v| v != "0");

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let floor = Floor(Arc::new(Inner {
        client: Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .build(connector),
        session: format!("{}/api/auth/get-session", base.trim_end_matches('/')).parse()?,
        timeout: Duration::from_millis(timeout_ms),
        memo: memo.then(|| Mutex::new(HashMap::new())),
    }));

    let admin_app = axum::Router::new()
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .route("/metrics", axum::routing::get(|| async { "" }));
    let admin = tokio::net::TcpListener::bind(admin).await?;
    tokio::spawn(async move { axum::serve(admin, admin_app).await });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthorizationService<Floor>>().await;
    eprintln!("floor: gRPC on {grpc}, memoized: {memo}");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationService(floor))
        // SIGINT (bench/alone.sh stops it so); a background job would otherwise ignore it.
        .serve_with_shutdown(grpc, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
