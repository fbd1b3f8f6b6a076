use std::time::Duration;

use super::*;

fn args() -> Args {
    Args {
        better_auth_url: Some("http://127.0.0.1:3000".into()),
        ..Default::default()
    }
}

fn problems(a: &Args) -> Vec<String> {
    match Config::from_args(a) {
        Ok(_) => vec![],
        Err(errors) => errors.into_iter().map(|e| e.variable).collect(),
    }
}

#[test]
fn defaults() {
    let c = Config::from_args(&args()).unwrap();
    assert_eq!(
        c.better_auth.session.as_str(),
        "http://127.0.0.1:3000/api/auth/get-session"
    );
    assert_eq!(
        c.better_auth.ok.as_str(),
        "http://127.0.0.1:3000/api/auth/ok"
    );
    assert_eq!(c.listeners.grpc.unwrap().to_string(), "0.0.0.0:9001");
    assert_eq!(c.listeners.http.unwrap().to_string(), "0.0.0.0:9002");
    assert_eq!(c.listeners.forward_auth, ForwardAuth::Auto);
    assert_eq!(c.lookups.cache_max_bytes, 16 * 1024 * 1024);
    assert_eq!(c.listeners.admin.to_string(), "0.0.0.0:9090");
    assert_eq!(c.upstream.timeout, Duration::from_millis(150));
    assert_eq!(c.policy.cookie_prefix, "better-auth");
    assert!(c.policy.allow_preflight);
    assert!(c.policy.routes.routes().is_empty());
    assert!(c.policy_file.is_none());
    assert_eq!(
        c.policy.identity.all().collect::<Vec<_>>(),
        ["x-user-id", "x-user-email", "x-user-name"]
    );
    assert_eq!(c.telemetry.log_format, LogFormat::Text);
}

