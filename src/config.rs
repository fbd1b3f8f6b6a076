//! Configuration: flags with environment fallbacks, validated in one pass.
//!
//! Every variable has a named constant for its name and its default, next to the reason for
//! the default. Flags are read as text and checked here rather than by clap's typed parsers, so
//! that one run reports **every** bad variable at once instead of the first one clap trips on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::decision::{IdentityHeaders, Policy};
use crate::http::ForwardAuth;
use crate::path::{PathPrefix, UserPathPattern};
use crate::tls::{TlsError, TlsFiles};

pub const ENV_BETTER_AUTH_URL: &str = "BETTER_AUTH_URL";
pub const ENV_SESSION_PATH: &str = "BETTER_AUTH_SESSION_PATH";
pub const ENV_GRPC_ADDR: &str = "AUTHZ_GRPC_ADDR";
pub const ENV_HTTP_ADDR: &str = "AUTHZ_HTTP_ADDR";
pub const ENV_ADMIN_ADDR: &str = "AUTHZ_ADMIN_ADDR";
pub const ENV_COOKIE_PREFIX: &str = "AUTHZ_COOKIE_PREFIX";
pub const ENV_USER_PATH_PATTERN: &str = "AUTHZ_USER_PATH_PATTERN";
pub const ENV_PUBLIC_PATHS: &str = "AUTHZ_PUBLIC_PATHS";
pub const ENV_ALLOW_PREFLIGHT: &str = "AUTHZ_ALLOW_PREFLIGHT";
pub const ENV_UPSTREAM_TIMEOUT_MS: &str = "AUTHZ_UPSTREAM_TIMEOUT_MS";
pub const ENV_UPSTREAM_POOL_MAX_IDLE: &str = "AUTHZ_UPSTREAM_POOL_MAX_IDLE";
pub const ENV_MAX_INFLIGHT: &str = "AUTHZ_MAX_INFLIGHT";
pub const ENV_CACHE_TTL_MS: &str = "AUTHZ_CACHE_TTL_MS";
pub const ENV_CACHE_MAX_ENTRIES: &str = "AUTHZ_CACHE_MAX_ENTRIES";
pub const ENV_CACHE_MAX_BYTES: &str = "AUTHZ_CACHE_MAX_BYTES";
pub const ENV_FORWARD_AUTH: &str = "AUTHZ_FORWARD_AUTH";
pub const ENV_HEADER_USER_ID: &str = "AUTHZ_HEADER_USER_ID";
pub const ENV_HEADER_USER_EMAIL: &str = "AUTHZ_HEADER_USER_EMAIL";
pub const ENV_HEADER_USER_NAME: &str = "AUTHZ_HEADER_USER_NAME";
pub const ENV_LOG_FORMAT: &str = "AUTHZ_LOG_FORMAT";
pub const ENV_SHUTDOWN_TIMEOUT_MS: &str = "AUTHZ_SHUTDOWN_TIMEOUT_MS";
pub const ENV_SHUTDOWN_DELAY_MS: &str = "AUTHZ_SHUTDOWN_DELAY_MS";
pub const ENV_TLS_CERT: &str = "AUTHZ_TLS_CERT";
pub const ENV_TLS_KEY: &str = "AUTHZ_TLS_KEY";
pub const ENV_TLS_CLIENT_CA: &str = "AUTHZ_TLS_CLIENT_CA";
pub const ENV_BETTER_AUTH_CA_FILE: &str = "BETTER_AUTH_CA_FILE";
// The standard OpenTelemetry variables (read by us, so that bad values stop start-up too).
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const ENV_OTEL_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
pub const ENV_OTEL_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// Better Auth's default endpoint; `/api/auth/session` does not exist.
pub const DEFAULT_SESSION_PATH: &str = "/api/auth/get-session";
/// Envoy examples put ext_authz on 9001; we follow so configs read familiar.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:9001";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9002";
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9090";
/// Better Auth's `advanced.cookiePrefix` default.
pub const DEFAULT_COOKIE_PREFIX: &str = "better-auth";
/// Envoy's ext_authz check times out at 200 ms by default. Our Better Auth deadline must end
/// first, so that the client gets our 503 `AUTH_UNAVAILABLE` with a body rather than Envoy's
/// bare `status_on_error`.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 150;
/// Idle kept-alive connections to Better Auth. Enough for 2 cores' worth of concurrency; idle
/// ones close after 60 s.
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: usize = 64;
/// Better Auth calls in flight before new checks are shed with 503. Far above what one Better
/// Auth instance serves within the deadline (about 1–3 k/s × 150 ms), so it only bites when
/// Better Auth stalls, which is when queueing would hurt most.
pub const DEFAULT_MAX_INFLIGHT: usize = 512;
/// No cache by default: every check sees revocations at once (prior art: better-auth#6966).
pub const DEFAULT_CACHE_TTL_MS: u64 = 0;
/// 10 k sessions: most instances serve far fewer active sessions within one TTL.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;
/// 16 MiB: the cache's memory bound whatever Better Auth's names and emails weigh; with the
/// default entry count, about 1.6 KiB an entry.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Listener address meaning "do not listen": for installs that use one proxy only.
pub const LISTENER_OFF: &str = "off";
pub const DEFAULT_HEADER_USER_ID: &str = "x-user-id";
pub const DEFAULT_HEADER_USER_EMAIL: &str = "x-user-email";
pub const DEFAULT_HEADER_USER_NAME: &str = "x-user-name";
/// Kubernetes gives a pod 30 s by default; draining checks (each bounded by the upstream
/// timeout) takes far less, 10 s leaves room for the preStop wait.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// No delay by default: in Kubernetes the pod's preStop wait does this job before SIGTERM.
pub const DEFAULT_SHUTDOWN_DELAY_MS: u64 = 0;

