//! What the back end receives beyond the identity headers, against a **stand-in Better Auth**:
//! the `jwt` plugin's token (`AUTHZ_HEADER_JWT`), fields of the answer as headers
//! (`AUTHZ_HEADER_MAP`), and the credentials removed (`AUTHZ_STRIP_CREDENTIALS`).

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use better_authz::config::Args;
use support::*;

const BEARER: &str = "Zx9TokenValue42.c2lnbmF0dXJlLXZhbHVl+x=";

/// A JWT-shaped token expiring `exp_in` seconds from now (Better Auth signs the real one; the
/// service reads only `exp`).
fn jwt(exp_in: i64) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + exp_in;
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"u1","exp":{exp}}}"#));
    format!("eyJhbGciOiJFZERTQSJ9.{claims}.c2lnbmF0dXJl")
}

/// A valid session for u1 with a role, an active organization, and `set-auth-jwt`.
fn session_with_jwt(token: &str) -> Behavior {
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = serde_json::json!({
        "session": {"id": "s1", "userId": "u1", "token": TOKEN, "expiresAt": expires,
                    "activeOrganizationId": "org-7", "impersonatedBy": null},
        "user": {"id": "u1", "email": "u1@example.com", "name": "U One", "role": "admin,user",
                 "tags": ["a", "b"]},
    });
    Behavior::Answer {
        status: 200,
        body: body.to_string(),
        headers: vec![("set-auth-jwt".into(), token.into())],
    }
}

fn set(a: &Answer, name: &str) -> Option<String> {
    a.header(name).map(str::to_owned)
}

#[tokio::test]
async fn the_jwt_reaches_the_back_end_and_never_the_client() {
    let token = jwt(900);
    let stand_in = StandIn::start(session_with_jwt(&token)).await;
    let with_jwt = |a: &mut Args| a.header_jwt = Some("x-user-jwt".into());
    let service = Service::start(args_for(&stand_in, with_jwt)).await;
    let cookie = session_cookie();
    let sent = [("cookie", cookie.as_str()), ("x-user-jwt", "forged")];
    let a = service.check("GET", "/api/u1/tasks", &sent).await;
    assert_eq!(set(&a, "x-user-jwt"), Some(token.clone()));
    assert!(a.client.iter().all(|(_, v)| !v.contains(&token)));
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("cookie", &cookie)])
        .await;
    assert_eq!(
        h.header("x-user-jwt"),
        Some(token.as_str()),
        "for nginx to copy"
    );

    // An allow without a session removes a client-sent copy.
    let a = service
        .check("GET", "/api/auth/ok", &[("x-user-jwt", "forged")])
        .await;
    assert!(
        a.removed.iter().any(|r| r == "x-user-jwt"),
        "{:?}",
        a.removed
    );

    // No JWT in the answer: removed, not left as the client sent it.
    stand_in.set(valid("u1"));
    let a = service.check("GET", "/api/u1/tasks", &sent).await;
    assert_eq!(set(&a, "x-user-jwt"), None);
    assert!(a.removed.iter().any(|r| r == "x-user-jwt"));
}

#[tokio::test]
async fn the_jwt_may_replace_the_bearer_token() {
    let token = jwt(900);
    let stand_in = StandIn::start(session_with_jwt(&token)).await;
    let change = |a: &mut Args| {
        a.credentials = Some("bearer".into());
        a.header_jwt = Some("Authorization".into());
        a.strip_credentials = Some("true".into());
    };
    let service = Service::start(args_for(&stand_in, change)).await;
    let bearer = format!("Bearer {BEARER}");
    let a = service
        .check("GET", "/api/u1/tasks", &[("authorization", &bearer)])
        .await;
    assert_eq!(set(&a, "authorization"), Some(format!("Bearer {token}")));
    assert!(!a.removed.iter().any(|r| r == "authorization"));
}

#[tokio::test]
async fn an_expired_jwt_is_never_served_from_the_cache() {
    let cached = |a: &mut Args| {
        a.header_jwt = Some("x-user-jwt".into());
        a.cache_ttl_ms = Some("60000".into());
    };
    let cookie = session_cookie();
    let fresh = jwt(900);
    let stand_in = StandIn::start(session_with_jwt(&fresh)).await;
    let service = Service::start(args_for(&stand_in, cached)).await;
    for _ in 0..3 {
        let a = service
            .check("GET", "/api/u1/tasks", &[("cookie", &cookie)])
            .await;
        assert_eq!(set(&a, "x-user-jwt"), Some(fresh.clone()));
    }
    assert_eq!(
        stand_in.calls(),
        1,
        "a fresh JWT is cached with its session"
    );

    // Expired on arrival: never cached, every check asks again.
    let stale = jwt(-1);
    let stand_in = StandIn::start(session_with_jwt(&stale)).await;
    let service = Service::start(args_for(&stand_in, cached)).await;
    for _ in 0..3 {
        service
            .check("GET", "/api/u1/tasks", &[("cookie", &cookie)])
            .await;
    }
    assert_eq!(stand_in.calls(), 3);
}

