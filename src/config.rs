//! Configuration: every variable once, in [`Args`] (flag, variable, default, meaning), read in
//! one pass into the section structs the modules take.
//!
//! Flags are read as text and parsed by [`read`]'s reader rather than by clap's typed parsers, so
//! that one run reports **every** bad variable at once instead of the first one clap trips on.
//!
//! Adding a variable is three edits: its [`Args`] field (doc, variable, default), one `read!`
//! line in [`Config::from_args`] filling a section field, and the use of that field in the
//! module that takes the section.

mod parse;
mod read;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::better_auth::{ClientOptions, Endpoints};
use crate::credentials::CredentialKind;
use crate::decision::{IdentityHeaders, Policy};
use crate::headers;
use crate::http::ForwardAuth;
use crate::lookups::LookupOptions;
use crate::routes::RouteTable;
use crate::tls::{TlsError, TlsFiles, TlsSettings};
use read::{Reader, read, read_optional};

pub use parse::LISTENER_OFF;

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
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Better Auth base URL, e.g. http://127.0.0.1:3000 (required)
    #[arg(long, env = "BETTER_AUTH_URL")]
    pub better_auth_url: Option<String>,

    /// Better Auth session endpoint path (`/api/auth/session` does not exist)
    #[arg(
        long,
        env = "BETTER_AUTH_SESSION_PATH",
        default_value = "/api/auth/get-session"
    )]
    pub better_auth_session_path: Option<String>,

    /// Envoy ext_authz gRPC listener (also grpc.health.v1), or `off`. 9001 as in Envoy's
    /// examples, so configurations read familiar
    #[arg(long, env = "AUTHZ_GRPC_ADDR", default_value = "0.0.0.0:9001")]
    pub grpc_addr: Option<String>,

    /// HTTP listener for nginx auth_request / ingress-nginx auth-url / Traefik ForwardAuth,
    /// path /auth, or `off`. Reachable by the proxy only: it trusts the proxy's headers
    #[arg(long, env = "AUTHZ_HTTP_ADDR", default_value = "0.0.0.0:9002")]
    pub http_addr: Option<String>,

    /// Admin listener: /healthz, /readyz, /metrics
    #[arg(long, env = "AUTHZ_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: Option<String>,

    /// Which proxy calls /auth, so which one header names the original URI, method and host:
    /// nginx (X-Original-URI, X-Original-Method, Host), ingress-nginx (X-Original-URL,
    /// X-Original-Method), traefik (X-Forwarded-Uri, -Method, -Host), or auto (any of them;
    /// ones that disagree are a 400)
    #[arg(long, env = "AUTHZ_FORWARD_AUTH", default_value = "auto")]
    pub forward_auth: Option<String>,

    /// Better Auth cookie prefix (its advanced.cookiePrefix); the __Secure- variant is always
    /// accepted
    #[arg(long, env = "AUTHZ_COOKIE_PREFIX", default_value = "better-auth")]
    pub cookie_prefix: Option<String>,

    /// Path pattern with one {user_id} segment, e.g. /api/{user_id}/. Where a path matches,
    /// the decoded segment must equal the session's user id, else 403 [default: unset]
    #[arg(long, env = "AUTHZ_USER_PATH_PATTERN")]
    pub user_path_pattern: Option<String>,

    /// Comma-separated path prefixes allowed without a session, matched by whole segments,
    /// e.g. /api/auth/ [default: unset]
    #[arg(long, env = "AUTHZ_PUBLIC_PATHS")]
    pub public_paths: Option<String>,

    /// A YAML policy of routes: roles, organizations, verified email, sign-in age, browser
    /// redirects (see docs/policy.md). Re-read when it changes; a bad edit keeps the last good
    /// policy. Not with AUTHZ_PUBLIC_PATHS or AUTHZ_USER_PATH_PATTERN [default: unset]
    #[arg(long, env = "AUTHZ_POLICY_FILE")]
    pub policy_file: Option<String>,

    /// The header nginx names a policy route in on the auth subrequest (set from a
    /// per-location `$authz_route`); unset: no header names a route [default: unset]
    #[arg(long, env = "AUTHZ_ROUTE_HEADER")]
    pub route_header: Option<String>,

    /// Let real CORS preflights (OPTIONS + Origin + Access-Control-Request-Method) through
    /// without a session: true or false
    #[arg(long, env = "AUTHZ_ALLOW_PREFLIGHT", default_value = "true")]
    pub allow_preflight: Option<String>,

    /// Deadline in milliseconds for one Better Auth call. Below Envoy's default 200 ms check
    /// timeout, so the client gets our 503 with a body rather than Envoy's bare error
    #[arg(long, env = "AUTHZ_UPSTREAM_TIMEOUT_MS", default_value = "150")]
    pub upstream_timeout_ms: Option<String>,

    /// Idle kept-alive connections kept open to Better Auth; idle ones close after 4 s, before
    /// Node's 5 s keep-alive timeout
    #[arg(long, env = "AUTHZ_UPSTREAM_POOL_MAX_IDLE", default_value = "64")]
    pub upstream_pool_max_idle: Option<String>,

    /// Better Auth calls in flight at most; beyond that checks are answered 503 at once. Far
    /// above what one Better Auth serves within the deadline, so it bites only when it stalls
    #[arg(long, env = "AUTHZ_MAX_INFLIGHT", default_value = "512")]
    pub max_inflight: Option<String>,

    /// Cache valid sessions this many milliseconds (capped by the session's expiresAt); 0 = no
    /// cache, so every check sees revocations at once. A revoked session stays accepted up to
    /// this long
    #[arg(long, env = "AUTHZ_CACHE_TTL_MS", default_value = "0")]
    pub cache_ttl_ms: Option<String>,

    /// Most sessions kept in the cache
    #[arg(long, env = "AUTHZ_CACHE_MAX_ENTRIES", default_value = "10000")]
    pub cache_max_entries: Option<String>,

    /// Most bytes the cache's entries may hold, names and emails included (16 MiB)
    #[arg(long, env = "AUTHZ_CACHE_MAX_BYTES", default_value = "16777216")]
    pub cache_max_bytes: Option<String>,

    /// The credentials read, in order; the first one present is the one asked about: cookie
    /// (the session cookie), bearer (Authorization: Bearer, Better Auth's bearer plugin),
    /// api-key (the AUTHZ_API_KEY_HEADER header, the API-key plugin with
    /// enableSessionForAPIKeys). The proxy must pass those headers on
    #[arg(long, env = "AUTHZ_CREDENTIALS", default_value = "cookie")]
    pub credentials: Option<String>,

    /// Header an API key comes in (the API-key plugin's apiKeyHeaders)
    #[arg(long, env = "AUTHZ_API_KEY_HEADER", default_value = "x-api-key")]
    pub api_key_header: Option<String>,

    /// Cache and coalesce API-key lookups too: true or false. Off, each check with a key asks
    /// Better Auth, because each get-session counts against the key's own quota
    #[arg(long, env = "AUTHZ_CACHE_API_KEYS", default_value = "false")]
    pub cache_api_keys: Option<String>,

    /// Header the jwt plugin's token (set-auth-jwt) goes to the back end in, e.g. x-user-jwt, or
    /// authorization (sent as Bearer <jwt>). Removed on every allow without a fresh one, never
    /// sent to the client [default: unset]
    #[arg(long, env = "AUTHZ_HEADER_JWT")]
    pub header_jwt: Option<String>,

    /// Extra identity headers from fields of get-session's answer, e.g.
    /// x-user-role=user.role,x-org-id=session.activeOrganizationId. Absent or null fields remove
    /// the header [default: unset]
    #[arg(long, env = "AUTHZ_HEADER_MAP")]
    pub header_map: Option<String>,

    /// Remove the configured credentials (Better Auth cookies, a bearer Authorization, the
    /// API-key header) before the back end: true or false. Leave it off when a server-rendered
    /// app behind the proxy reads its own session cookie
    #[arg(long, env = "AUTHZ_STRIP_CREDENTIALS", default_value = "false")]
    pub strip_credentials: Option<String>,

    /// Header carrying the user id to the upstream
    #[arg(long, env = "AUTHZ_HEADER_USER_ID", default_value = "x-user-id")]
    pub header_user_id: Option<String>,

    /// Header carrying the user email to the upstream
    #[arg(long, env = "AUTHZ_HEADER_USER_EMAIL", default_value = "x-user-email")]
    pub header_user_email: Option<String>,

    /// Header carrying the user name to the upstream
    #[arg(long, env = "AUTHZ_HEADER_USER_NAME", default_value = "x-user-name")]
    pub header_user_name: Option<String>,

    /// Log format: text or json; the level comes from RUST_LOG
    #[arg(long, env = "AUTHZ_LOG_FORMAT", default_value = "text")]
    pub log_format: Option<String>,

    /// On SIGTERM/SIGINT, how long in-flight checks may take to finish, in milliseconds
    /// (Kubernetes gives a pod 30 s; this leaves room for the preStop wait)
    #[arg(long, env = "AUTHZ_SHUTDOWN_TIMEOUT_MS", default_value = "10000")]
    pub shutdown_timeout_ms: Option<String>,

    /// On SIGTERM/SIGINT, keep serving this many milliseconds while reporting not ready
    /// (/readyz 503, gRPC health NOT_SERVING) so health-checking proxies move away first; set it
    /// above the proxy's health-check interval + jitter + timeout when no preStop wait does this
    #[arg(long, env = "AUTHZ_SHUTDOWN_DELAY_MS", default_value = "0")]
    pub shutdown_delay_ms: Option<String>,

    /// PEM certificate chain: serve TLS on the gRPC and HTTP listeners (the admin listener stays
    /// plain HTTP for probes). Reloaded when the file changes [default: unset, plaintext]
    #[arg(long, env = "AUTHZ_TLS_CERT")]
    pub tls_cert: Option<String>,

    /// PEM private key for AUTHZ_TLS_CERT [default: unset]
    #[arg(long, env = "AUTHZ_TLS_KEY")]
    pub tls_key: Option<String>,

    /// PEM CA bundle: require client certificates signed by it (mTLS from the proxy)
    /// [default: unset]
    #[arg(long, env = "AUTHZ_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<String>,

    /// PEM CA bundle trusted for https:// Better Auth URLs, added to the system roots
    /// [default: unset]
    #[arg(long, env = "BETTER_AUTH_CA_FILE")]
    pub better_auth_ca_file: Option<String>,

    /// OTLP collector base URL, e.g. http://otel-collector:4317 (gRPC) or :4318 (HTTP); unset:
    /// no trace export at all [default: unset]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf (the OpenTelemetry specification's default)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otel_exporter_otlp_protocol: Option<String>,

    /// service.name of exported spans
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "better-authz")]
    pub otel_service_name: Option<String>,

    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio (the default follows the proxy's
    /// sampling decision and samples new traces)
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on"
    )]
    pub otel_traces_sampler: Option<String>,

    /// Sampling ratio 0..=1 for the *traceidratio samplers
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value = "1.0")]
    pub otel_traces_sampler_arg: Option<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    #[default]
    HttpProtobuf,
}

