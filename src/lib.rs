//! better-authz: Envoy ext_authz (gRPC) and nginx `auth_request` (HTTP) in front of Better Auth.
//!
//! # Layout
//! - [`config`]: flags and environment, validated in one pass into a typed [`Config`].
//! - [`reason`]: the one table from a decision reason to HTTP status, gRPC code, code and
//!   message.
//! - [`decision`]: the pure core: request + session lookup outcome → [`decision::Decision`].
//!   Uses [`cookies`] (which cookies are Better Auth's), [`credentials`] (which credential a
//!   request carries), [`headers`] (the JWT, mapped fields and stripped credentials for the back
//!   end) and [`path`] (normalisation, public prefixes, the user-id pattern).
//! - [`better_auth`]: the only code that talks to Better Auth; returns typed outcomes.
//! - [`lookups`]: the fast path in front of it: coalescing, the opt-in cache, load shedding.
//! - [`authorizer`]: plan → lookup → decide, plus metrics and the decision log line.
//! - [`grpc`] and [`http`]: thin adapters from Envoy's `CheckRequest` and from nginx's
//!   subrequest to the core and back.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`; [`metrics`]: the Prometheus registry.
//! - [`telemetry`]: logs and OpenTelemetry traces.
//! - [`tls`]: optional TLS/mTLS on the gRPC and HTTP listeners, reloaded when files change.
//! - [`names`]: enum variants named in configuration.
//!
//! [`run`] serves the listeners until the shutdown future completes; listeners are bound
//! by the caller so tests can bind port 0.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authorizer;
pub mod better_auth;
pub mod config;
pub mod cookies;
pub mod credentials;
pub mod decision;
pub mod grpc;
pub mod headers;
pub mod http;
pub mod lookups;
pub mod metrics;
pub mod names;
pub mod path;
pub mod reason;
pub mod reload;
pub mod routes;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::admin::Readiness;
use crate::authorizer::Authorizer;
use crate::better_auth::BetterAuthClient;
pub use crate::config::Config;
use crate::metrics::Metrics;

/// The listeners, bound before [`run`] so that callers choose ports (tests use port 0). The
/// gRPC or the HTTP one is `None` when configured `off`.
pub struct Listeners {
    pub grpc: Option<TcpListener>,
    pub http: Option<TcpListener>,
    pub admin: TcpListener,
}

/// Where the listeners listen.
#[derive(Copy, Clone, Debug)]
pub struct BoundAddrs {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
}

// === impl Listeners ===

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        }
        let grpc = match config.listeners.grpc {
            Some(addr) => Some(bind(addr, "gRPC").await?),
            None => None,
        };
        let http = match config.listeners.http {
            Some(addr) => Some(bind(addr, "HTTP").await?),
            None => None,
        };
        Ok(Listeners {
            grpc,
            http,
            admin: bind(config.listeners.admin, "admin").await?,
        })
    }

    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        Ok(BoundAddrs {
            grpc: self
                .grpc
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
            http: self
                .http
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
            admin: self.admin.local_addr()?,
        })
    }
}

