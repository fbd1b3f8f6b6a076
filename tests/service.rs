//! The real service, in-process on port 0, driven through both transports (a tonic client
//! speaking Envoy's `Check`, and an HTTP client speaking nginx's `auth_request`) against a
//! **stand-in Better Auth** on loopback whose every answer the test controls.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// One expectation, checked through both transports.
struct Expect {
    status: u16,
    code: &'static str,
    /// Better Auth calls made by one check.
    calls: usize,
    /// Identity set on allow: user id (`None` for anonymous allows and denies).
    user: Option<&'static str>,
    cookies: Vec<&'static str>,
}

fn deny(status: u16, code: &'static str, calls: usize) -> Expect {
    Expect {
        status,
        code,
        calls,
        user: None,
        cookies: vec![],
    }
}

/// Check `path` with `cookie` through gRPC and HTTP against a fresh stand-in answering
/// `behavior`.
async fn check_both(
    behavior: Behavior,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    want: Expect,
) {
    let stand_in = StandIn::start(behavior).await;
    check_both_with(
        &stand_in,
        base_args(&stand_in.url()),
        method,
        path,
        cookie,
        &want,
    )
    .await;
}

async fn check_both_with(
    stand_in: &StandIn,
    args: better_authz::config::Args,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    want: &Expect,
) {
    let mut service = Service::start(args).await;
    let ctx = format!("{method} {path} expecting {} {}", want.status, want.code);

    // --- gRPC, as Envoy asks.
    let before = stand_in.calls();
    let mut headers = vec![("user-agent", "test-agent/1"), ("x-user-id", "spoofed")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    let resp = service
        .grpc_client()
        .await
        .check(envoy_check(method, path, &headers))
        .await
        .unwrap_or_else(|s| panic!("{ctx}: a decision must be an OK gRPC response, got {s:?}"))
        .into_inner();
    let a = flatten(resp);
    assert_eq!(a.http_status, i32::from(want.status), "grpc {ctx}");
    assert_eq!(
        stand_in.calls() - before,
        want.calls,
        "grpc Better Auth calls, {ctx}"
    );
    assert_eq!(a.cookies, want.cookies, "grpc cookies, {ctx}");
    if want.status == 200 {
        assert_eq!(a.grpc_code, 0, "grpc {ctx}");
        match want.user {
            Some(user) => {
                assert_eq!(a.header("x-user-id"), Some(user), "grpc {ctx}");
                assert_eq!(
                    a.header("x-user-email"),
                    Some(&*format!("{user}@example.com"))
                );
                assert_eq!(a.header("x-user-name"), Some(&*format!("User {user}")));
                assert!(
                    a.set.iter().all(|(_, _, append)| *append == Some(false)),
                    "overwrite, {ctx}"
                );
            }
            None => {
                assert!(a.set.is_empty(), "grpc anonymous allow sets nothing, {ctx}");
                for h in ["x-user-id", "x-user-email", "x-user-name"] {
                    assert!(a.removed.iter().any(|r| r == h), "grpc removes {h}, {ctx}");
                }
            }
        }
    } else {
        assert_ne!(a.grpc_code, 0, "grpc {ctx}");
        assert_eq!(a.error_code(), want.code, "grpc {ctx}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.body["message"].is_string() && a.body["detail"].is_string());
        assert!(
            !a.body.to_string().contains(TOKEN),
            "grpc body leaks the token, {ctx}"
        );
    }

    // --- HTTP, as nginx asks.
    let before = stand_in.calls();
    let mut headers = vec![
        ("x-original-uri", path),
        ("x-original-method", method),
        ("x-forwarded-for", "203.0.113.9"),
        ("user-agent", "test-agent/1"),
        ("x-user-id", "spoofed"),
    ];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    let a = service.auth(&headers).await;
    assert_eq!(a.status, want.status, "http {ctx}: {}", a.body);
    assert_eq!(
        stand_in.calls() - before,
        want.calls,
        "http Better Auth calls, {ctx}"
    );
    assert_eq!(a.all("set-cookie"), want.cookies, "http cookies, {ctx}");
    if want.status == 200 {
        assert_eq!(a.header("x-user-id"), want.user, "http identity, {ctx}");
        assert!(a.body.is_empty());
    } else {
        assert_eq!(a.error_code(), want.code, "http {ctx}");
        assert_eq!(
            a.header("x-authz-error-code"),
            Some(want.code),
            "http {ctx}"
        );
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(a.header("x-user-id").is_none());
        assert!(!a.body.contains(TOKEN), "http body leaks the token, {ctx}");
    }

    service.stop().await.expect("clean shutdown");
}

fn c() -> String {
    session_cookie()
}

#[tokio::test]
async fn valid_session_on_own_path_allows_with_identity() {
    let want = Expect {
        status: 200,
        code: "SESSION_VALID",
        calls: 1,
        user: Some("u1"),
        cookies: vec![],
    };
    check_both(valid("u1"), "GET", "/api/u1/tasks?x=1", Some(&c()), want).await;
}

#[tokio::test]
async fn refreshed_cookies_reach_the_client_on_allow() {
    let behavior = Behavior::Valid {
        user_id: "u1".into(),
        expires_in: 3600,
        set_cookies: vec![
            "better-auth.session_token=new.sig; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax"
                .into(),
            "better-auth.session_data=abc; Max-Age=300; Path=/; HttpOnly".into(),
        ],
    };
    let want = Expect {
        status: 200,
        code: "SESSION_VALID",
        calls: 1,
        user: Some("u1"),
        cookies: vec![
            "better-auth.session_token=new.sig; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax",
            "better-auth.session_data=abc; Max-Age=300; Path=/; HttpOnly",
        ],
    };
    check_both(behavior, "POST", "/api/u1/tasks", Some(&c()), want).await;
}

#[tokio::test]
async fn another_users_path_is_forbidden() {
    for path in ["/api/u2/tasks", "/api/u1/../u2/tasks", "/api/%75%32/tasks"] {
        let want = deny(403, "USER_MISMATCH", 1);
        check_both(valid("u1"), "GET", path, Some(&c()), want).await;
    }
}

#[tokio::test]
async fn no_cookie_is_401_without_calling_better_auth() {
    for cookie in [None, Some("theme=dark")] {
        let want = deny(401, "SESSION_REQUIRED", 0);
        check_both(valid("u1"), "GET", "/api/u1/tasks", cookie, want).await;
    }
}

#[tokio::test]
async fn a_cookie_that_cannot_be_a_token_is_401_without_calling_better_auth() {
    let cookie = "better-auth.session_token=not-signed";
    check_both(
        valid("u1"),
        "GET",
        "/api/u1/tasks",
        Some(cookie),
        deny(401, "SESSION_INVALID", 0),
    )
    .await;
}

/// Every answer a Better Auth can give, and the decision it must become, through both transports.
#[tokio::test]
async fn better_auth_answers_map_to_decisions() {
    let clearing = "better-auth.session_token=; Max-Age=0; Path=/";
    let mut cases: Vec<(&str, Behavior, Expect)> = vec![
        (
            "200 null (forged, signed out): 401, clearing cookies passed on",
            Behavior::Null {
                set_cookies: vec![clearing.into()],
            },
            Expect {
                cookies: vec![clearing],
                ..deny(401, "SESSION_INVALID", 1)
            },
        ),
        (
            "expired session",
            Behavior::Valid {
                user_id: "u1".into(),
                expires_in: -5,
                set_cookies: vec![],
            },
            deny(401, "SESSION_INVALID", 1),
        ),
        (
            "401 from Better Auth",
            Behavior::Status(401),
            deny(401, "SESSION_INVALID", 1),
        ),
        (
            "429 is unavailable, never 401",
            Behavior::Status(429),
            deny(503, "AUTH_UNAVAILABLE", 1),
        ),
        (
            "garbage body",
            Behavior::Garbage,
            deny(500, "AUTH_ERROR", 1),
        ),
        (
            "5 MiB body",
            Behavior::Huge(5 * 1024 * 1024),
            deny(500, "AUTH_ERROR", 1),
        ),
        (
            "redirect, not followed",
            Behavior::Redirect,
            deny(500, "AUTH_ERROR", 1),
        ),
        (
            "404: wrong session path",
            Behavior::Status(404),
            deny(500, "AUTH_ERROR", 1),
        ),
    ];
    for (what, status) in [("500", 500), ("502", 502), ("503", 503)] {
        let want = deny(503, "AUTH_UNAVAILABLE", 1);
        cases.push((what, Behavior::Status(status), want));
    }
    for (what, behavior, want) in cases {
        println!("case: {what}");
        check_both(behavior, "GET", "/api/u1/tasks", Some(&c()), want).await;
    }
}

#[tokio::test]
async fn slow_better_auth_is_503_within_the_deadline() {
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_secs(5),
        Box::new(valid("u1")),
    ))
    .await;
    let mut args = base_args(&stand_in.url());
    args.upstream_timeout_ms = Some("200".into());
    let start = Instant::now();
    check_both_with(
        &stand_in,
        args,
        "GET",
        "/api/u1/tasks",
        Some(&c()),
        &deny(503, "AUTH_UNAVAILABLE", 1),
    )
    .await;
    // Two checks at 200 ms each plus start-up: far below the stand-in's 5 s.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn refused_connection_is_503() {
    // A port that was bound and released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stand_in = StandIn::start(valid("u1")).await; // only for call counting: never reached
    let args = base_args(&format!("http://127.0.0.1:{port}"));
    check_both_with(
        &stand_in,
        args,
        "GET",
        "/api/u1/tasks",
        Some(&c()),
        &deny(503, "AUTH_UNAVAILABLE", 0),
    )
    .await;
}

