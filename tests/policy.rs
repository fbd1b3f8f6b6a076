//! The per-route policy (`AUTHZ_POLICY_FILE`) through both transports, the gRPC check and
//! `/auth`, against a **stand-in Better Auth** whose sessions and organization plugin
//! (`list-members`, answering from a table each test sets) the tests control: roles, verified
//! email, impersonation, sign-in age, memberships and the exact query that asks about them,
//! revalidation past every cache, sign-in redirects, routes named by the proxy, and reloading
//! the file while serving.

mod support;

use std::time::{Duration, Instant};

use better_authz::config::Args;
use better_authz::reason::Detail;
use serde_json::{Value, json};
use support::*;

const POLICY: &str = r#"
app_origin: https://app.example
login_url: https://id.example/sign-in
routes:
  - name: auth
    match:
      path: /api/auth/
    allow: anonymous
  - name: public
    match:
      path: /public/
    allow: anonymous
  - name: admin
    match:
      path: /admin/
    require:
      roles: [admin]
  - name: careful
    match:
      path: /careful/
    require:
      email_verified: true
      not_impersonated: true
      max_age: 15m
  - name: fresh
    match:
      path: /fresh/
    require:
      revalidate: true
  - name: org
    match:
      path: /orgs/{org_id}/
    require:
      org_roles: [owner, admin]
  - name: team
    match:
      path: /teams/{org_slug}/
    require:
      org_roles: [member, owner]
  - name: fresh-org
    match:
      path: /fresh-orgs/{org_id}/
    require:
      org_roles: [owner]
      revalidate: true
  - name: dash
    match:
      path: /dash/
    on_deny: login
"#;

/// The service's arguments for this stand-in and policy file (the shorthand variables unset).
fn with_policy(stand_in: &StandIn, file: &PolicyFile, change: impl FnOnce(&mut Args)) -> Args {
    args_for(stand_in, |a| {
        a.public_paths = None;
        a.user_path_pattern = None;
        a.policy_file = Some(file.path.display().to_string());
        change(a);
    })
}

/// A valid session for `user` signed in a minute ago, with a verified email and the role
/// `user`; `edit` changes the JSON Better Auth answers.
fn session(user: &str, edit: impl FnOnce(&mut Value)) -> Behavior {
    let at = |secs: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut body = json!({
        "session": {"id": "s1", "userId": user, "token": TOKEN, "expiresAt": at(3600),
                    "createdAt": at(-60), "updatedAt": at(-60), "impersonatedBy": null},
        "user": {"id": user, "email": format!("{user}@example.com"), "name": "U",
                 "emailVerified": true, "role": "user"},
    });
    edit(&mut body);
    Behavior::Json(body.to_string())
}

/// What one transport answered, for comparison.
#[derive(Debug, PartialEq)]
struct Verdict {
    status: u16,
    /// The deny's error code; `""` on an allow.
    code: String,
    /// The deny body's detail text; `""` on an allow.
    detail: String,
    /// `x-user-id` on an allow.
    user: Option<String>,
    location: Option<String>,
}

async fn via_grpc(
    service: &Service,
    check: envoy_types::ext_authz::v3::pb::CheckRequest,
) -> Verdict {
    let a = service.send(check).await;
    Verdict {
        status: u16::try_from(a.http_status).unwrap(),
        code: a.error_code().to_owned(),
        detail: a.body["detail"].as_str().unwrap_or_default().to_owned(),
        user: a.header("x-user-id").map(str::to_owned),
        location: a.header("location").map(str::to_owned),
    }
}