#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    #[default]
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Otlp {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

/// Logs and trace export; `otlp: None` means no exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub otlp: Option<Otlp>,
    pub service_name: String,
    pub sampler: SamplerConfig,
}

/// Where to listen, and who calls the HTTP listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// `None`: `off`, no gRPC listener.
    pub grpc: Option<SocketAddr>,
    /// `None`: `off`, no HTTP listener.
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub forward_auth: ForwardAuth,
    /// `AUTHZ_ROUTE_HEADER`, lower case.
    pub route_header: Option<String>,
}

/// What SIGTERM/SIGINT does.
#[derive(Clone, Debug)]
pub struct ShutdownConfig {
    /// How long in-flight checks may take to finish.
    pub timeout: Duration,
    /// How long to keep serving while reporting not ready, before draining.
    pub delay: Duration,
}

/// The validated configuration, one section per module that takes it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Better Auth's session endpoint and the `/ok` probe beside it.
    pub better_auth: Endpoints,
    pub listeners: ListenerConfig,
    pub upstream: ClientOptions,
    pub lookups: LookupOptions,
    pub policy: Policy,
    /// `AUTHZ_POLICY_FILE`, watched for changes; `None` when the routes come from variables.
    pub policy_file: Option<PathBuf>,
    pub shutdown: ShutdownConfig,
    /// TLS on the gRPC and HTTP listeners, loaded; `None` is plaintext.
    pub tls: Option<TlsSettings>,
    pub telemetry: TelemetryConfig,
    /// `VARIABLE=value` of everything read, for the start-up log (no secrets: URLs lose any
    /// user info).
    pub summary: String,
}