#[tokio::test]
async fn public_paths_allow_without_session_and_strip_identity() {
    let want = Expect {
        status: 200,
        code: "PUBLIC_PATH",
        calls: 0,
        user: None,
        cookies: vec![],
    };
    check_both(
        Behavior::Status(500),
        "POST",
        "/api/auth/sign-in/email",
        None,
        want,
    )
    .await;
    // A dot segment cannot borrow the public prefix.
    check_both(
        Behavior::Status(500),
        "GET",
        "/api/auth/../u1/tasks",
        None,
        deny(401, "SESSION_REQUIRED", 0),
    )
    .await;
}

#[tokio::test]
async fn cors_preflight_is_allowed_without_session() {
    let stand_in = StandIn::start(Behavior::Status(500)).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let headers = [
        ("origin", "http://app.example"),
        ("access-control-request-method", "POST"),
        ("x-user-id", "spoofed"),
    ];
    let a = service.check("OPTIONS", "/api/u1/tasks", &headers).await;
    assert_eq!((a.grpc_code, a.http_status), (0, 200));
    assert!(a.removed.contains(&"x-user-id".to_string()));

    let a = service
        .auth(&[
            ("x-original-uri", "/api/u1/tasks"),
            ("x-original-method", "OPTIONS"),
            ("origin", "http://app.example"),
            ("access-control-request-method", "POST"),
        ])
        .await;
    assert_eq!(a.status, 200);
    assert!(a.header("x-user-id").is_none());
    assert_eq!(stand_in.calls(), 0);
}