#[test]
fn base_paths_and_custom_endpoints_join() {
    let mut a = args();
    a.better_auth_url = Some("https://auth.example.com/base/".into());
    a.better_auth_session_path = Some("/auth/get-session".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(
        c.better_auth.session.as_str(),
        "https://auth.example.com/base/auth/get-session"
    );
    assert_eq!(
        c.better_auth.ok.as_str(),
        "https://auth.example.com/base/auth/ok"
    );
}

#[test]
fn identity_headers_are_lower_cased() {
    let mut a = args();
    a.header_user_id = Some("X-Auth-User".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.policy.identity.user_id, "x-auth-user");
}

#[test]
fn every_bad_variable_is_reported_at_once() {
    let a = Args {
        command: None,
        policy_file: Some("/nonexistent/policy.yaml".into()),
        route_header: Some("x authz route".into()),
        better_auth_url: None,
        better_auth_session_path: Some("get-session".into()),
        grpc_addr: Some("localhost".into()),
        http_addr: Some("1.2.3.4:99999".into()),
        admin_addr: Some(":9090".into()),
        cookie_prefix: Some("bad;prefix".into()),
        credentials: Some("cookie,jwt".into()),
        header_jwt: Some("cookie".into()),
        header_map: Some("x-a=session.token".into()),
        strip_credentials: Some("perhaps".into()),
        api_key_header: Some("cookie".into()),
        cache_api_keys: Some("sometimes".into()),
        user_path_pattern: Some("/api/{id}/".into()),
        public_paths: Some("/api/auth/,relative".into()),
        allow_preflight: Some("maybe".into()),
        upstream_timeout_ms: Some("0".into()),
        upstream_pool_max_idle: Some("-1".into()),
        max_inflight: Some("0".into()),
        cache_ttl_ms: Some("forever".into()),
        cache_max_entries: Some("0".into()),
        cache_max_bytes: Some("10".into()),
        forward_auth: Some("envoy".into()),
        header_user_id: Some("x user".into()),
        header_user_email: Some("cookie".into()),
        header_user_name: Some("x(user)".into()),
        log_format: Some("xml".into()),
        shutdown_timeout_ms: Some("soon".into()),
        shutdown_delay_ms: Some("-5".into()),
        tls_cert: None,
        tls_key: Some("/nonexistent/key.pem".into()),
        tls_client_ca: Some("/nonexistent/ca.pem".into()),
        better_auth_ca_file: Some("/nonexistent/ca.pem".into()),
        otel_exporter_otlp_endpoint: Some("collector:4317".into()),
        otel_exporter_otlp_protocol: Some("http/json".into()),
        otel_service_name: None,
        otel_traces_sampler: Some("sometimes".into()),
        otel_traces_sampler_arg: Some("2".into()),
    };
    let mut got = problems(&a);
    got.sort();
    let mut want = vec![
        "BETTER_AUTH_URL",
        "BETTER_AUTH_SESSION_PATH",
        "AUTHZ_GRPC_ADDR",
        "AUTHZ_HTTP_ADDR",
        "AUTHZ_ADMIN_ADDR",
        "AUTHZ_COOKIE_PREFIX",
        "AUTHZ_CREDENTIALS",
        "AUTHZ_HEADER_JWT",
        "AUTHZ_HEADER_MAP",
        "AUTHZ_STRIP_CREDENTIALS",
        "AUTHZ_API_KEY_HEADER",
        "AUTHZ_CACHE_API_KEYS",
        "AUTHZ_USER_PATH_PATTERN",
        "AUTHZ_PUBLIC_PATHS",
        // The file cannot be read, and it is set together with the shorthand.
        "AUTHZ_POLICY_FILE",
        "AUTHZ_POLICY_FILE",
        "AUTHZ_ROUTE_HEADER",
        "AUTHZ_ALLOW_PREFLIGHT",
        "AUTHZ_UPSTREAM_TIMEOUT_MS",
        "AUTHZ_UPSTREAM_POOL_MAX_IDLE",
        "AUTHZ_MAX_INFLIGHT",
        "AUTHZ_CACHE_TTL_MS",
        "AUTHZ_CACHE_MAX_ENTRIES",
        "AUTHZ_CACHE_MAX_BYTES",
        "AUTHZ_FORWARD_AUTH",
        "AUTHZ_HEADER_USER_ID",
        "AUTHZ_HEADER_USER_EMAIL",
        "AUTHZ_HEADER_USER_NAME",
        "AUTHZ_LOG_FORMAT",
        "AUTHZ_SHUTDOWN_TIMEOUT_MS",
        "AUTHZ_SHUTDOWN_DELAY_MS",
        "AUTHZ_TLS_CERT",
        "BETTER_AUTH_CA_FILE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn single_problems() {
    type Change = fn(&mut Args);
    let cases: Vec<(Change, &str)> = vec![
        (
            |a| a.better_auth_url = Some("ftp://x".into()),
            "BETTER_AUTH_URL",
        ),
        (
            |a| a.better_auth_url = Some("not a url".into()),
            "BETTER_AUTH_URL",
        ),
        (
            |a| a.better_auth_url = Some("http://h/?q=1".into()),
            "BETTER_AUTH_URL",
        ),
        (
            |a| a.better_auth_url = Some("http://user:secret@h/".into()),
            "BETTER_AUTH_URL",
        ),
        (
            |a| a.better_auth_url = Some("http://user@h/".into()),
            "BETTER_AUTH_URL",
        ),
        (|a| a.better_auth_url = Some("  ".into()), "BETTER_AUTH_URL"),
        (
            |a| a.upstream_timeout_ms = Some("60001".into()),
            "AUTHZ_UPSTREAM_TIMEOUT_MS",
        ),
        (
            |a| a.upstream_timeout_ms = Some("1.5".into()),
            "AUTHZ_UPSTREAM_TIMEOUT_MS",
        ),
        (
            |a| a.user_path_pattern = Some("/api/".into()),
            "AUTHZ_USER_PATH_PATTERN",
        ),
        (|a| a.public_paths = Some("/".into()), "AUTHZ_PUBLIC_PATHS"),
        (
            |a| a.http_addr = Some("0.0.0.0:9001".into()),
            "AUTHZ_HTTP_ADDR",
        ),
        (
            |a| a.admin_addr = Some("0.0.0.0:9002".into()),
            "AUTHZ_ADMIN_ADDR",
        ),
        (
            |a| a.header_user_name = Some("X-User-Id".into()),
            "AUTHZ_HEADER_USER_NAME",
        ),
        (
            |a| a.header_user_id = Some("host".into()),
            "AUTHZ_HEADER_USER_ID",
        ),
    ];
    for (change, variable) in cases {
        let mut a = args();
        change(&mut a);
        assert_eq!(problems(&a), [variable], "{a:?}");
    }
}

#[test]
fn messages_name_the_variable_and_the_value() {
    let mut a = args();
    a.upstream_timeout_ms = Some("abc".into());
    let errors = Config::from_args(&a).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "AUTHZ_UPSTREAM_TIMEOUT_MS: \"abc\" is not a whole number of milliseconds"
    );
}

#[test]
fn port_zero_may_repeat_for_tests() {
    let mut a = args();
    a.grpc_addr = Some("127.0.0.1:0".into());
    a.http_addr = Some("127.0.0.1:0".into());
    a.admin_addr = Some("127.0.0.1:0".into());
    assert!(Config::from_args(&a).is_ok());
}

#[test]
fn booleans() {
    for (raw, want) in [
        ("true", true),
        ("FALSE", false),
        ("1", true),
        ("off", false),
    ] {
        let mut a = args();
        a.allow_preflight = Some(raw.into());
        assert_eq!(
            Config::from_args(&a).unwrap().policy.allow_preflight,
            want,
            "{raw}"
        );
    }
}

#[test]
fn summary_shows_the_effective_configuration() {
    let mut a = args();
    a.better_auth_url = Some("http://auth.internal:3000".into());
    // A collector's user and password never reach the log line (BETTER_AUTH_URL refuses them).
    a.otel_exporter_otlp_endpoint = Some("http://user:pw@collector:4318".into());
    a.public_paths = Some("/api/auth/, /healthz".into());
    a.user_path_pattern = Some("/API/{user_id}".into());
    let s = Config::from_args(&a).unwrap().summary;
    assert!(
        s.contains("BETTER_AUTH_URL=http://auth.internal:3000"),
        "{s}"
    );
    assert!(
        s.contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318/"),
        "{s}"
    );
    assert!(s.contains("AUTHZ_PUBLIC_PATHS=/api/auth/, /healthz"), "{s}");
    assert!(s.contains("AUTHZ_USER_PATH_PATTERN=/API/{user_id}"), "{s}");
    // Defaults are part of the effective configuration.
    assert!(s.contains("AUTHZ_UPSTREAM_TIMEOUT_MS=150"), "{s}");
    assert!(!s.contains("pw"), "{s}");
}

#[test]
fn telemetry_defaults_and_choices() {
    let c = Config::from_args(&args()).unwrap();
    assert_eq!(c.telemetry.otlp, None);
    assert_eq!(c.telemetry.service_name, "better-authz");
    assert_eq!(c.telemetry.sampler, SamplerConfig::ParentBasedAlwaysOn);

    let mut a = args();
    a.otel_exporter_otlp_endpoint = Some("http://collector:4317".into());
    a.otel_exporter_otlp_protocol = Some("grpc".into());
    a.otel_traces_sampler = Some("parentbased_traceidratio".into());
    a.otel_traces_sampler_arg = Some("0.25".into());
    a.otel_service_name = Some("edge-authz".into());
    let t = Config::from_args(&a).unwrap().telemetry;
    assert_eq!(
        t.otlp,
        Some(Otlp {
            endpoint: "http://collector:4317".into(),
            protocol: OtlpProtocol::Grpc
        })
    );
    assert_eq!(t.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));
    assert_eq!(t.service_name, "edge-authz");

    a.otel_exporter_otlp_protocol = None;
    let t = Config::from_args(&a).unwrap().telemetry;
    assert_eq!(t.otlp.unwrap().protocol, OtlpProtocol::HttpProtobuf);
}