/// Commands beside serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Policy files (AUTHZ_POLICY_FILE): check one, or explain what it does with a request
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum PolicyCommand {
    /// Validate FILE and print its compiled routes; exit 2 naming every problem with its line
    Check { file: PathBuf },
    /// Which route of FILE a request matches, and what it requires
    Explain {
        file: PathBuf,
        method: String,
        /// The request target, e.g. /orgs/acme/tasks?x=1
        path: String,
        /// The request's host
        #[arg(long)]
        host: Option<String>,
        /// A route the proxy names (Envoy context_extensions, AUTHZ_ROUTE_HEADER)
        #[arg(long)]
        route: Option<String>,
    },
}

/// One bad variable and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

// === impl Config ===

impl Config {
    /// Validate every variable; on failure, every problem found.
    pub fn from_args(a: &Args) -> Result<Config, Vec<ConfigError>> {
        use parse::*;
        let mut r = Reader::new();

        let base = r.read("better_auth_url", &a.better_auth_url, better_auth_url);
        let session_path = read!(r, a.better_auth_session_path, endpoint_path);
        let endpoints = base.and_then(|base| match Endpoints::of(&base, &session_path) {
            Ok(endpoints) => Some(endpoints),
            Err(problem) => {
                r.problem("better_auth_session_path", problem);
                None
            }
        });
        let upstream = ClientOptions {
            timeout: read!(r, a.upstream_timeout_ms, millis(1, MAX_UPSTREAM_TIMEOUT_MS)),
            pool_max_idle: read!(r, a.upstream_pool_max_idle, count(0, 100_000)),
            ca: read_optional!(r, a.better_auth_ca_file, ca_bundle).flatten(),
            ..Default::default()
        };

        let listeners = ListenerConfig {
            grpc: read!(r, a.grpc_addr, listener_addr),
            http: read!(r, a.http_addr, listener_addr),
            admin: r
                .read("admin_addr", &a.admin_addr, addr)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            forward_auth: read!(r, a.forward_auth, ForwardAuth::parse),
            route_header: read_optional!(r, a.route_header, header_name).flatten(),
        };

        let lookups = LookupOptions {
            cache_ttl: read!(r, a.cache_ttl_ms, millis(0, 3_600_000)),
            cache_max_entries: read!(r, a.cache_max_entries, count(1, 10_000_000)),
            cache_max_bytes: read!(r, a.cache_max_bytes, count(4096, 1 << 40)),
            cache_api_keys: read!(r, a.cache_api_keys, boolean),
            max_inflight: read!(r, a.max_inflight, count(1, 1_000_000)),
        };

        let public = read_optional!(r, a.public_paths, public_paths).flatten();
        let own = read_optional!(r, a.user_path_pattern, user_path).flatten();
        // Judged on presence, so that the clash is reported even when the file is bad too.
        let file_given = a
            .policy_file
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty());
        let file = read_optional!(r, a.policy_file, policy_file).flatten();
        let shorthand_given = [&a.public_paths, &a.user_path_pattern]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()));
        if file_given && shorthand_given {
            let (public, own) = (r.var("public_paths"), r.var("user_path_pattern"));
            r.problem(
                "policy_file",
                format!(
                    "{public} and {own} are shorthand for routes: with a policy file, write \
                     them as routes in it and unset them"
                ),
            );
        }
        let (policy_file, routes) = match file {
            Some((path, routes)) => (Some(path), routes),
            None => (
                None,
                RouteTable::from_variables(&public.unwrap_or_default(), own),
            ),
        };
        let policy = Policy {
            credentials: read!(r, a.credentials, CredentialKind::parse_list),
            api_key_header: read!(r, a.api_key_header, header_name),
            cookie_prefix: read!(r, a.cookie_prefix, cookie_prefix),
            routes: Arc::new(routes),
            allow_preflight: read!(r, a.allow_preflight, boolean),
            identity: IdentityHeaders {
                user_id: read!(r, a.header_user_id, header_name),
                email: read!(r, a.header_user_email, header_name),
                name: read!(r, a.header_user_name, header_name),
            },
            header_map: read_optional!(r, a.header_map, headers::parse_map)
                .flatten()
                .unwrap_or_default(),
            jwt_header: read_optional!(r, a.header_jwt, jwt_header).flatten(),
            strip_credentials: read!(r, a.strip_credentials, boolean),
        };
        // The client reads what the policy sends on.
        let upstream = ClientOptions {
            fields: policy.header_map.iter().map(|m| m.path.clone()).collect(),
            jwt: policy.jwt_header.is_some(),
            ..upstream
        };

        let shutdown = ShutdownConfig {
            timeout: read!(r, a.shutdown_timeout_ms, millis(0, 3_600_000)),
            delay: read!(r, a.shutdown_delay_ms, millis(0, 600_000)),
        };

        let ratio = read!(r, a.otel_traces_sampler_arg, ratio);
        let protocol = read!(r, a.otel_exporter_otlp_protocol, otlp_protocol);
        let telemetry = TelemetryConfig {
            log_format: read!(r, a.log_format, log_format),
            otlp: read_optional!(r, a.otel_exporter_otlp_endpoint, |raw| {
                base_url(raw).map(|_| raw.to_owned())
            })
            .flatten()
            .map(|endpoint| Otlp { endpoint, protocol }),
            service_name: read!(r, a.otel_service_name, |raw| Ok(raw.to_owned())),
            sampler: sampler(&read!(r, a.otel_traces_sampler, sampler_name), ratio),
        };

        let tls = read_tls(&mut r, a);
        check_across(&mut r, &listeners, &policy.identity);
        check_names(&mut r, &policy);
        let summary = r.finish()?;
        let Some(better_auth) = endpoints else {
            // Unreachable: a missing or bad URL was recorded above.
            return Err(vec![ConfigError {
                variable: "BETTER_AUTH_URL".into(),
                problem: "required".into(),
            }]);
        };
        Ok(Config {
            better_auth,
            listeners,
            upstream,
            lookups,
            policy,
            policy_file,
            shutdown,
            tls,
            telemetry,
            summary,
        })
    }
}