#[tokio::test]
async fn better_auth_receives_only_its_cookies_and_the_client_facts() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let cookie = format!("_ga=GA1; {}; better-auth.session_data=xyz; theme=dark", c());
    let headers = [
        ("cookie", cookie.as_str()),
        ("user-agent", "Mozilla/5.0 test"),
    ];
    service
        .grpc_client()
        .await
        .check(envoy_check("GET", "/api/u1/tasks", &headers))
        .await
        .unwrap();
    let seen = stand_in.last_seen();
    assert_eq!(
        seen.get_all("cookie").iter().collect::<Vec<_>>(),
        [format!("{}; better-auth.session_data=xyz", c()).as_str()]
    );
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9");
    assert_eq!(seen["user-agent"], "Mozilla/5.0 test");
    assert_eq!(seen["accept"], "application/json");

    // Through HTTP the client address is the last X-Forwarded-For entry (the proxy's own).
    let session = c();
    service
        .auth(&[
            ("x-original-uri", "/api/u1/tasks"),
            ("x-forwarded-for", "10.9.9.9, 198.51.100.4"),
            ("cookie", &session),
        ])
        .await;
    assert_eq!(stand_in.last_seen()["x-forwarded-for"], "198.51.100.4");
}

#[tokio::test]
async fn commas_in_envoys_joined_cookie_header_separate_nothing() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let session = c();
    // Envoy's `headers` map joins two Cookie lines with ','. Better Auth splits on ';' only,
    // so `theme=dark,better-auth.session_token=…` is one cookie named `theme`: no session,
    // and Better Auth is not asked.
    let headers = [("cookie", "theme=dark"), ("cookie", session.as_str())];
    let a = service.check("GET", "/api/u1/tasks", &headers).await;
    assert_eq!(a.http_status, 401);
    assert_eq!(a.error_code(), "SESSION_REQUIRED");
    assert_eq!(stand_in.calls(), 0);
    // The same pair separated by ';' is a session.
    let joined = format!("theme=dark; {session}");
    let a = service
        .check("GET", "/api/u1/tasks", &[("cookie", joined.as_str())])
        .await;
    assert_eq!(a.http_status, 200);
    assert_eq!(stand_in.last_seen()["cookie"], session.as_str());
}