/// The OpenTelemetry specification's default protocol.
pub const DEFAULT_OTLP_PROTOCOL: &str = "http/protobuf";
pub const DEFAULT_OTEL_SERVICE_NAME: &str = "better-authz";
/// The specification's default: follow the proxy's sampling decision, sample new traces.
pub const DEFAULT_OTEL_SAMPLER: &str = "parentbased_always_on";

/// Upper bound on the Better Auth deadline: a check that waits longer helps nobody.
const MAX_UPSTREAM_TIMEOUT_MS: u64 = 60_000;

/// better-authz: Envoy ext_authz (gRPC) and nginx auth_request (HTTP) in front of Better Auth
/// sessions.
///
/// Every option is also read from the environment variable shown. Invalid values stop
/// start-up with exit code 2 and one message per bad variable.
#[derive(Parser, Debug, Default, Clone)]
#[command(version, about, long_about = None, max_term_width = 100)]
pub struct Args {
    /// Better Auth base URL, e.g. http://127.0.0.1:3000 (required)
    #[arg(long, env = ENV_BETTER_AUTH_URL)]
    pub better_auth_url: Option<String>,

    /// Better Auth session endpoint path [default: /api/auth/get-session]
    #[arg(long, env = ENV_SESSION_PATH)]
    pub better_auth_session_path: Option<String>,

    /// Envoy ext_authz gRPC listener (also grpc.health.v1), or `off` [default: 0.0.0.0:9001]
    #[arg(long, env = ENV_GRPC_ADDR)]
    pub grpc_addr: Option<String>,

    /// HTTP listener for nginx auth_request / ingress-nginx auth-url / Traefik ForwardAuth,
    /// path /auth, or `off`. Reachable by the proxy only: it trusts the proxy's headers
    /// [default: 0.0.0.0:9002]
    #[arg(long, env = ENV_HTTP_ADDR)]
    pub http_addr: Option<String>,

    /// Admin listener: /healthz, /readyz, /metrics [default: 0.0.0.0:9090]
    #[arg(long, env = ENV_ADMIN_ADDR)]
    pub admin_addr: Option<String>,

    /// Better Auth cookie prefix; the __Secure- variant is always accepted [default: better-auth]
    #[arg(long, env = ENV_COOKIE_PREFIX)]
    pub cookie_prefix: Option<String>,

    /// Path pattern with one {user_id} segment, e.g. /api/{user_id}/. Where a path matches,
    /// the decoded segment must equal the session's user id, else 403 [default: unset]
    #[arg(long, env = ENV_USER_PATH_PATTERN)]
    pub user_path_pattern: Option<String>,

    /// Comma-separated path prefixes allowed without a session, matched by whole segments,
    /// e.g. /api/auth/ [default: unset]
    #[arg(long, env = ENV_PUBLIC_PATHS)]
    pub public_paths: Option<String>,