#[derive(Debug)]
pub enum Error {
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    Setup(String),
    Serve(&'static str, String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Bind { what, addr, source } => {
                write!(f, "cannot listen for {what} on {addr}: {source}")
            }
            Error::Setup(why) => write!(f, "set-up failed: {why}"),
            Error::Serve(what, why) => write!(f, "{what} listener failed: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Serve the gRPC, HTTP and admin listeners until `shutdown` completes, then stop accepting,
/// let in-flight checks finish (bounded by `config.shutdown.timeout`) and return.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let metrics = Metrics::new().map_err(|e| Error::Setup(e.to_string()))?;
    let client = BetterAuthClient::new(config.better_auth.clone(), &config.upstream)
        .map_err(Error::Setup)?;
    let readiness = Arc::new(Readiness::default());
    let lookups = lookups::Lookups::new(client.clone(), metrics.clone(), &config.lookups);
    metrics.set_policy_routes(config.policy.routes.routes().len());
    let authorizer = Authorizer::new(config.policy.clone(), lookups, metrics.clone());

    // One token tree: cancelling `stop_checks` stops the check listeners and the probe first;
    // `stop_all` then stops the admin listener and the TLS watcher.
    let stop_all = CancellationToken::new();
    let stop_checks = stop_all.child_token();

    let probe = tokio::spawn(readiness.clone().follow(client, stop_checks.clone()));
    if let Some(path) = &config.policy_file {
        tokio::spawn(reload::watch(
            path.clone(),
            authorizer.clone(),
            metrics.clone(),
            stop_all.clone(),
        ));
    }

    let tls = config.tls.clone().map(tls::TlsReloader::new);
    if let Some(reloader) = &tls {
        tokio::spawn(reloader.clone().watch(stop_all.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<grpc::AuthorizationService<grpc::ExtAuthz>>()
        .await;

    let mut servers = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.grpc {
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(grpc::AuthorizationService(grpc::ExtAuthz::new(
                authorizer.clone(),
            )));
        servers.spawn(serve_grpc(
            router,
            listener,
            tls.clone(),
            stop_checks.clone(),
        ));
    }
    if let Some(listener) = listeners.http {
        let adapter = http::HttpAdapter {
            authorizer,
            forward_auth: config.listeners.forward_auth,
            route_header: config.listeners.route_header.clone(),
        };
        servers.spawn(serve_http(adapter, listener, tls, stop_checks.clone()));
    }

    let admin_app = admin::router(readiness.clone(), metrics);
    let admin_stop = stop_all.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(listeners.admin, admin_app)
            .with_graceful_shutdown(admin_stop.cancelled_owned())
            .await
            .map_err(|e| Error::Serve("admin", e.to_string()))
    });

    // Serve until asked to stop, or until a listener dies (then stop the rest).
    let early = tokio::select! {
        () = shutdown => None,
        Some(r) = servers.join_next() => Some(flatten(r)),
    };

    readiness.start_shutdown();
    health
        .set_not_serving::<grpc::AuthorizationService<grpc::ExtAuthz>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if early.is_none() && !config.shutdown.delay.is_zero() {
        // Keep answering while health checks see NOT_SERVING, so proxies stop sending first.
        tracing::info!(
            delay_ms = config.shutdown.delay.as_millis() as u64,
            "shutting down: reporting not ready, still serving"
        );
        tokio::time::sleep(config.shutdown.delay).await;
    }
    tracing::info!("shutting down: draining in-flight checks");
    stop_checks.cancel();
    let drain = async {
        let mut result = Ok(());
        while let Some(r) = servers.join_next().await {
            result = result.and(flatten(r));
        }
        result
    };
    let drained = tokio::time::timeout(config.shutdown.timeout, drain).await;
    stop_all.cancel();
    let _ = admin_task.await;
    let _ = probe.await;

    if let Some(Err(e)) = early {
        return Err(e);
    }
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                timeout_ms = config.shutdown.timeout.as_millis() as u64,
                "in-flight checks did not finish before the shutdown timeout"
            );
            Ok(())
        }
    }
}

/// The ext_authz gRPC listener, plain or TLS, until `stop`.
async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<tls::TlsReloader>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let result = match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
        Some(tls) => {
            let receiver = tls::incoming(listener, tls, stop.clone());
            let incoming = tokio_stream::wrappers::ReceiverStream::new(receiver)
                .map(|(stream, _peer)| Ok::<_, std::io::Error>(stream));
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
    };
    result.map_err(|e| Error::Serve("gRPC", e.to_string()))
}

/// The `/auth` HTTP listener, plain or TLS, until `stop`.
async fn serve_http(
    adapter: http::HttpAdapter,
    listener: TcpListener,
    tls: Option<Arc<tls::TlsReloader>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    use axum::serve::ListenerExt;
    let app = http::router(adapter).into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None => {
            // Answers go out in one write and must not wait for Nagle.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        Some(tls) => {
            let local_addr = listener
                .local_addr()
                .map_err(|e| Error::Serve("HTTP", e.to_string()))?;
            let listener = tls::TlsListener {
                receiver: tls::incoming(listener, tls, stop.clone()),
                local_addr,
            }
            // No-op tap: `tls::incoming` sets TCP_NODELAY; the tap gives axum's SocketAddr
            // connect info, as for the plain listener.
            .tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    };
    result.map_err(|e| Error::Serve("HTTP", e.to_string()))
}

fn flatten(r: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    r.map_err(|e| Error::Serve("task", e.to_string()))?
}