#[tokio::test]
async fn raw_header_map_is_read_when_headers_is_empty() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    // A check of /api/u1/tasks whose headers come in `header_map` only, as raw bytes.
    let raw = |headers: &[(&str, &[u8])]| envoy_raw_check("GET", "/api/u1/tasks", headers);
    let session = c();
    let a = service
        .send(raw(&[
            ("cookie", b"theme=dark"),
            ("Cookie", session.as_bytes()),
        ]))
        .await;
    assert_eq!((a.http_status, a.header("x-user-id")), (200, Some("u1")));

    // Non-UTF-8 bytes in the session cookie: refused, Better Auth not asked.
    let before = stand_in.calls();
    let a = service
        .send(raw(&[("cookie", b"better-auth.session_token=a.b\xff\xfe")]))
        .await;
    assert_eq!((a.http_status, a.error_code()), (401, "SESSION_INVALID"));
    assert_eq!(stand_in.calls(), before);
}

#[tokio::test]
async fn without_an_original_request_is_a_400_counted_like_every_decision() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let a = service.auth(&[("cookie", &c())]).await;
    assert_eq!((a.status, a.error_code().as_str()), (400, "BAD_REQUEST"));
    assert_eq!(stand_in.calls(), 0);

    // gRPC without attributes.request.http is a BAD_REQUEST decision, still an OK response.
    let a = service.send(Default::default()).await;
    assert_eq!((a.http_status, a.error_code()), (400, "BAD_REQUEST"));

    // The core decided both: each is counted, with its detail.
    let text = service.metrics().await;
    for transport in ["grpc", "http"] {
        let series = format!(
            r#"better_authz_decisions_total{{decision="deny",reason="BAD_REQUEST",transport="{transport}"}}"#
        );
        assert_eq!(metric(&text, &series), 1.0, "{transport}");
    }
    let detail = r#"better_authz_deny_details_total{detail="missing_original_uri"}"#;
    assert_eq!(metric(&text, detail), 2.0);
}