    /// Let real CORS preflights (OPTIONS + Origin + Access-Control-Request-Method) through
    /// without a session: true or false [default: true]
    #[arg(long, env = ENV_ALLOW_PREFLIGHT)]
    pub allow_preflight: Option<String>,

    /// Deadline in milliseconds for one Better Auth call; keep it below the proxy's check
    /// timeout (Envoy: 200 ms by default) [default: 150]
    #[arg(long, env = ENV_UPSTREAM_TIMEOUT_MS)]
    pub upstream_timeout_ms: Option<String>,

    /// Idle kept-alive connections kept open to Better Auth [default: 64]
    #[arg(long, env = ENV_UPSTREAM_POOL_MAX_IDLE)]
    pub upstream_pool_max_idle: Option<String>,

    /// Better Auth calls in flight at most; beyond that checks are answered 503 at once
    /// [default: 512]
    #[arg(long, env = ENV_MAX_INFLIGHT)]
    pub max_inflight: Option<String>,

    /// Cache valid sessions this many milliseconds (capped by the session's expiresAt); 0 = no
    /// cache. A revoked session stays accepted up to this long [default: 0]
    #[arg(long, env = ENV_CACHE_TTL_MS)]
    pub cache_ttl_ms: Option<String>,

    /// Most sessions kept in the cache [default: 10000]
    #[arg(long, env = ENV_CACHE_MAX_ENTRIES)]
    pub cache_max_entries: Option<String>,

    /// Most bytes the cache's entries may hold (names and emails included) [default: 16777216]
    #[arg(long, env = ENV_CACHE_MAX_BYTES)]
    pub cache_max_bytes: Option<String>,

    /// Which proxy calls /auth, so which one header names the original URI, method and host:
    /// nginx (X-Original-URI, X-Original-Method, Host), ingress-nginx (X-Original-URL,
    /// X-Original-Method), traefik (X-Forwarded-Uri, -Method, -Host), or auto (any of them;
    /// ones that disagree are a 400) [default: auto]
    #[arg(long, env = ENV_FORWARD_AUTH)]
    pub forward_auth: Option<String>,

    /// Header carrying the user id to the upstream [default: x-user-id]
    #[arg(long, env = ENV_HEADER_USER_ID)]
    pub header_user_id: Option<String>,

    /// Header carrying the user email to the upstream [default: x-user-email]
    #[arg(long, env = ENV_HEADER_USER_EMAIL)]
    pub header_user_email: Option<String>,

    /// Header carrying the user name to the upstream [default: x-user-name]
    #[arg(long, env = ENV_HEADER_USER_NAME)]
    pub header_user_name: Option<String>,

    /// Log format: text or json; the level comes from RUST_LOG [default: text]
    #[arg(long, env = ENV_LOG_FORMAT)]
    pub log_format: Option<String>,

    /// On SIGTERM/SIGINT, how long in-flight checks may take to finish, in milliseconds
    /// [default: 10000]
    #[arg(long, env = ENV_SHUTDOWN_TIMEOUT_MS)]
    pub shutdown_timeout_ms: Option<String>,

    /// On SIGTERM/SIGINT, keep serving this many milliseconds while reporting not ready
    /// (/readyz 503, gRPC health NOT_SERVING) so health-checking proxies move away first; set it
    /// above the proxy's health-check interval + jitter + timeout when no preStop wait does this
    /// [default: 0]
    #[arg(long, env = ENV_SHUTDOWN_DELAY_MS)]
    pub shutdown_delay_ms: Option<String>,

    /// PEM certificate chain: serve TLS on the gRPC and HTTP listeners (the admin listener stays
    /// plain HTTP for probes). Reloaded when the file changes [default: unset, plaintext]
    #[arg(long, env = ENV_TLS_CERT)]
    pub tls_cert: Option<String>,

    /// PEM private key for AUTHZ_TLS_CERT [default: unset]
    #[arg(long, env = ENV_TLS_KEY)]
    pub tls_key: Option<String>,

    /// PEM CA bundle: require client certificates signed by it (mTLS from the proxy)
    /// [default: unset]
    #[arg(long, env = ENV_TLS_CLIENT_CA)]
    pub tls_client_ca: Option<String>,