/// `/auth` as nginx asks it: the original method and URI, then `headers`.
async fn via_http(
    service: &Service,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Verdict {
    let mut all = vec![("x-original-uri", path), ("x-original-method", method)];
    all.extend_from_slice(headers);
    let a = service.auth(&all).await;
    let json = a.json();
    Verdict {
        status: a.status,
        code: a
            .header("x-authz-error-code")
            .unwrap_or_default()
            .to_owned(),
        detail: json["detail"].as_str().unwrap_or_default().to_owned(),
        user: a.header("x-user-id").map(str::to_owned),
        location: a.header("location").map(str::to_owned),
    }
}

/// The same request through both transports: they must agree; their common verdict.
async fn both(service: &Service, method: &str, path: &str, headers: &[(&str, &str)]) -> Verdict {
    let grpc = via_grpc(service, envoy_check(method, path, headers)).await;
    let http = via_http(service, method, path, headers).await;
    assert_eq!(grpc, http, "gRPC and /auth disagree on {method} {path}");
    grpc
}

/// Both transports answer `status` and `code` (and, for a deny, `detail`).
async fn expect(
    service: &Service,
    (method, path, headers): (&str, &str, &[(&str, &str)]),
    status: u16,
    code: &str,
    detail: Detail,
) -> Verdict {
    let v = both(service, method, path, headers).await;
    assert_eq!(
        (v.status, v.code.as_str(), v.detail.as_str()),
        (status, code, detail.text()),
        "{method} {path}"
    );
    v
}

#[tokio::test]
async fn session_requirements_through_both_transports() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];

    // Anonymous routes, and the default (a session) elsewhere.
    expect(&service, ("GET", "/public/x", &[]), 200, "", Detail::None).await;
    expect(
        &service,
        ("GET", "/elsewhere", &[]),
        401,
        "SESSION_REQUIRED",
        Detail::NoSessionCookie,
    )
    .await;
    let v = expect(
        &service,
        ("GET", "/elsewhere", &with),
        200,
        "",
        Detail::None,
    )
    .await;
    assert_eq!(v.user.as_deref(), Some("u1"));

    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, u16, &str, Detail)] = &[
        // Roles: any one of a comma-separated list.
        (
            "/admin/x",
            |_| {},
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        (
            "/admin/x",
            |v| v["user"]["role"] = json!("user,admin"),
            200,
            "",
            Detail::None,
        ),
        (
            "/admin/x",
            |v| v["user"]["role"] = json!(["admin"]),
            200,
            "",
            Detail::None,
        ),
        (
            "/admin/x",
            |v| v["user"]["role"] = json!(null),
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        (
            "/ADMIN/x",
            |_| {},
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        (
            "/admin;x/y",
            |_| {},
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        // Verified email, not impersonated, signed in within 15 minutes.
        ("/careful/x", |_| {}, 200, "", Detail::None),
        (
            "/careful/x",
            |v| v["user"]["emailVerified"] = json!(false),
            403,
            "EMAIL_UNVERIFIED",
            Detail::EmailNotVerified,
        ),
        (
            "/careful/x",
            |v| v["session"]["impersonatedBy"] = json!("admin-1"),
            403,
            "IMPERSONATION_FORBIDDEN",
            Detail::ImpersonatedSession,
        ),
        (
            "/careful/x",
            |v| v["session"]["createdAt"] = json!("2020-01-01T00:00:00Z"),
            401,
            "SESSION_TOO_OLD",
            Detail::SignInTooOld,
        ),
        (
            "/careful/x",
            |v| {
                v["session"].as_object_mut().unwrap().remove("createdAt");
            },
            401,
            "SESSION_TOO_OLD",
            Detail::SignInTooOld,
        ),
    ];
    for (path, edit, status, code, detail) in cases {
        stand_in.set(session("u1", *edit));
        let v = expect(&service, ("GET", path, &with), *status, code, *detail).await;
        assert_eq!(v.user.is_some(), *status == 200, "{path}");
        assert!(v.location.is_none(), "{path}: not a login route");
    }
}

#[tokio::test]
async fn organization_roles_ask_better_auth_about_the_caller() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    stand_in.set_members(Members::Table(vec![
        membership("o1", "acme", "u1", "owner"),
        membership("o1", "acme", "u2", "member"),
        membership("o2", "beta", "u1", "member"),
        membership("o3", "gamma", "u2", "owner"),
    ]));
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];

    for (path, status, code, detail) in [
        ("/orgs/o1/tasks", 200, "", Detail::None),
        ("/ORGS/o1", 200, "", Detail::None),
        (
            "/orgs/o2/tasks",
            403,
            "ORG_FORBIDDEN",
            Detail::OrgRoleMissing,
        ),
        ("/orgs/o3/tasks", 403, "ORG_FORBIDDEN", Detail::NotOrgMember),
        (
            "/orgs/none/tasks",
            403,
            "ORG_FORBIDDEN",
            Detail::NotOrgMember,
        ),
        // Ids compare exactly.
        ("/orgs/O1/tasks", 403, "ORG_FORBIDDEN", Detail::NotOrgMember),
        ("/teams/beta", 200, "", Detail::None),
        ("/teams/acme/x", 200, "", Detail::None),
        ("/teams/gamma/x", 403, "ORG_FORBIDDEN", Detail::NotOrgMember),
        // No organization in the path: denied before asking.
        ("/orgs", 403, "NO_ROUTE", Detail::RouteSegmentMissing),
    ] {
        let v = expect(&service, ("GET", path, &with), status, code, detail).await;
        assert_eq!(v.user.is_some(), status == 200, "{path}");
    }

    // The exact question: the organization, filtered to the caller Better Auth named, one
    // record, asked with the caller's own credential.
    let before = stand_in.member_calls();
    via_grpc(&service, envoy_check("GET", "/orgs/o1/tasks", &with)).await;
    assert_eq!(
        stand_in.member_calls(),
        before + 1,
        "no cache: asked each time"
    );
    let last = stand_in.member_queries().pop().unwrap();
    let want = [
        ("organizationId", "o1"),
        ("filterField", "userId"),
        ("filterValue", "u1"),
        ("limit", "1"),
    ];
    assert_eq!(last, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let headers = stand_in.last_member_headers();
    assert_eq!(headers["cookie"], cookie.as_str());
    via_grpc(&service, envoy_check("GET", "/teams/beta", &with)).await;
    let last = stand_in.member_queries().pop().unwrap();
    assert_eq!(last[0], ("organizationSlug".to_owned(), "beta".to_owned()));

    // A segment that looks like parameters is one value: it adds none.
    let hostile = "/orgs/x%26organizationId%3Do1%26filterValue%3Du2/tasks";
    expect(
        &service,
        ("GET", hostile, &with),
        403,
        "ORG_FORBIDDEN",
        Detail::NotOrgMember,
    )
    .await;
    let last = stand_in.member_queries().pop().unwrap();
    let ids: Vec<&str> = last
        .iter()
        .filter(|(k, _)| k == "organizationId")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["x&organizationId=o1&filterValue=u2"]);
    assert_eq!(last.len(), 4, "{last:?}");
    let raw = stand_in.member_raw_queries().pop().unwrap();
    assert!(
        raw.starts_with("organizationId=x%26organizationId%3Do1%26filterValue%3Du2&"),
        "{raw}"
    );

    // What Better Auth answers when it cannot say.
    for (status, body, code, detail, http) in [
        (
            503,
            "",
            "AUTH_UNAVAILABLE",
            Detail::UpstreamServerError,
            503,
        ),
        (
            429,
            "",
            "AUTH_UNAVAILABLE",
            Detail::UpstreamRateLimited,
            503,
        ),
        (
            404,
            r#"{"code":"NOT_FOUND"}"#,
            "AUTH_ERROR",
            Detail::UpstreamBadAnswer,
            500,
        ),
        (200, "<html>", "AUTH_ERROR", Detail::UpstreamBadAnswer, 500),
        (
            401,
            r#"{"code":"UNAUTHORIZED"}"#,
            "SESSION_INVALID",
            Detail::SessionNotFound,
            401,
        ),
    ] {
        stand_in.set_members(Members::Answer(status, body.into()));
        expect(&service, ("GET", "/orgs/o1/x", &with), http, code, detail).await;
    }
}

#[tokio::test]
async fn memberships_are_cached_with_the_cache_and_never_when_revalidating() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    stand_in.set_members(Members::Table(vec![membership(
        "o1", "acme", "u1", "owner",
    )]));
    let cached = |a: &mut Args| a.cache_ttl_ms = Some("60000".into());
    let service = Service::start(with_policy(&stand_in, &file, cached)).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];
    for _ in 0..3 {
        expect(
            &service,
            ("GET", "/orgs/o1/x", &with),
            200,
            "",
            Detail::None,
        )
        .await;
    }
    assert_eq!((stand_in.calls(), stand_in.member_calls()), (1, 1));
    // Another organization is another entry.
    expect(
        &service,
        ("GET", "/teams/acme", &with),
        200,
        "",
        Detail::None,
    )
    .await;
    assert_eq!(stand_in.member_calls(), 2);
    // A revalidating route asks every time, for the session and the membership.
    for i in 1..=2 {
        expect(
            &service,
            ("GET", "/fresh-orgs/o1/x", &with),
            200,
            "",
            Detail::None,
        )
        .await;
        assert_eq!(
            (stand_in.calls(), stand_in.member_calls()),
            (1 + 2 * i, 2 + 2 * i)
        );
    }
    // A membership that ended is seen at once on the revalidating route.
    stand_in.set_members(Members::Table(vec![]));
    expect(
        &service,
        ("GET", "/fresh-orgs/o1/x", &with),
        403,
        "ORG_FORBIDDEN",
        Detail::NotOrgMember,
    )
    .await;
}