#[tokio::test]
async fn both_transports_take_the_last_forwarded_for_entry() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let session = c();
    let seen = || {
        stand_in.last_seen()["x-forwarded-for"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Without Envoy's source address the gRPC adapter falls back to X-Forwarded-For.
    let no_source = |mut check: envoy_types::ext_authz::v3::pb::CheckRequest| {
        check.attributes.as_mut().unwrap().source = None;
        check
    };

    // gRPC, two raw header lines: the last entry of the last line.
    let xff: [(&str, &[u8]); 3] = [
        ("x-forwarded-for", b"10.0.0.1, 10.0.0.2"),
        ("x-forwarded-for", b"198.51.100.4"),
        ("cookie", session.as_bytes()),
    ];
    let check = envoy_raw_check("GET", "/api/u1/tasks", &xff);
    service.send(no_source(check)).await;
    assert_eq!(seen(), "198.51.100.4");

    // gRPC, Envoy's joined map: the same.
    let xff = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "198.51.100.5"),
        ("cookie", session.as_str()),
    ];
    let check = envoy_check("GET", "/api/u1/tasks", &xff);
    service.send(no_source(check)).await;
    assert_eq!(seen(), "198.51.100.5");

    // HTTP, two header lines: the same.
    service
        .auth(&[
            ("x-original-uri", "/api/u1/tasks"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2, 198.51.100.6"),
            ("cookie", &session),
        ])
        .await;
    assert_eq!(seen(), "198.51.100.6");
}

#[tokio::test]
async fn ingress_nginx_and_traefik_headers_name_the_original_request() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let cases = [
        (
            "x-original-url",
            "https://app.example/api/u2/tasks?a=1",
            "x-original-method",
            403,
        ),
        (
            "x-original-url",
            "https://app.example/api/u1/tasks",
            "x-original-method",
            200,
        ),
        (
            "x-forwarded-uri",
            "/api/u2/tasks",
            "x-forwarded-method",
            403,
        ),
        (
            "x-forwarded-uri",
            "/api/u1/tasks",
            "x-forwarded-method",
            200,
        ),
    ];
    let session = c();
    for (uri_header, uri, method_header, status) in cases {
        let headers = [
            (uri_header, uri),
            (method_header, "GET"),
            ("cookie", &session),
        ];
        let a = service.auth_with(reqwest::Method::POST, &headers).await;
        assert_eq!(a.status, status, "{uri_header}: {uri}");
    }
}

#[tokio::test]
async fn cookie_header_over_the_limit_is_refused_without_a_call() {
    let big = format!("{}; pad={}", c(), "x".repeat(20 * 1024));
    check_both(
        valid("u1"),
        "GET",
        "/api/u1/tasks",
        Some(&big),
        deny(431, "HEADERS_TOO_LARGE", 0),
    )
    .await;
}

