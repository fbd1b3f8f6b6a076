//! Regression tests for the bypasses an adversarial review found, with the real service
//! in-process and a **stand-in Better Auth** (counting its calls): servlet path parameters,
//! forged forwarded-request headers on `/auth`, replayable `/auth` answers, cache keys minted by
//! junk cookies and unbounded identity values, cookies split on `,`, listeners turned off.

mod support;

use better_authz::config::Config;
use better_authz::{Listeners, run};
use support::*;

const OWN: &str = "u1";

/// `/auth` with the session cookie and these headers: status, error code, Cache-Control.
async fn via_http(service: &Service, headers: &[(&str, &str)]) -> (u16, String, String) {
    let session = session_cookie();
    let mut all = vec![("cookie", session.as_str())];
    all.extend_from_slice(headers);
    let a = service.auth(&all).await;
    let header = |name| a.header(name).unwrap_or_default().to_owned();
    (
        a.status,
        header("x-authz-error-code"),
        header("cache-control"),
    )
}

// ---- 1. `;` path parameters, as servlet containers route them

#[tokio::test]
async fn servlet_parameters_never_reach_another_users_path() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    let cases: &[(&str, u16, &str)] = &[
        ("/api;x=1/u2/tasks", 403, "USER_MISMATCH"),
        ("/;x/api/u2/tasks", 403, "USER_MISMATCH"),
        ("/api;/u2/tasks", 403, "USER_MISMATCH"),
        ("/API;x/u2/tasks", 403, "USER_MISMATCH"),
        ("/api/u2;x/tasks", 403, "USER_MISMATCH"),
        ("/api/;x/u2/tasks", 403, "USER_MISMATCH"),
        ("/x;y/../api/u2/tasks", 403, "USER_MISMATCH"),
        // The literal reading names `u1;x`, which is not the caller either.
        ("/api/u1;x/tasks", 403, "USER_MISMATCH"),
        // An encoded `;` is refused: servers disagree on it.
        ("/api%3Bx/u2/tasks", 400, "BAD_REQUEST"),
        ("/api/u2%3b/tasks", 400, "BAD_REQUEST"),
        ("/%3B/api/u2/tasks", 400, "BAD_REQUEST"),
        ("/api/u2/..;/u1", 400, "BAD_REQUEST"),
        // Parameters that change nothing in either reading.
        ("/api/u1/tasks;jsessionid=1", 200, ""),
        ("/api/u1/tasks?x=;", 200, ""),
    ];
    for (path, status, code) in cases {
        let a = service
            .check("GET", path, &[("cookie", session_cookie().as_str())])
            .await;
        assert_eq!(a.http_status, i32::from(*status), "grpc {path}");
        if *status != 200 {
            assert_eq!(a.error_code(), *code, "grpc {path}");
        }
        for header in ["x-original-uri", "x-forwarded-uri"] {
            let (s, c, _) = via_http(&service, &[(header, path)]).await;
            assert_eq!((s, c.as_str()), (*status, *code), "http {header} {path}");
        }
        let url = format!("https://app.example{path}");
        let (s, c, _) = via_http(&service, &[("x-original-url", &url)]).await;
        assert_eq!(
            (s, c.as_str()),
            (*status, *code),
            "http x-original-url {path}"
        );
    }
}

#[tokio::test]
async fn public_prefixes_hold_in_both_readings() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    for (path, status) in [
        ("/api/auth/get-session", 200),
        ("/api/auth/x;jsessionid=1", 200),
        // Public to a servlet container, not to Envoy, nginx or Starlette: not public.
        ("/api;x/auth/get-session", 401),
        ("/api/auth;x/get-session", 401),
        ("/;x/api/auth/get-session", 401),
    ] {
        // No cookie: only a public path is allowed.
        let a = service.check("GET", path, &[]).await;
        assert_eq!(a.http_status, status, "grpc {path}");
        if status == 401 {
            assert_eq!(a.error_code(), "SESSION_REQUIRED", "grpc {path}");
        }
    }
    // With a session, a path that is not public in both readings is still judged by the
    // user rule: `/api;x/auth/..` reads as `/api/auth/..` to a servlet, so no user segment.
    let a = service
        .check(
            "GET",
            "/api;x/u2/tasks",
            &[("cookie", session_cookie().as_str())],
        )
        .await;
    assert_eq!(a.error_code(), "USER_MISMATCH");
}

// ---- 2. The headers naming the original request on `/auth`

