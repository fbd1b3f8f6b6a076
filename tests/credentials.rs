//! Bearer tokens and API keys beside the session cookie, through both transports, against a
//! **stand-in Better Auth** that records what it receives and answers what the real plugins
//! answer (statuses and bodies as observed on better-auth 1.7.25 and @better-auth/api-key
//! 1.7.5): `set-auth-token` on a bearer refresh, 403/401 for a bad key, the key's own 429 with
//! `details.tryAgainIn` (milliseconds), Better Auth's global 429 with `X-Retry-After`.

mod support;

use better_authz::config::Args;
use support::*;

const BEARER: &str = "Zx9TokenValue42.c2lnbmF0dXJlLXZhbHVl+x=";
const KEY: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNMqwertyuiopas";

fn all_credentials(a: &mut Args) {
    a.credentials = Some("cookie,bearer,api-key".into());
}

/// A valid answer carrying `set-auth-token` and a refreshed session cookie.
fn refreshed(user: &str) -> Behavior {
    let Behavior::Json(body) = valid_user(user, "u1@example.com", "U One") else {
        unreachable!()
    };
    Behavior::Answer {
        status: 200,
        body,
        headers: vec![
            ("set-auth-token".into(), "Refreshed.token+sig=".into()),
            (
                "set-cookie".into(),
                "better-auth.session_token=new.sig; Max-Age=604800".into(),
            ),
        ],
    }
}

fn answer(status: u16, body: &str, headers: &[(&str, &str)]) -> Behavior {
    Behavior::Answer {
        status,
        body: body.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[tokio::test]
async fn by_default_only_the_cookie_is_read() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(args_for(&stand_in, |_| {})).await;
    let bearer = format!("Bearer {BEARER}");
    let a = service
        .check("GET", "/api/u1/tasks", &[("authorization", &bearer)])
        .await;
    assert_eq!((a.http_status, a.error_code()), (401, "SESSION_REQUIRED"));
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("x-api-key", KEY)])
        .await;
    assert_eq!(
        (h.status, h.error_code().as_str()),
        (401, "SESSION_REQUIRED")
    );
    assert_eq!(stand_in.calls(), 0, "Better Auth is not asked");
}

#[tokio::test]
async fn a_bearer_token_is_forwarded_alone_and_gets_its_refreshed_token_back() {
    let stand_in = StandIn::start(refreshed("u1")).await;
    let service = Service::start(args_for(&stand_in, all_credentials)).await;
    let bearer = format!("Bearer {BEARER}");
    // Authorization comes before any other credential here only because the cookie is absent.
    let headers = [("authorization", bearer.as_str()), ("cookie", "theme=dark")];
    let a = service.check("GET", "/api/u1/tasks", &headers).await;
    assert_eq!((a.http_status, a.header("x-user-id")), (200, Some("u1")));
    let seen = stand_in.last_seen();
    assert_eq!(seen["authorization"], bearer.as_str());
    assert!(seen.get("cookie").is_none() && seen.get("x-api-key").is_none());
    assert_eq!(
        a.client,
        [(
            "set-auth-token".to_owned(),
            "Refreshed.token+sig=".to_owned()
        )]
    );
    assert!(
        a.cookies.is_empty(),
        "a bearer client gets no session cookie"
    );

    let h = service
        .auth(&[
            ("x-original-uri", "/api/u1/tasks"),
            ("authorization", &format!("bearer {BEARER}")),
        ])
        .await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("set-auth-token"), Some("Refreshed.token+sig="));
    assert!(h.all("set-cookie").is_empty());
}

#[tokio::test]
async fn cookie_and_api_key_clients_never_get_the_token() {
    let stand_in = StandIn::start(refreshed("u1")).await;
    let service = Service::start(args_for(&stand_in, all_credentials)).await;
    let cookie = session_cookie();
    let a = service
        .check("GET", "/api/u1/tasks", &[("cookie", &cookie)])
        .await;
    assert_eq!(a.http_status, 200);
    assert!(a.client.is_empty(), "{:?}", a.client);
    assert_eq!(
        a.cookies.len(),
        1,
        "the cookie client's refresh still arrives"
    );

    let a = service
        .check("GET", "/api/u1/tasks", &[("x-api-key", KEY)])
        .await;
    assert_eq!(a.http_status, 200);
    assert!(a.client.is_empty() && a.cookies.is_empty());
    let seen = stand_in.last_seen();
    assert_eq!(seen["x-api-key"], KEY);
    assert!(seen.get("cookie").is_none() && seen.get("authorization").is_none());

    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("x-api-key", KEY)])
        .await;
    assert_eq!((h.status, h.header("set-auth-token")), (200, None));
}