#[tokio::test]
async fn readiness_follows_better_auth_and_shutdown() {
    let stand_in = StandIn::start(valid("u1")).await;
    let mut service = Service::start(base_args(&stand_in.url())).await;
    wait_ready(&service).await;
    assert_eq!(
        service.metric("better_authz_ready").await,
        1.0,
        "ready gauge"
    );
    let client = reqwest::Client::new();
    let healthz = client
        .get(service.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    service.stop().await.unwrap();
    // After shutdown the admin listener is closed.
    assert!(
        client
            .get(service.admin_url("/healthz"))
            .send()
            .await
            .is_err()
    );

    // Never ready while Better Auth's /ok fails.
    *stand_in.state.ok_status.lock().unwrap() = 503;
    let service = Service::start(base_args(&stand_in.url())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readyz = client
        .get(service.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(
        service.metric("better_authz_ready").await,
        0.0,
        "ready gauge"
    );
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let mut health = HealthClient::new(service.grpc_channel().await);
    for name in ["", "envoy.service.auth.v3.Authorization"] {
        let resp = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, 1, "SERVING for {name:?}");
    }
}

#[tokio::test]
async fn another_method_of_the_service_is_unimplemented() {
    use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let mut grpc = tonic::client::Grpc::new(service.grpc_channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Report");
    let answer = grpc
        .unary(tonic::Request::new(CheckRequest::default()), path, codec)
        .await;
    assert_eq!(
        answer.map(|_| ()).unwrap_err().code(),
        tonic::Code::Unimplemented
    );
    assert_eq!(stand_in.calls(), 0);
}

#[tokio::test]
async fn in_flight_checks_finish_on_shutdown() {
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_millis(300),
        Box::new(valid("u1")),
    ))
    .await;
    let mut service = Service::start(args_for(&stand_in, |_| {})).await;
    let mut client = service.grpc_client().await;
    let session = c();
    let in_flight = tokio::spawn(async move {
        let headers = [("cookie", session.as_str())];
        client
            .check(envoy_check("GET", "/api/u1/tasks", &headers))
            .await
    });
    // Let the check reach the stand-in, then ask the service to stop.
    for _ in 0..100 {
        if stand_in.calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.stop().await.unwrap();
    let a = flatten(
        in_flight
            .await
            .unwrap()
            .expect("answered, not cut off")
            .into_inner(),
    );
    assert_eq!((a.http_status, a.header("x-user-id")), (200, Some("u1")));
}

#[tokio::test]
async fn metrics_count_decisions_by_reason() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(base_args(&stand_in.url())).await;
    let session = c();
    let with: &[(&str, &str)] = &[("cookie", &session)];
    for (path, headers) in [
        ("/api/u1/tasks", with),
        ("/api/u1/tasks", with),
        ("/api/u2/tasks", with),
        ("/api/u1/tasks", &[]),
    ] {
        service.check("GET", path, headers).await;
    }
    service.auth(&[("x-original-uri", "/api/auth/ok")]).await;
    let text = service.metrics().await;
    for (labels, want) in [
        (
            r#"decision="allow",reason="SESSION_VALID",transport="grpc""#,
            2.0,
        ),
        (
            r#"decision="deny",reason="USER_MISMATCH",transport="grpc""#,
            1.0,
        ),
        (
            r#"decision="deny",reason="SESSION_REQUIRED",transport="grpc""#,
            1.0,
        ),
        (
            r#"decision="allow",reason="PUBLIC_PATH",transport="http""#,
            1.0,
        ),
        (
            r#"decision="deny",reason="AUTH_UNAVAILABLE",transport="grpc""#,
            0.0,
        ),
    ] {
        let series = format!("better_authz_decisions_total{{{labels}}}");
        assert_eq!(metric(&text, &series), want, "{series}");
    }
    assert!(
        text.contains(
            "better_authz_better_auth_request_duration_seconds_count{outcome=\"valid\"} 3"
        )
    );
    assert!(text.contains("better_authz_check_duration_seconds_bucket"));
    assert!(text.contains("better_authz_build_info{version="));
    assert!(text.contains("better_authz_better_auth_inflight 0"));
    for process in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(text.contains(process), "{process} missing");
    }
    assert!(
        !text.contains(TOKEN) && !text.contains("u1"),
        "no token or user id in labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_reports_not_serving_while_still_answering() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let stand_in = StandIn::start(valid("u1")).await;
    let mut args = base_args(&stand_in.url());
    args.shutdown_delay_ms = Some("1500".into());
    let mut service = Service::start(args).await;
    wait_ready(&service).await;
    let mut grpc = service.grpc_client().await;
    let mut health = HealthClient::new(service.grpc_channel().await);
    let admin = service.admin_url("/readyz");

    let stopping = tokio::spawn(async move { service.stop().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // During the delay: not ready, NOT_SERVING, yet checks are still answered.
    let readyz = reqwest::get(&admin).await.unwrap();
    assert_eq!(readyz.status(), 503);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 2, "NOT_SERVING");
    let session = c();
    let a = flatten(
        grpc.check(envoy_check(
            "GET",
            "/api/u1/tasks",
            &[("cookie", session.as_str())],
        ))
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(a.http_status, 200);
    drop(grpc);
    drop(health);
    stopping.await.unwrap().unwrap();
}