#[tokio::test]
async fn each_proxy_mode_trusts_its_own_headers_only() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let own = "/api/u1/tasks";
    let other = "/api/u2/tasks";
    let public = "/api/auth/x";
    let own_url = "https://app.example/api/u1/tasks";
    let other_url = "https://app.example/api/u2/tasks";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        // auto: one header, any of the three.
        (
            "auto",
            vec![("x-original-uri", other)],
            403,
            "USER_MISMATCH",
        ),
        (
            "auto",
            vec![("x-original-url", other_url)],
            403,
            "USER_MISMATCH",
        ),
        ("auto", vec![("x-forwarded-uri", own)], 200, ""),
        // auto: several that agree are fine; that disagree, or repeat, are a 400.
        (
            "auto",
            vec![("x-original-uri", own), ("x-original-url", own_url)],
            200,
            "",
        ),
        (
            "auto",
            vec![("x-original-uri", public), ("x-original-url", other_url)],
            400,
            "BAD_REQUEST",
        ),
        (
            "auto",
            vec![("x-forwarded-uri", public), ("x-original-uri", other)],
            400,
            "BAD_REQUEST",
        ),
        // A header repeated with the same value names the same request; with another, not.
        (
            "auto",
            vec![("x-original-uri", own), ("x-original-uri", own)],
            200,
            "",
        ),
        (
            "auto",
            vec![("x-original-uri", own), ("x-original-uri", other)],
            400,
            "BAD_REQUEST",
        ),
        (
            "auto",
            vec![
                ("x-original-uri", own),
                ("x-original-method", "GET"),
                ("x-forwarded-method", "OPTIONS"),
            ],
            400,
            "BAD_REQUEST",
        ),
        (
            "auto",
            vec![
                ("x-original-url", own_url),
                ("x-forwarded-host", "evil.example"),
            ],
            400,
            "BAD_REQUEST",
        ),
        (
            "auto",
            vec![
                ("x-original-url", own_url),
                ("x-forwarded-host", "APP.example:443"),
            ],
            200,
            "",
        ),
        // nginx: X-Original-URI only; a client's X-Forwarded-Uri is not read.
        (
            "nginx",
            vec![("x-original-uri", other), ("x-forwarded-uri", public)],
            403,
            "USER_MISMATCH",
        ),
        (
            "nginx",
            vec![("x-forwarded-uri", public)],
            400,
            "BAD_REQUEST",
        ),
        (
            "nginx",
            vec![("x-original-uri", other), ("x-original-uri", public)],
            400,
            "BAD_REQUEST",
        ),
        // ingress-nginx: X-Original-URL only; a client's own X-Original-URI is not read.
        (
            "ingress-nginx",
            vec![("x-original-url", other_url), ("x-original-uri", public)],
            403,
            "USER_MISMATCH",
        ),
        (
            "ingress-nginx",
            vec![
                ("x-original-url", own_url),
                ("x-forwarded-host", "evil.example"),
            ],
            200,
            "",
        ),
        (
            "ingress-nginx",
            vec![("x-original-uri", own)],
            400,
            "BAD_REQUEST",
        ),
        // traefik: X-Forwarded-Uri only.
        (
            "traefik",
            vec![("x-forwarded-uri", other), ("x-original-uri", public)],
            403,
            "USER_MISMATCH",
        ),
        (
            "traefik",
            vec![("x-forwarded-uri", own), ("x-original-method", "OPTIONS")],
            200,
            "",
        ),
        ("traefik", vec![("x-original-uri", own)], 400, "BAD_REQUEST"),
    ];
    for mode in ["auto", "nginx", "ingress-nginx", "traefik"] {
        let service =
            Service::start(args_for(&stand_in, |a| a.forward_auth = Some(mode.into()))).await;
        for (m, headers, status, code) in cases.iter().filter(|c| c.0 == mode) {
            let (s, c, _) = via_http(&service, headers).await;
            assert_eq!((s, c.as_str()), (*status, *code), "{m}: {headers:?}");
        }
    }
}

#[tokio::test]
async fn a_forged_preflight_method_is_not_a_preflight() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let forged = [
        ("x-forwarded-uri", "/api/u2/tasks"),
        ("x-forwarded-method", "GET"),
        ("x-original-method", "OPTIONS"),
        ("origin", "https://evil.example"),
        ("access-control-request-method", "GET"),
    ];
    // Traefik sets X-Forwarded-Method itself; the client's X-Original-Method is not read.
    let service = Service::start(args_for(&stand_in, |a| {
        a.forward_auth = Some("traefik".into())
    }))
    .await;
    let status = service.auth(&forged).await.status;
    assert_eq!(status, 401, "no cookie, not a preflight");
    // In auto, the two method headers disagree.
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    assert_eq!(service.auth(&forged).await.status, 400);
    let text = service.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"better_authz_deny_details_total{detail="conflicting_forwarded_headers"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"better_authz_decisions_total{decision="deny",reason="BAD_REQUEST",transport="http"}"#
        ),
        1.0
    );
    assert_eq!(stand_in.calls(), 0);
}

// ---- 3. `/auth` answers are never stored