#[tokio::test]
async fn revalidate_asks_past_better_auths_cookie_cache_and_ours() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let cached = |a: &mut Args| a.cache_ttl_ms = Some("60000".into());
    let service = Service::start(with_policy(&stand_in, &file, cached)).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];
    // A fresh answer is not written to the cache…
    expect(&service, ("GET", "/fresh/x", &with), 200, "", Detail::None).await;
    expect(
        &service,
        ("GET", "/elsewhere", &with),
        200,
        "",
        Detail::None,
    )
    .await;
    // …nor read from it.
    expect(
        &service,
        ("GET", "/elsewhere", &with),
        200,
        "",
        Detail::None,
    )
    .await;
    expect(&service, ("GET", "/fresh/x", &with), 200, "", Detail::None).await;
    // Each `expect` is one check per transport: the second `/elsewhere` ones were cached.
    let fresh = "disableCookieCache=true";
    assert_eq!(stand_in.session_queries(), [fresh, fresh, "", fresh, fresh]);
    // A session revoked a moment ago: the cached route still allows (for the TTL), the
    // revalidating one does not.
    stand_in.set(Behavior::Null {
        set_cookies: vec![],
    });
    expect(
        &service,
        ("GET", "/elsewhere", &with),
        200,
        "",
        Detail::None,
    )
    .await;
    expect(
        &service,
        ("GET", "/fresh/x", &with),
        401,
        "SESSION_INVALID",
        Detail::SessionNotFound,
    )
    .await;
}