    /// PEM CA bundle trusted for https:// Better Auth URLs, added to the system roots
    /// [default: unset]
    #[arg(long, env = ENV_BETTER_AUTH_CA_FILE)]
    pub better_auth_ca_file: Option<String>,

    /// OTLP collector base URL, e.g. http://otel-collector:4317 (gRPC) or :4318 (HTTP); unset:
    /// no trace export at all [default: unset]
    #[arg(long, env = ENV_OTLP_ENDPOINT)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf [default: http/protobuf]
    #[arg(long, env = ENV_OTLP_PROTOCOL)]
    pub otel_exporter_otlp_protocol: Option<String>,

    /// service.name of exported spans [default: better-authz]
    #[arg(long, env = ENV_OTEL_SERVICE_NAME)]
    pub otel_service_name: Option<String>,

    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio [default: parentbased_always_on]
    #[arg(long, env = ENV_OTEL_SAMPLER)]
    pub otel_traces_sampler: Option<String>,

    /// Sampling ratio 0..=1 for the *traceidratio samplers [default: 1.0]
    #[arg(long, env = ENV_OTEL_SAMPLER_ARG)]
    pub otel_traces_sampler_arg: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Otlp {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

/// Trace export; `otlp: None` means no exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    pub otlp: Option<Otlp>,
    pub service_name: String,
    pub sampler: SamplerConfig,
}

/// The validated configuration, passed explicitly to whatever needs it.
#[derive(Clone, Debug)]
pub struct Config {
    pub session_url: url::Url,
    pub ok_url: url::Url,
    /// `None`: `off`, no gRPC listener.
    pub grpc_addr: Option<SocketAddr>,
    /// `None`: `off`, no HTTP listener.
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub forward_auth: ForwardAuth,
    pub policy: Policy,
    pub upstream_timeout: Duration,
    pub upstream_pool_max_idle: usize,
    pub max_inflight: usize,
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub cache_max_bytes: u64,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    /// TLS on the gRPC and HTTP listeners; `None` is plaintext.
    pub tls: Option<TlsFiles>,
    /// PEM bundle added to the roots trusted for Better Auth.
    pub better_auth_ca: Option<PathBuf>,
    pub telemetry: TelemetryConfig,
}

/// One bad variable and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Collects problems while every variable is checked.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, variable: &'static str, problem: impl Into<String>) {
        self.0.push(ConfigError {
            variable,
            problem: problem.into(),
        });
    }

    /// `Some(value)` when `check` accepts it, else record the problem and return `None`.
    fn check<T>(&mut self, variable: &'static str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(problem) => {
                self.add(variable, problem);
                None
            }
        }
    }
}

// === impl Config ===