#[tokio::test]
async fn every_auth_answer_is_no_store() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    for (headers, status) in [
        (vec![("x-original-uri", "/api/u1/tasks")], 200),
        (vec![("x-original-uri", "/api/auth/ok")], 200),
        (vec![("x-original-uri", "/api/u2/tasks")], 403),
        (vec![("x-original-uri", "/a/%2f")], 400),
        (vec![], 400),
    ] {
        let (s, _, cache) = via_http(&service, &headers).await;
        assert_eq!(s, status, "{headers:?}");
        assert_eq!(cache, "no-store", "{headers:?}");
    }
    let a = service.auth(&[("x-original-uri", "/api/u1/tasks")]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("cache-control"), Some("no-store"));
}

// ---- 4. The cache: keys from session cookies only, bounded by bytes; identity values capped

#[tokio::test]
async fn junk_cookies_do_not_mint_cache_keys() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let service = Service::start(args_for(&stand_in, |a| {
        a.cache_ttl_ms = Some("60000".into());
    }))
    .await;
    for i in 0..200 {
        let cookie = format!(
            "{}; better-auth.junk{i}={}; better-auth.dont_remember=x{i}",
            session_cookie(),
            "j".repeat(100)
        );
        let a = service
            .check("GET", "/api/u1/tasks", &[("cookie", cookie.as_str())])
            .await;
        assert_eq!(a.http_status, 200);
    }
    let text = service.metrics().await;
    assert_eq!(metric(&text, "better_authz_cache_entries"), 1.0);
    assert_eq!(stand_in.calls(), 1, "one session, one call");
    // A different session_data chunk is a different answer: its own key.
    let cookie = format!("{}; better-auth.session_data.0=abc", session_cookie());
    service
        .check("GET", "/api/u1/tasks", &[("cookie", cookie.as_str())])
        .await;
    assert_eq!(stand_in.calls(), 2);
}

#[tokio::test]
async fn cache_is_bounded_by_bytes() {
    // Every user has a 2 KiB name (over the identity cap, still held by the cache).
    let name = "n".repeat(2048);
    let stand_in = StandIn::start(valid_user(OWN, "u1@example.com", &name)).await;
    let max_bytes: u64 = 64 * 1024;
    let service = Service::start(args_for(&stand_in, |a| {
        a.cache_ttl_ms = Some("60000".into());
        a.cache_max_bytes = Some(max_bytes.to_string());
    }))
    .await;
    for i in 0..200 {
        let cookie = cookie_for(i);
        let a = service
            .check("GET", "/api/u1/tasks", &[("cookie", cookie.as_str())])
            .await;
        assert_eq!(a.http_status, 200);
    }
    let text = service.metrics().await;
    let bytes = metric(&text, "better_authz_cache_bytes");
    let entries = metric(&text, "better_authz_cache_entries");
    assert!(bytes > 0.0 && bytes <= max_bytes as f64, "bytes {bytes}");
    // 2 KiB names: far fewer than the 10 000 entries allowed.
    assert!((1.0..=32.0).contains(&entries), "entries {entries}");
}

#[tokio::test]
async fn identity_values_over_the_cap_are_dropped_and_a_long_id_denies() {
    let long = "n".repeat(2000);
    let email = format!("{long}@example.com");
    let stand_in = StandIn::start(valid_user(OWN, &email, &long)).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    let a = service
        .check(
            "GET",
            "/api/u1/tasks",
            &[
                ("cookie", session_cookie().as_str()),
                ("x-user-name", "spoofed"),
            ],
        )
        .await;
    assert_eq!(a.http_status, 200);
    assert_eq!(a.header("x-user-id"), Some(OWN));
    assert_eq!(a.header("x-user-name"), None);
    assert_eq!(a.header("x-user-email"), None);
    assert!(a.removed.iter().any(|h| h == "x-user-name"));
    assert!(a.removed.iter().any(|h| h == "x-user-email"));
    let text = service.metrics().await;
    assert_eq!(
        metric(&text, "better_authz_identity_headers_dropped_total"),
        2.0
    );

    let long_id = "u".repeat(1025);
    stand_in.set(valid_user(&long_id, "a@example.com", "A"));
    let a = service
        .check("GET", "/x", &[("cookie", session_cookie().as_str())])
        .await;
    assert_eq!((a.http_status, a.error_code()), (500, "AUTH_ERROR"));
}

// ---- 6. Listeners can be turned off

#[tokio::test]
async fn a_listener_turned_off_is_not_bound() {
    let stand_in = StandIn::start(valid(OWN)).await;
    let mut a = args_for(&stand_in, |_| {});
    a.http_addr = Some("off".into());
    let config = Config::from_args(&a).unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let addrs = listeners.addrs().unwrap();
    assert!(addrs.http.is_none());
    let grpc = addrs.grpc.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(config, listeners, async {
        let _ = stopped.await;
    }));
    // The gRPC listener answers checks.
    let session = session_cookie();
    let check = envoy_check("GET", "/api/u1/tasks", &[("cookie", session.as_str())]);
    assert_eq!(send_to(grpc, check).await.http_status, 200);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