/// Checks between variables: listeners that clash, identity headers that repeat.
fn check_across(r: &mut Reader, l: &ListenerConfig, identity: &IdentityHeaders) {
    if l.grpc.is_none() && l.http.is_none() && !r.has_problems() {
        let (g, h) = (r.var("grpc_addr"), r.var("http_addr"));
        r.problem(
            "http_addr",
            format!("{g} and {h} are both off: nothing would serve checks"),
        );
    }
    let clash = |x: Option<SocketAddr>, y: Option<SocketAddr>| match (x, y) {
        (Some(x), Some(y)) => x.port() != 0 && x == y,
        _ => false,
    };
    if clash(l.grpc, l.http) {
        let g = r.var("grpc_addr");
        r.problem("http_addr", format!("also {g}"));
    }
    if clash(l.grpc, Some(l.admin)) || clash(l.http, Some(l.admin)) {
        r.problem("admin_addr", "also used by another listener");
    }
    // An empty name stands in for one that did not parse (already reported).
    let same = |x: &str, y: &str| !x.is_empty() && x == y;
    if same(&identity.user_id, &identity.email) {
        let id = r.var("header_user_id");
        r.problem(
            "header_user_email",
            format!("{:?} is also {id}", identity.email),
        );
    }
    if same(&identity.name, &identity.user_id) || same(&identity.name, &identity.email) {
        let name = identity.name.clone();
        r.problem(
            "header_user_name",
            format!("{name:?} is also another identity header"),
        );
    }
}