impl Config {
    /// Validate every variable; on failure, every problem found.
    pub fn from_args(args: &Args) -> Result<Config, Vec<ConfigError>> {
        let mut p = Problems::default();
        let text = |v: &Option<String>, default: &str| -> String {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_owned()
        };

        let base = match args.better_auth_url.as_deref().map(str::trim) {
            None | Some("") => {
                p.add(ENV_BETTER_AUTH_URL, "required, e.g. http://127.0.0.1:3000");
                None
            }
            Some(raw) => p.check(ENV_BETTER_AUTH_URL, parse_base_url(raw)),
        };
        let session_path = text(&args.better_auth_session_path, DEFAULT_SESSION_PATH);
        let session_path = p.check(ENV_SESSION_PATH, parse_endpoint_path(&session_path));
        let urls = match (base, session_path) {
            (Some(base), Some(path)) => p.check(ENV_SESSION_PATH, endpoint_urls(&base, &path)),
            _ => None,
        };

        let grpc_addr = p.check(
            ENV_GRPC_ADDR,
            parse_listener_addr(&text(&args.grpc_addr, DEFAULT_GRPC_ADDR)),
        );
        let http_addr = p.check(
            ENV_HTTP_ADDR,
            parse_listener_addr(&text(&args.http_addr, DEFAULT_HTTP_ADDR)),
        );
        if let (Some(None), Some(None)) = (grpc_addr, http_addr) {
            p.add(
                ENV_HTTP_ADDR,
                format!(
                    "{ENV_GRPC_ADDR} and {ENV_HTTP_ADDR} are both off: nothing would serve checks"
                ),
            );
        }
        let forward_auth = p.check(
            ENV_FORWARD_AUTH,
            ForwardAuth::parse(&text(&args.forward_auth, ForwardAuth::default().name())),
        );
        let admin_addr = p.check(
            ENV_ADMIN_ADDR,
            parse_addr(&text(&args.admin_addr, DEFAULT_ADMIN_ADDR)),
        );
        if let (Some(g), Some(h), Some(a)) = (grpc_addr, http_addr, admin_addr) {
            let clash = |x: Option<SocketAddr>, y: Option<SocketAddr>| match (x, y) {
                (Some(x), Some(y)) => x.port() != 0 && x == y,
                _ => false,
            };
            if let (true, Some(h)) = (clash(g, h), h) {
                p.add(ENV_HTTP_ADDR, format!("{h} is also {ENV_GRPC_ADDR}"));
            }
            if clash(g, Some(a)) || clash(h, Some(a)) {
                p.add(
                    ENV_ADMIN_ADDR,
                    format!("{a} is also used by another listener"),
                );
            }
        }

        let cookie_prefix = p.check(
            ENV_COOKIE_PREFIX,
            parse_cookie_prefix(&text(&args.cookie_prefix, DEFAULT_COOKIE_PREFIX)),
        );
        let user_path = match args.user_path_pattern.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(raw) => p.check(ENV_USER_PATH_PATTERN, UserPathPattern::parse(raw).map(Some)),
        };
        let public_paths = p.check(
            ENV_PUBLIC_PATHS,
            parse_public_paths(args.public_paths.as_deref().unwrap_or("")),
        );
        let allow_preflight = p.check(
            ENV_ALLOW_PREFLIGHT,
            parse_bool(&text(&args.allow_preflight, "true")),
        );
        let upstream_timeout = p.check(
            ENV_UPSTREAM_TIMEOUT_MS,
            parse_millis(
                &text(
                    &args.upstream_timeout_ms,
                    &DEFAULT_UPSTREAM_TIMEOUT_MS.to_string(),
                ),
                1,
                MAX_UPSTREAM_TIMEOUT_MS,
            ),
        );
        let pool_max_idle = p.check(
            ENV_UPSTREAM_POOL_MAX_IDLE,
            parse_count(
                &text(
                    &args.upstream_pool_max_idle,
                    &DEFAULT_UPSTREAM_POOL_MAX_IDLE.to_string(),
                ),
                0,
                100_000,
            ),
        );
        let max_inflight = p.check(
            ENV_MAX_INFLIGHT,
            parse_count(
                &text(&args.max_inflight, &DEFAULT_MAX_INFLIGHT.to_string()),
                1,
                1_000_000,
            ),
        );
        let cache_ttl = p.check(
            ENV_CACHE_TTL_MS,
            parse_millis(
                &text(&args.cache_ttl_ms, &DEFAULT_CACHE_TTL_MS.to_string()),
                0,
                3_600_000,
            ),
        );
        let cache_max_entries = p.check(
            ENV_CACHE_MAX_ENTRIES,
            parse_count(
                &text(
                    &args.cache_max_entries,
                    &DEFAULT_CACHE_MAX_ENTRIES.to_string(),
                ),
                1,
                10_000_000,
            ),
        );
        let cache_max_bytes = p.check(
            ENV_CACHE_MAX_BYTES,
            parse_count(
                &text(&args.cache_max_bytes, &DEFAULT_CACHE_MAX_BYTES.to_string()),
                4096,
                1 << 40,
            )
            .map(|n| n as u64),
        );
        let user_id = p.check(
            ENV_HEADER_USER_ID,
            parse_header_name(&text(&args.header_user_id, DEFAULT_HEADER_USER_ID)),
        );
        let email = p.check(
            ENV_HEADER_USER_EMAIL,
            parse_header_name(&text(&args.header_user_email, DEFAULT_HEADER_USER_EMAIL)),
        );
        let name = p.check(
            ENV_HEADER_USER_NAME,
            parse_header_name(&text(&args.header_user_name, DEFAULT_HEADER_USER_NAME)),
        );
        if let (Some(id), Some(email), Some(name)) = (&user_id, &email, &name) {
            if id == email {
                p.add(
                    ENV_HEADER_USER_EMAIL,
                    format!("{email:?} is also {ENV_HEADER_USER_ID}"),
                );
            }
            if id == name || email == name {
                p.add(
                    ENV_HEADER_USER_NAME,
                    format!("{name:?} is also another identity header"),
                );
            }
        }
        let log_format = p.check(
            ENV_LOG_FORMAT,
            parse_log_format(&text(&args.log_format, "text")),
        );
        let shutdown_timeout = p.check(
            ENV_SHUTDOWN_TIMEOUT_MS,
            parse_millis(
                &text(
                    &args.shutdown_timeout_ms,
                    &DEFAULT_SHUTDOWN_TIMEOUT_MS.to_string(),
                ),
                0,
                3_600_000,
            ),
        );