#[tokio::test]
async fn mapped_fields_are_set_or_removed_on_every_allow() {
    let stand_in = StandIn::start(session_with_jwt(&jwt(900))).await;
    let map = |a: &mut Args| {
        a.header_map = Some(
            "x-user-role=user.role,x-org-id=session.activeOrganizationId,\
             x-impersonated-by=session.impersonatedBy,x-tags=user.tags"
                .into(),
        );
    };
    let service = Service::start(args_for(&stand_in, map)).await;
    let cookie = session_cookie();
    let forged = [
        ("cookie", cookie.as_str()),
        ("x-user-role", "admin"),
        ("x-impersonated-by", "nobody"),
    ];
    let a = service.check("GET", "/api/u1/tasks", &forged).await;
    assert_eq!(set(&a, "x-user-role").as_deref(), Some("admin,user"));
    assert_eq!(set(&a, "x-org-id").as_deref(), Some("org-7"));
    assert_eq!(set(&a, "x-tags").as_deref(), Some("a,b"));
    assert_eq!(set(&a, "x-impersonated-by"), None);
    assert!(
        a.removed.iter().any(|r| r == "x-impersonated-by"),
        "null removes"
    );
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("cookie", &cookie)])
        .await;
    assert_eq!(h.header("x-org-id"), Some("org-7"));

    let a = service
        .check("GET", "/api/auth/ok", &[("x-user-role", "admin")])
        .await;
    for name in ["x-user-role", "x-org-id", "x-impersonated-by", "x-tags"] {
        assert!(
            a.removed.iter().any(|r| r == name),
            "public allow removes {name}"
        );
    }
}

#[tokio::test]
async fn stripping_removes_every_configured_credential() {
    let stand_in = StandIn::start(valid("u1")).await;
    let strip = |a: &mut Args| {
        a.credentials = Some("cookie,bearer,api-key".into());
        a.strip_credentials = Some("true".into());
    };
    let service = Service::start(args_for(&stand_in, strip)).await;
    let mixed = format!("theme=dark; {}; lang=fr", session_cookie());
    let a = service
        .check("GET", "/api/u1/tasks", &[("cookie", &mixed)])
        .await;
    assert_eq!(set(&a, "cookie").as_deref(), Some("theme=dark; lang=fr"));

    let only = session_cookie();
    let a = service
        .check("GET", "/api/u1/tasks", &[("cookie", &only)])
        .await;
    assert!(a.removed.iter().any(|r| r == "cookie"));

    let bearer = format!("Bearer {BEARER}");
    let a = service
        .check("GET", "/api/u1/tasks", &[("authorization", &bearer)])
        .await;
    assert!(a.removed.iter().any(|r| r == "authorization"));

    let key = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNMqwertyuiopas";
    let a = service
        .check("GET", "/api/u1/tasks", &[("x-api-key", key)])
        .await;
    assert!(a.removed.iter().any(|r| r == "x-api-key"));
    assert!(
        a.set.iter().all(|(_, v, _)| !v.contains(key)),
        "the key goes nowhere"
    );

    // A public route (Better Auth's own, often) keeps the credentials it needs.
    let a = service
        .check(
            "GET",
            "/api/auth/get-session",
            &[("cookie", &mixed), ("authorization", &bearer)],
        )
        .await;
    assert!(
        a.removed
            .iter()
            .all(|r| r != "cookie" && r != "authorization")
    );
    assert!(set(&a, "cookie").is_none());

    // For nginx, which cannot remove a header on an auth answer's word: the marker, and the
    // other cookies to send instead of the request's.
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("cookie", &mixed)])
        .await;
    assert_eq!(h.header("x-authz-strip"), Some("1"));
    assert_eq!(h.header("cookie"), Some("theme=dark; lang=fr"));

    // Off (the default): nothing of the request's credentials is touched.
    let service = Service::start(args_for(&stand_in, |a| {
        a.credentials = Some("cookie,bearer,api-key".into())
    }))
    .await;
    let a = service
        .check("GET", "/api/u1/tasks", &[("cookie", &mixed)])
        .await;
    assert!(a.removed.iter().all(|r| r != "cookie") && set(&a, "cookie").is_none());
    let h = service
        .auth(&[("x-original-uri", "/api/u1/tasks"), ("cookie", &mixed)])
        .await;
    assert_eq!(
        (h.header("x-authz-strip"), h.header("cookie")),
        (None, None)
    );
}