#[test]
fn a_listener_can_be_turned_off_but_not_both() {
    let mut a = args();
    a.http_addr = Some("off".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.listeners.http, None);
    assert!(c.listeners.grpc.is_some());

    let mut a = args();
    a.grpc_addr = Some("OFF".into());
    a.http_addr = Some("127.0.0.1:9002".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.listeners.grpc, None);

    let mut a = args();
    a.grpc_addr = Some("off".into());
    a.http_addr = Some("off".into());
    assert_eq!(problems(&a), vec!["AUTHZ_HTTP_ADDR"]);
}

#[test]
fn forward_auth_names_one_proxy() {
    for (raw, want) in [
        ("auto", ForwardAuth::Auto),
        ("nginx", ForwardAuth::Nginx),
        ("Ingress-Nginx", ForwardAuth::IngressNginx),
        ("traefik", ForwardAuth::Traefik),
    ] {
        let mut a = args();
        a.forward_auth = Some(raw.into());
        assert_eq!(
            Config::from_args(&a).unwrap().listeners.forward_auth,
            want,
            "{raw}"
        );
    }
    let mut a = args();
    a.forward_auth = Some("envoy".into());
    assert_eq!(problems(&a), vec!["AUTHZ_FORWARD_AUTH"]);
}

#[test]
fn every_header_written_upstream_has_one_meaning() {
    type Change = fn(&mut Args);
    let cases: [(Change, &str); 4] = [
        (
            |a| a.header_map = Some("x-user-id=user.role".into()),
            "AUTHZ_HEADER_MAP",
        ),
        (
            |a| {
                a.header_jwt = Some("x-user-jwt".into());
                a.header_map = Some("x-user-jwt=user.role".into());
            },
            "AUTHZ_HEADER_MAP",
        ),
        (
            |a| a.header_jwt = Some("x-user-email".into()),
            "AUTHZ_HEADER_JWT",
        ),
        (
            |a| a.header_jwt = Some("x-api-key".into()),
            "AUTHZ_HEADER_JWT",
        ),
    ];
    for (change, variable) in cases {
        let mut a = args();
        change(&mut a);
        assert_eq!(problems(&a), [variable], "{a:?}");
    }
    let mut a = args();
    a.header_jwt = Some("Authorization".into());
    a.header_map = Some("x-user-role=user.role".into());
    let c = Config::from_args(&a).unwrap();
    assert_eq!(c.policy.jwt_header.as_deref(), Some("authorization"));
    assert!(c.upstream.jwt);
    assert_eq!(
        c.upstream.fields,
        [vec!["user".to_owned(), "role".to_owned()]]
    );
}

#[test]
fn a_password_in_the_better_auth_url_is_refused_without_being_repeated() {
    let error = parse::better_auth_url("https://user:hunter2@auth.example.com/").unwrap_err();
    assert!(error.contains("user name or password"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}