        let shutdown_delay = p.check(
            ENV_SHUTDOWN_DELAY_MS,
            parse_millis(
                &text(
                    &args.shutdown_delay_ms,
                    &DEFAULT_SHUTDOWN_DELAY_MS.to_string(),
                ),
                0,
                600_000,
            ),
        );
        let telemetry = parse_telemetry(args, &mut p);
        let tls = parse_tls(args, &mut p);
        let better_auth_ca = match args.better_auth_ca_file.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(path) => p.check(
                ENV_BETTER_AUTH_CA_FILE,
                std::fs::read(path)
                    .map_err(|e| format!("{path}: {e}"))
                    .and_then(|pem| {
                        reqwest::Certificate::from_pem_bundle(&pem)
                            .map_err(|e| format!("{path}: not a PEM certificate bundle ({e})"))
                    })
                    .and_then(|certs| {
                        if certs.is_empty() {
                            Err(format!("{path}: no PEM certificate in the file"))
                        } else {
                            Ok(Some(PathBuf::from(path)))
                        }
                    }),
            ),
        };

        let (
            Some((session_url, ok_url)),
            Some(grpc_addr),
            Some(http_addr),
            Some(admin_addr),
            Some(cookie_prefix),
            Some(user_path),
            Some(public_paths),
            Some(allow_preflight),
            Some(upstream_timeout),
            Some(upstream_pool_max_idle),
            Some(max_inflight),
            Some(cache_ttl),
            Some(cache_max_entries),
            Some(cache_max_bytes),
            Some(forward_auth),
            Some(user_id),
            Some(email),
            Some(name),
            Some(log_format),
            Some(shutdown_timeout),
            Some(shutdown_delay),
            Some(tls),
            Some(better_auth_ca),
            Some(telemetry),
        ) = (
            urls,
            grpc_addr,
            http_addr,
            admin_addr,
            cookie_prefix,
            user_path,
            public_paths,
            allow_preflight,
            upstream_timeout,
            pool_max_idle,
            max_inflight,
            cache_ttl,
            cache_max_entries,
            cache_max_bytes,
            forward_auth,
            user_id,
            email,
            name,
            log_format,
            shutdown_timeout,
            shutdown_delay,
            tls,
            better_auth_ca,
            telemetry,
        )
        else {
            // Every `None` above recorded its problem.
            return Err(p.0);
        };
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            session_url,
            ok_url,
            grpc_addr,
            http_addr,
            admin_addr,
            forward_auth,
            policy: Policy {
                cookie_prefix,
                public_paths,
                user_path,
                allow_preflight,
                identity: IdentityHeaders {
                    user_id,
                    email,
                    name,
                },
            },
            upstream_timeout,
            upstream_pool_max_idle,
            max_inflight,
            cache_ttl,
            cache_max_entries,
            cache_max_bytes,
            log_format,
            shutdown_timeout,
            shutdown_delay,
            tls,
            better_auth_ca,
            telemetry,
        })
    }

    /// The effective configuration as one `key=value` line for the start-up log. Nothing in
    /// it is secret: the URL loses any user info it carried.
    pub fn summary(&self) -> String {
        let mut session_url = self.session_url.clone();
        let _ = session_url.set_username("");
        let _ = session_url.set_password(None);
        let p = &self.policy;
        let public: Vec<String> = p.public_paths.iter().map(ToString::to_string).collect();
        let pattern = p.user_path.as_ref().map(ToString::to_string);
        format!(
            "session_url={session_url} grpc_addr={} http_addr={} admin_addr={} forward_auth={} \
             cookie_prefix={} user_path_pattern={} public_paths={} allow_preflight={} \
             upstream_timeout_ms={} upstream_pool_max_idle={} max_inflight={} cache_ttl_ms={} \
             cache_max_entries={} cache_max_bytes={} identity_headers={} log_format={:?} \
             shutdown_timeout_ms={} shutdown_delay_ms={} tls={} better_auth_ca={} otlp={}",
            listener(self.grpc_addr),
            listener(self.http_addr),
            self.admin_addr,
            self.forward_auth.name(),
            p.cookie_prefix,
            pattern.as_deref().unwrap_or("-"),
            if public.is_empty() {
                "-".to_owned()
            } else {
                public.join(",")
            },
            p.allow_preflight,
            self.upstream_timeout.as_millis(),
            self.upstream_pool_max_idle,
            self.max_inflight,
            self.cache_ttl.as_millis(),
            self.cache_max_entries,
            self.cache_max_bytes,
            p.identity.all().collect::<Vec<_>>().join(","),
            self.log_format,
            self.shutdown_timeout.as_millis(),
            self.shutdown_delay.as_millis(),
            match &self.tls {
                None => "off",
                Some(TlsFiles {
                    client_ca: None, ..
                }) => "on",
                Some(TlsFiles {
                    client_ca: Some(_), ..
                }) => "mtls",
            },
            self.better_auth_ca
                .as_ref()
                .map_or("-".to_owned(), |p| p.display().to_string()),
            match &self.telemetry.otlp {
                None => "off".to_owned(),
                Some(otlp) => format!(
                    "{:?}:{}:{}",
                    otlp.protocol,
                    redact_userinfo(&otlp.endpoint),
                    self.telemetry.service_name
                ),
            },
        )
    }
}