#[tokio::test]
async fn better_auths_answers_to_keys_map_to_decisions() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(args_for(&stand_in, all_credentials)).await;
    let key_limited =
        r#"{"message":"Rate limit exceeded.","code":"RATE_LIMITED","details":{"tryAgainIn":9998}}"#;
    let global = r#"{"message":"Too many requests. Please try again later."}"#;
    let cases = [
        (
            answer(403, r#"{"code":"INVALID_API_KEY"}"#, &[]),
            401,
            "SESSION_INVALID",
            None,
        ),
        (
            answer(401, r#"{"code":"KEY_DISABLED"}"#, &[]),
            401,
            "SESSION_INVALID",
            None,
        ),
        (
            answer(401, r#"{"code":"KEY_EXPIRED"}"#, &[]),
            401,
            "SESSION_INVALID",
            None,
        ),
        (
            answer(429, key_limited, &[]),
            429,
            "RATE_LIMITED",
            Some("10"),
        ),
        (
            answer(429, r#"{"code":"USAGE_EXCEEDED"}"#, &[]),
            429,
            "RATE_LIMITED",
            None,
        ),
        (
            answer(429, global, &[("x-retry-after", "10")]),
            503,
            "AUTH_UNAVAILABLE",
            None,
        ),
    ];
    for (behavior, status, code, retry_after) in cases {
        stand_in.set(behavior.clone());
        let a = service
            .check("GET", "/api/u1/tasks", &[("x-api-key", KEY)])
            .await;
        assert_eq!(
            (a.http_status, a.error_code()),
            (status as i32, code),
            "{behavior:?}"
        );
        assert_eq!(a.header("retry-after"), retry_after, "grpc {behavior:?}");
        let h = service
            .auth(&[("x-original-uri", "/api/u1/tasks"), ("x-api-key", KEY)])
            .await;
        assert_eq!((h.status, h.error_code().as_str()), (status, code));
        assert_eq!(h.header("retry-after"), retry_after, "http {behavior:?}");
    }

    // A 403 or a 429 with a code is the API-key plugin's answer to a key: to a bearer token it
    // is no session answer, and Better Auth's limiter stays "unavailable" for everyone.
    let bearer = format!("Bearer {BEARER}");
    for (behavior, status, code) in [
        (answer(429, key_limited, &[]), 503, "AUTH_UNAVAILABLE"),
        (answer(403, "null", &[]), 500, "AUTH_ERROR"),
    ] {
        stand_in.set(behavior);
        let a = service
            .check("GET", "/api/u1/tasks", &[("authorization", &bearer)])
            .await;
        assert_eq!((a.http_status, a.error_code()), (status, code));
    }
}

#[tokio::test]
async fn malformed_credentials_are_refused_without_asking() {
    let stand_in = StandIn::start(valid("u1")).await;
    let service = Service::start(args_for(&stand_in, all_credentials)).await;
    let long = format!("Bearer {}", "a".repeat(1025));
    for headers in [
        vec![("authorization", long.as_str())],
        vec![("authorization", "Bearer a b")],
        vec![("x-api-key", "a key with spaces")],
    ] {
        let a = service.check("GET", "/api/u1/tasks", &headers).await;
        assert_eq!(
            (a.http_status, a.error_code()),
            (401, "SESSION_INVALID"),
            "{headers:?}"
        );
    }
    assert_eq!(stand_in.calls(), 0);
}

#[tokio::test]
async fn api_key_lookups_are_neither_cached_nor_shared_unless_asked() {
    let stand_in = StandIn::start(valid("u1")).await;
    let cached = |a: &mut Args| {
        all_credentials(a);
        a.cache_ttl_ms = Some("60000".into());
    };
    let service = Service::start(args_for(&stand_in, cached)).await;
    for _ in 0..3 {
        service
            .check("GET", "/api/u1/tasks", &[("x-api-key", KEY)])
            .await;
    }
    assert_eq!(
        stand_in.calls(),
        3,
        "each check counts against the key's quota"
    );
    let bearer = format!("Bearer {BEARER}");
    for _ in 0..3 {
        service
            .check("GET", "/api/u1/tasks", &[("authorization", &bearer)])
            .await;
    }
    assert_eq!(stand_in.calls(), 4, "bearer tokens are cached like cookies");

    let both = |a: &mut Args| {
        cached(a);
        a.cache_api_keys = Some("true".into());
    };
    let service = Service::start(args_for(&stand_in, both)).await;
    for _ in 0..3 {
        service
            .check("GET", "/api/u1/tasks", &[("x-api-key", KEY)])
            .await;
    }
    assert_eq!(stand_in.calls(), 5, "AUTHZ_CACHE_API_KEYS=true caches keys");
}

#[tokio::test]
async fn the_api_key_header_is_configurable() {
    let stand_in = StandIn::start(valid("u1")).await;
    let custom = |a: &mut Args| {
        a.credentials = Some("api-key".into());
        a.api_key_header = Some("X-Custom-Key".into());
    };
    let service = Service::start(args_for(&stand_in, custom)).await;
    let a = service
        .check("GET", "/api/u1/tasks", &[("x-api-key", KEY)])
        .await;
    assert_eq!(a.http_status, 401, "the default header is not read");
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("x-custom-key", KEY)])
        .await;
    assert_eq!(h.status, 200);
    assert_eq!(stand_in.last_seen()["x-custom-key"], KEY);
}