#[tokio::test]
async fn fresh_lookups_are_coalesced_only_with_fresh_ones() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(Behavior::Slow(
        Duration::from_millis(400),
        Box::new(session("u1", |_| {})),
    ))
    .await;
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let cookie = session_cookie();
    let checks = ["/fresh/a", "/fresh/b", "/elsewhere", "/public/x"].map(|path| {
        let (grpc, cookie) = (service.grpc, cookie.clone());
        tokio::spawn(async move {
            send_to(grpc, envoy_check("GET", path, &[("cookie", &cookie)]))
                .await
                .http_status
        })
    });
    for check in checks {
        assert_eq!(check.await.unwrap(), 200);
    }
    let mut queries = stand_in.session_queries();
    queries.sort();
    assert_eq!(queries, ["", "disableCookieCache=true"]);
}

#[tokio::test]
async fn browsers_are_sent_to_sign_in_through_both_transports() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let html = ("accept", "text/html,application/xhtml+xml");
    let location = "https://id.example/sign-in?callbackURL=https%3A%2F%2Fapp.example%2Fdash%2F%2540x%3Ftab%3D1";

    let v = expect(
        &service,
        ("GET", "/dash/%40x?tab=1", &[html]),
        302,
        "LOGIN_REQUIRED",
        Detail::NoSessionCookie,
    )
    .await;
    assert_eq!(v.location.as_deref(), Some(location));
    let v = expect(
        &service,
        ("HEAD", "/dash/%40x?tab=1", &[html]),
        302,
        "LOGIN_REQUIRED",
        Detail::NoSessionCookie,
    )
    .await;
    assert_eq!(v.location.as_deref(), Some(location));

    // The gRPC answer is a denied response with status 302 and the location for the client.
    let a = service.check("GET", "/dash/%40x?tab=1", &[html]).await;
    assert_eq!((a.grpc_code, a.http_status), (16, 302));
    assert_eq!(a.header("location"), Some(location));

    // A session Better Auth no longer knows: also sent to sign in.
    stand_in.set(Behavior::Null {
        set_cookies: vec![],
    });
    let cookie = session_cookie();
    let v = expect(
        &service,
        ("GET", "/dash", &[html, ("cookie", cookie.as_str())]),
        302,
        "LOGIN_REQUIRED",
        Detail::SessionNotFound,
    )
    .await;
    assert!(
        v.location
            .unwrap()
            .ends_with("callbackURL=https%3A%2F%2Fapp.example%2Fdash")
    );

    // An API call, a form post, or a route without on_deny: login keeps its 401.
    for (method, path, accept) in [
        ("GET", "/dash", "application/json"),
        ("POST", "/dash", "text/html"),
        ("GET", "/elsewhere", "text/html"),
    ] {
        let v = expect(
            &service,
            (method, path, &[("accept", accept)]),
            401,
            "SESSION_REQUIRED",
            Detail::NoSessionCookie,
        )
        .await;
        assert!(v.location.is_none());
    }
}