/// `Some(None)`: no TLS; `Some(Some(files))`: TLS with files that load; `None`: a problem was
/// recorded.
fn parse_tls(args: &Args, p: &mut Problems) -> Option<Option<TlsFiles>> {
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let (cert, key, client_ca) = (
        set(&args.tls_cert),
        set(&args.tls_key),
        set(&args.tls_client_ca),
    );
    match (cert, key) {
        (None, None) => {
            if client_ca.is_some() {
                p.add(
                    ENV_TLS_CLIENT_CA,
                    format!("needs {ENV_TLS_CERT} and {ENV_TLS_KEY}"),
                );
                return None;
            }
            Some(None)
        }
        (Some(_), None) => {
            p.add(ENV_TLS_KEY, format!("required with {ENV_TLS_CERT}"));
            None
        }
        (None, Some(_)) => {
            p.add(ENV_TLS_CERT, format!("required with {ENV_TLS_KEY}"));
            None
        }
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert,
                key,
                client_ca,
            };
            match files.server_config() {
                Ok(_) => Some(Some(files)),
                Err(TlsError::Cert(why)) => {
                    p.add(ENV_TLS_CERT, why);
                    None
                }
                Err(TlsError::Key(why)) => {
                    p.add(ENV_TLS_KEY, why);
                    None
                }
                Err(TlsError::ClientCa(why)) => {
                    p.add(ENV_TLS_CLIENT_CA, why);
                    None
                }
            }
        }
    }
}

fn parse_telemetry(args: &Args, p: &mut Problems) -> Option<TelemetryConfig> {
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let protocol_text =
        set(&args.otel_exporter_otlp_protocol).unwrap_or(DEFAULT_OTLP_PROTOCOL.into());
    let protocol = p.check(
        ENV_OTLP_PROTOCOL,
        match protocol_text.as_str() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(format!("{other:?} is not grpc or http/protobuf")),
        },
    );
    let endpoint = match set(&args.otel_exporter_otlp_endpoint) {
        None => Some(None),
        Some(raw) => p.check(
            ENV_OTLP_ENDPOINT,
            parse_base_url(&raw).map(|_| Some(raw.clone())),
        ),
    };
    let ratio = match set(&args.otel_traces_sampler_arg) {
        None => Some(1.0),
        Some(raw) => p.check(
            ENV_OTEL_SAMPLER_ARG,
            raw.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("{raw:?} is not a ratio between 0 and 1")),
        ),
    };
    let sampler_text = set(&args.otel_traces_sampler).unwrap_or(DEFAULT_OTEL_SAMPLER.into());
    let sampler = p.check(
        ENV_OTEL_SAMPLER,
        match sampler_text.as_str() {
            "always_on" => Ok(SamplerConfig::AlwaysOn),
            "always_off" => Ok(SamplerConfig::AlwaysOff),
            "traceidratio" => Ok(SamplerConfig::TraceIdRatio(ratio.unwrap_or(1.0))),
            "parentbased_always_on" => Ok(SamplerConfig::ParentBasedAlwaysOn),
            "parentbased_always_off" => Ok(SamplerConfig::ParentBasedAlwaysOff),
            "parentbased_traceidratio" => {
                Ok(SamplerConfig::ParentBasedTraceIdRatio(ratio.unwrap_or(1.0)))
            }
            other => Err(format!("{other:?} is not a supported sampler")),
        },
    );
    let service_name = set(&args.otel_service_name).unwrap_or(DEFAULT_OTEL_SERVICE_NAME.into());
    match (endpoint, protocol, sampler, ratio) {
        (Some(endpoint), Some(protocol), Some(sampler), Some(_)) => Some(TelemetryConfig {
            otlp: endpoint.map(|endpoint| Otlp { endpoint, protocol }),
            service_name,
            sampler,
        }),
        _ => None,
    }
}