/// Every header the service writes upstream has one meaning: the mapped headers, the JWT's
/// and the API key's name none of the others.
fn check_names(r: &mut Reader, p: &Policy) {
    let identity: Vec<&str> = p.identity.all().collect();
    let taken = |name: &str| identity.contains(&name) || name == p.api_key_header;
    for m in &p.header_map {
        if taken(&m.name) || p.jwt_header.as_deref() == Some(m.name.as_str()) {
            let problem = format!("{:?} is already an identity, JWT or API-key header", m.name);
            r.problem("header_map", problem);
        }
    }
    if let Some(jwt) = &p.jwt_header
        && taken(jwt)
    {
        r.problem(
            "header_jwt",
            format!("{jwt:?} is already an identity or API-key header"),
        );
    }
}

/// `AUTHZ_TLS_*`: both files or neither; loaded once here, the problem named by file.
fn read_tls(r: &mut Reader, a: &Args) -> Option<TlsSettings> {
    let cert = read_optional!(r, a.tls_cert, parse::file)?;
    let key = read_optional!(r, a.tls_key, parse::file)?;
    let client_ca = read_optional!(r, a.tls_client_ca, parse::file)?;
    let files = match (cert, key) {
        (None, None) => {
            if client_ca.is_some() {
                let (c, k) = (r.var("tls_cert"), r.var("tls_key"));
                r.problem("tls_client_ca", format!("needs {c} and {k}"));
            }
            return None;
        }
        (Some(_), None) => {
            let c = r.var("tls_cert");
            r.problem("tls_key", format!("required with {c}"));
            return None;
        }
        (None, Some(_)) => {
            let k = r.var("tls_key");
            r.problem("tls_cert", format!("required with {k}"));
            return None;
        }
        (Some(cert), Some(key)) => TlsFiles {
            cert,
            key,
            client_ca,
        },
    };
    match TlsSettings::load(files) {
        Ok(settings) => Some(settings),
        Err(TlsError::Cert(why)) => {
            r.problem("tls_cert", why);
            None
        }
        Err(TlsError::Key(why)) => {
            r.problem("tls_key", why);
            None
        }
        Err(TlsError::ClientCa(why)) => {
            r.problem("tls_client_ca", why);
            None
        }
    }
}

fn sampler(name: &str, ratio: f64) -> SamplerConfig {
    match name {
        "always_on" => SamplerConfig::AlwaysOn,
        "always_off" => SamplerConfig::AlwaysOff,
        "traceidratio" => SamplerConfig::TraceIdRatio(ratio),
        "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerConfig::ParentBasedTraceIdRatio(ratio),
        _ => SamplerConfig::ParentBasedAlwaysOn,
    }
}

#[cfg(test)]
mod tests;