#[tokio::test]
async fn envoy_names_a_route_in_context_extensions() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let cookie = session_cookie();
    let named = |path: &str, route: &str, cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let mut check = envoy_check("GET", path, &headers);
        check
            .attributes
            .as_mut()
            .unwrap()
            .context_extensions
            .insert("route".into(), route.into());
        check
    };
    // The named route's requirements are added to the path's.
    let v = via_grpc(
        &service,
        named("/elsewhere", "admin", Some(cookie.as_str())),
    )
    .await;
    assert_eq!((v.status, v.code.as_str()), (403, "ROLE_REQUIRED"));
    let v = via_grpc(&service, named("/public/x", "admin", Some(cookie.as_str()))).await;
    assert_eq!((v.status, v.code.as_str()), (403, "ROLE_REQUIRED"));
    // Naming an anonymous route adds nothing: never an allow without a session.
    let v = via_grpc(&service, named("/elsewhere", "public", None)).await;
    assert_eq!((v.status, v.code.as_str()), (401, "SESSION_REQUIRED"));
    let v = via_grpc(
        &service,
        named("/elsewhere", "public", Some(cookie.as_str())),
    )
    .await;
    assert_eq!(v.status, 200);
    // A name the policy does not have denies, even on an anonymous path.
    let v = via_grpc(&service, named("/public/x", "nope", None)).await;
    assert_eq!(
        (v.status, v.code.as_str(), v.detail.as_str()),
        (403, "NO_ROUTE", Detail::UnknownRoute.text())
    );
    // A header of that name from the client is no context extension.
    let v = via_grpc(
        &service,
        envoy_check(
            "GET",
            "/public/x",
            &[("route", "nope"), ("x-authz-route", "nope")],
        ),
    )
    .await;
    assert_eq!(v.status, 200);
}

#[tokio::test]
async fn nginx_names_a_route_in_the_route_header() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let header = |a: &mut Args| a.route_header = Some("X-Authz-Route".into());
    let service = Service::start(with_policy(&stand_in, &file, header)).await;
    let cookie = session_cookie();
    let c = ("cookie", cookie.as_str());
    for (path, headers, status, code, detail) in [
        (
            "/elsewhere",
            vec![c, ("x-authz-route", "admin")],
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        (
            "/public/x",
            vec![c, ("x-authz-route", "admin")],
            403,
            "ROLE_REQUIRED",
            Detail::RoleMissing,
        ),
        (
            "/elsewhere",
            vec![("x-authz-route", "public")],
            401,
            "SESSION_REQUIRED",
            Detail::NoSessionCookie,
        ),
        (
            "/elsewhere",
            vec![c, ("x-authz-route", "public")],
            200,
            "",
            Detail::None,
        ),
        (
            "/public/x",
            vec![("x-authz-route", "nope")],
            403,
            "NO_ROUTE",
            Detail::UnknownRoute,
        ),
        (
            "/public/x",
            vec![("x-authz-route", "public"), ("x-authz-route", "public")],
            403,
            "NO_ROUTE",
            Detail::RepeatedRoute,
        ),
    ] {
        let v = via_http(&service, "GET", path, &headers).await;
        assert_eq!(
            (v.status, v.code.as_str(), v.detail.as_str()),
            (status, code, detail.text()),
            "{path} {headers:?}"
        );
    }

    // Without AUTHZ_ROUTE_HEADER, no header names a route.
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let v = via_http(&service, "GET", "/public/x", &[("x-authz-route", "nope")]).await;
    assert_eq!(v.status, 200);
    let v = via_http(
        &service,
        "GET",
        "/elsewhere",
        &[c, ("x-authz-route", "admin")],
    )
    .await;
    assert_eq!(v.status, 200);
}