fn parse_base_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    Ok(url)
}

fn redact_userinfo(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "<invalid>".to_owned(),
    }
}

fn parse_endpoint_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') || raw.contains(['?', '#', ' ']) {
        return Err(format!(
            "{raw:?} must be an absolute path without query, e.g. {DEFAULT_SESSION_PATH}"
        ));
    }
    Ok(raw.to_owned())
}

/// The session URL, and the `/ok` probe beside it (`…/get-session` → `…/ok`).
fn endpoint_urls(base: &url::Url, path: &str) -> Result<(url::Url, url::Url), String> {
    let root = base.as_str().trim_end_matches('/');
    let session = url::Url::parse(&format!("{root}{path}"))
        .map_err(|e| format!("{path:?} does not make a URL with the base ({e})"))?;
    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    let ok = url::Url::parse(&format!("{root}{parent}/ok"))
        .map_err(|e| format!("{path:?} does not make a probe URL ({e})"))?;
    Ok((session, ok))
}

fn listener(addr: Option<SocketAddr>) -> String {
    addr.map_or(LISTENER_OFF.to_owned(), |a| a.to_string())
}

/// An address, or `off` (`None`).
fn parse_listener_addr(raw: &str) -> Result<Option<SocketAddr>, String> {
    if raw.eq_ignore_ascii_case(LISTENER_OFF) {
        return Ok(None);
    }
    parse_addr(raw)
        .map(Some)
        .map_err(|e| format!("{e}, or {LISTENER_OFF}"))
}

fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|_| format!("{raw:?} is not an IP:port address, e.g. 0.0.0.0:9001"))
}

fn parse_cookie_prefix(raw: &str) -> Result<String, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "-_.!#$%&'*+^`|~".contains(c);
    if raw.chars().all(token) {
        Ok(raw.to_owned())
    } else {
        Err(format!("{raw:?} has characters a cookie name cannot hold"))
    }
}

fn parse_public_paths(raw: &str) -> Result<Vec<PathPrefix>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match PathPrefix::parse(part) {
            Ok(prefix) => out.push(prefix),
            Err(problem) => bad.push(problem),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad.join("; "))
    }
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{raw:?} is not true or false")),
    }
}

fn parse_millis(raw: &str, min: u64, max: u64) -> Result<Duration, String> {
    let n: u64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number of milliseconds"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max} milliseconds"));
    }
    Ok(Duration::from_millis(n))
}

fn parse_count(raw: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// Identity header names: valid HTTP names, lower-case, and not one the proxies own.
fn parse_header_name(raw: &str) -> Result<String, String> {
    let name = http::HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("{raw:?} is not a valid header name"))?;
    const RESERVED: [&str; 12] = [
        "host",
        "cookie",
        "set-cookie",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "transfer-encoding",
        "upgrade",
        "te",
        "keep-alive",
        "x-forwarded-for",
    ];
    if RESERVED.contains(&name.as_str()) {
        return Err(format!("{raw:?} is a header the proxies manage"));
    }
    Ok(name.as_str().to_owned())
}

fn parse_log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{raw:?} is not text or json")),
    }
}

#[cfg(test)]
mod tests;