/// Poll until `done` holds, for at most `within`; how long it took.
async fn eventually<F: Future<Output = bool>>(
    within: Duration,
    mut done: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

const RELOADED: &str = r#"
routes:
  - name: beta
    match:
      path: /beta/
    allow: anonymous
  - name: admin
    match:
      path: /admin/
    require:
      roles: [admin]
"#;

#[tokio::test]
async fn the_policy_reloads_while_serving() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let slow = |a: &mut Args| a.upstream_timeout_ms = Some("10000".into());
    let service = Service::start(with_policy(&stand_in, &file, slow)).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];
    let ok = r#"better_authz_policy_reloads_total{result="ok"}"#;
    let error = r#"better_authz_policy_reloads_total{result="error"}"#;
    let routes = "better_authz_policy_routes";
    assert_eq!(service.metric(routes).await, 9.0);
    assert_eq!(service.metric(ok).await, 0.0);

    // A check in flight when the file changes finishes with the policy it started with.
    stand_in.set(Behavior::Slow(
        Duration::from_millis(2500),
        Box::new(session("u1", |_| {})),
    ));
    let in_flight = {
        let grpc = service.grpc;
        let cookie = cookie.clone();
        tokio::spawn(async move {
            send_to(grpc, envoy_check("GET", "/beta/x", &[("cookie", &cookie)])).await
        })
    };
    eventually(Duration::from_secs(5), || async { stand_in.calls() == 1 }).await;
    stand_in.set(session("u1", |_| {}));
    file.write(&RELOADED.replace("allow: anonymous", "require:\n      roles: [beta]"));
    let took = eventually(Duration::from_secs(3), || async {
        service.metric(ok).await == 1.0
    })
    .await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let a = in_flight.await.unwrap();
    assert_eq!(a.http_status, 200, "judged by the routes it started with");
    expect(
        &service,
        ("GET", "/beta/x", &with),
        403,
        "ROLE_REQUIRED",
        Detail::RoleMissing,
    )
    .await;
    assert_eq!(service.metric(routes).await, 2.0);

    // The next good edit serves within a poll or two.
    file.write(RELOADED);
    eventually(Duration::from_secs(3), || async {
        via_grpc(&service, envoy_check("GET", "/beta/x", &[]))
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(service.metric(ok).await, 2.0);
    // Routes that are gone are gone: the org route is the default now.
    expect(&service, ("GET", "/orgs/o1", &with), 200, "", Detail::None).await;

    // A broken edit keeps the last good policy, counted once, while checks go on.
    let checks = {
        let grpc = service.grpc;
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..40 {
                answers.push(
                    send_to(grpc, envoy_check("GET", "/beta/x", &[]))
                        .await
                        .http_status,
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };
    file.write("routes:\n  - name: beta\n    match:\n      path: /beta/\n    allow: anyone\n");
    eventually(Duration::from_secs(3), || async {
        service.metric(error).await == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        service.metric(error).await,
        1.0,
        "each bad text is counted once"
    );
    assert_eq!(service.metric(ok).await, 2.0);
    assert_eq!(service.metric(routes).await, 2.0);
    expect(&service, ("GET", "/beta/x", &[]), 200, "", Detail::None).await;
    expect(
        &service,
        ("GET", "/admin/x", &with),
        403,
        "ROLE_REQUIRED",
        Detail::RoleMissing,
    )
    .await;
    let answers = checks.await.unwrap();
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    // A file that disappears is an error too; the policy stays.
    std::fs::remove_file(&file.path).unwrap();
    eventually(Duration::from_secs(3), || async {
        service.metric(error).await == 2.0
    })
    .await;
    expect(&service, ("GET", "/beta/x", &[]), 200, "", Detail::None).await;
}

#[tokio::test]
async fn decisions_are_counted_by_route() {
    let file = PolicyFile::new(POLICY);
    let stand_in = StandIn::start(session("u1", |_| {})).await;
    let service = Service::start(with_policy(&stand_in, &file, |_| {})).await;
    let cookie = session_cookie();
    let with = [("cookie", cookie.as_str())];
    both(&service, "GET", "/public/x", &[]).await;
    both(&service, "GET", "/admin/x", &with).await;
    both(&service, "GET", "/elsewhere", &with).await;
    both(&service, "GET", "/elsewhere", &[]).await;
    let text = service.metrics().await;
    let series = |route: &str, decision: &str| {
        metric(
            &text,
            &format!(
                r#"better_authz_route_decisions_total{{decision="{decision}",route="{route}"}}"#
            ),
        )
    };
    // Each request went through both transports.
    assert_eq!(series("public", "allow"), 2.0);
    assert_eq!(series("admin", "deny"), 2.0);
    assert_eq!(series("_default", "allow"), 2.0);
    assert_eq!(series("_default", "deny"), 2.0);
    assert!(
        !text.contains(r#"decision="allow",route="admin""#),
        "{text}"
    );
    // A check that ends before the routes (an unusable path) has no route.
    both(&service, "GET", "/a%2Fb", &with).await;
    let after = service.metrics().await;
    let total = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("better_authz_route_decisions_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(total(&after), total(&text));
}
