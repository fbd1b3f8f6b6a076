use time::{Duration, OffsetDateTime};

use super::*;
use crate::routes::RoutePattern;

/// The decision of a check that names no organization.
fn decided(step: Step) -> Decision {
    match step {
        Step::Done(d) => d,
        Step::Orgs(_) => panic!("no organization is named"),
    }
}

const TOKEN: &str = "tok123.c2ln%3D";

fn policy() -> Policy {
    Policy {
        credentials: vec![CredentialKind::Cookie],
        api_key_header: "x-api-key".into(),
        cookie_prefix: "better-auth".into(),
        routes: Arc::new(RouteTable::from_variables(
            &[RoutePattern::parse("/api/auth/").unwrap()],
            Some(RoutePattern::parse("/api/{user_id}/").unwrap()),
        )),
        allow_preflight: true,
        identity: IdentityHeaders {
            user_id: "x-user-id".into(),
            email: "x-user-email".into(),
            name: "x-user-name".into(),
        },
        header_map: vec![],
        jwt_header: None,
        strip_credentials: false,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn valid(id: &str) -> SessionLookup {
    let (email, name) = (format!("{id}@example.com"), format!("User {id}"));
    session(
        id,
        Some(&email),
        Some(&name),
        now() + Duration::hours(1),
        &[],
    )
}

fn session_cookie() -> String {
    format!("better-auth.session_token={TOKEN}")
}

fn req<'a>(method: &'a str, path: &'a str, cookies: Vec<&'a str>) -> CheckRequest<'a> {
    CheckRequest {
        method,
        path,
        cookies,
        user_agent: Some("test-agent"),
        client_addr: Some("203.0.113.7"),
        ..Default::default()
    }
}

/// Expected result of one check: reason, whether Better Auth was asked.
struct Expect {
    reason: Reason,
    asked: bool,
}

/// Run a request through both steps; `lookup` answers if the plan asks.
fn run(p: &Policy, r: &CheckRequest<'_>, lookup: SessionLookup) -> (Decision, bool) {
    match plan(p, r) {
        Plan::Done(d) => (d, false),
        Plan::Lookup(pending) => (decided(decide(p, pending, lookup, now())), true),
    }
}

fn check(p: &Policy, r: CheckRequest<'_>, lookup: SessionLookup, expect: Expect) -> Decision {
    let (d, asked) = run(p, &r, lookup);
    assert_eq!(d.reason, expect.reason, "{} {}", r.method, r.path);
    assert_eq!(
        asked, expect.asked,
        "asked Better Auth? {} {}",
        r.method, r.path
    );
    d
}

#[test]
fn decision_table() {
    let p = policy();
    let c = session_cookie();
    let c = c.as_str();
    use Reason::*;
    let cases: Vec<(CheckRequest<'_>, SessionLookup, Reason, bool)> = vec![
        // Public paths: allowed without session, whatever Better Auth would say.
        (
            req("POST", "/api/auth/sign-in/email", vec![]),
            SessionLookup::BadAnswer,
            PublicPath,
            false,
        ),
        (
            req("GET", "/api/auth", vec![]),
            SessionLookup::BadAnswer,
            PublicPath,
            false,
        ),
        // Dot segments cannot borrow the public prefix.
        (
            req("GET", "/api/auth/../u1/tasks", vec![]),
            valid("u1"),
            SessionRequired,
            false,
        ),
        (
            req("GET", "/api/auth/%2e%2e/u1/tasks", vec![]),
            valid("u1"),
            SessionRequired,
            false,
        ),
        // No cookie at all.
        (
            req("GET", "/api/u1/tasks", vec![]),
            valid("u1"),
            SessionRequired,
            false,
        ),
        (
            req("GET", "/api/u1/tasks", vec!["theme=dark"]),
            valid("u1"),
            SessionRequired,
            false,
        ),
        (
            req("GET", "/api/u1/tasks", vec!["better-auth.session_token="]),
            valid("u1"),
            SessionRequired,
            false,
        ),
        // Cheap rejection: not a signed token.
        (
            req(
                "GET",
                "/api/u1/tasks",
                vec!["better-auth.session_token=nodot"],
            ),
            valid("u1"),
            SessionInvalid,
            false,
        ),
        // Valid and own path.
        (
            req("GET", "/api/u1/tasks", vec![c]),
            valid("u1"),
            SessionValid,
            true,
        ),
        (
            req("GET", "/api/u1/tasks?x=1", vec![c]),
            valid("u1"),
            SessionValid,
            true,
        ),
        // Another user's path, also spelled differently.
        (
            req("GET", "/api/u2/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        (
            req("GET", "/api/%75%32/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        (
            req("GET", "/api/u1/../u2/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        (
            req("GET", "//api//u2/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        (
            req("GET", "/API/u2/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        (
            req("GET", "/api/u1;/tasks", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        // The query never grants access.
        (
            req("GET", "/api/u2/tasks?user=u1", vec![c]),
            valid("u1"),
            UserMismatch,
            true,
        ),
        // Paths outside the pattern only need a session.
        (
            req("GET", "/health/deep", vec![c]),
            valid("u1"),
            SessionValid,
            true,
        ),
        // Better Auth says no session.
        (
            req("GET", "/api/u1/tasks", vec![c]),
            SessionLookup::NoSession {
                set_cookies: vec![],
            },
            SessionInvalid,
            true,
        ),
        // Unavailable and bad answers.
        (
            req("GET", "/api/u1/tasks", vec![c]),
            SessionLookup::Unavailable(Detail::UpstreamTimeout),
            AuthUnavailable,
            true,
        ),
        (
            req("GET", "/api/u1/tasks", vec![c]),
            SessionLookup::BadAnswer,
            AuthError,
            true,
        ),
        // Unusable paths.
        (
            req("GET", "/api/u1%2F..%2Fu2/tasks", vec![c]),
            valid("u1"),
            BadRequest,
            false,
        ),
        (req("GET", "", vec![c]), valid("u1"), BadRequest, false),
        (req("GET", "*", vec![c]), valid("u1"), BadRequest, false),
    ];
    for (r, lookup, reason, asked) in cases {
        check(&p, r, lookup, Expect { reason, asked });
    }
}

#[test]
fn preflight_needs_origin_and_request_method() {
    let p = policy();
    let mut r = req("OPTIONS", "/api/u1/tasks", vec![]);
    r.origin = Some("http://app.example");
    r.access_control_request_method = Some("POST");
    let d = check(
        &p,
        r.clone(),
        valid("u1"),
        Expect {
            reason: Reason::Preflight,
            asked: false,
        },
    );
    assert_eq!(
        d.remove_headers,
        ["x-user-id", "x-user-email", "x-user-name"]
    );

    // Without Access-Control-Request-Method it is a plain OPTIONS: needs a session.
    let mut plain = r.clone();
    plain.access_control_request_method = None;
    check(
        &p,
        plain,
        valid("u1"),
        Expect {
            reason: Reason::SessionRequired,
            asked: false,
        },
    );

    // Preflights can be switched off.
    let mut off = policy();
    off.allow_preflight = false;
    check(
        &off,
        r,
        valid("u1"),
        Expect {
            reason: Reason::SessionRequired,
            asked: false,
        },
    );
}

/// A session lookup's answer: this user, expiring at `expires_at`, with these cookies.
fn session(
    id: &str,
    email: Option<&str>,
    name: Option<&str>,
    expires_at: OffsetDateTime,
    set_cookies: &[&str],
) -> SessionLookup {
    SessionLookup::Valid {
        user: SessionUser {
            id: id.into(),
            email: email.map(str::to_owned),
            name: name.map(str::to_owned),
            mapped: vec![],
            jwt: None,
            ..SessionUser::default()
        },
        expires_at,
        set_cookies: set_cookies.iter().map(|c| c.to_string()).collect(),
        set_auth_token: None,
    }
}

/// GET `path` with the session cookie, Better Auth answering `lookup`; expects `reason`.
fn looked_up(path: &str, lookup: SessionLookup, reason: Reason) -> Decision {
    let c = session_cookie();
    let r = req("GET", path, vec![&c]);
    let expect = Expect {
        reason,
        asked: true,
    };
    check(&policy(), r, lookup, expect)
}

#[test]
fn allow_sets_identity_and_passes_cookies() {
    let refreshed = "better-auth.session_token=new.sig; Max-Age=604800";
    let soon = now() + Duration::minutes(5);
    let lookup = session(
        "u1",
        Some("a@example.com"),
        Some("José Ñ"),
        soon,
        &[refreshed, "x=y"],
    );
    let d = looked_up("/api/u1/tasks", lookup, Reason::SessionValid);
    assert_eq!(
        d.set_headers,
        [
            ("x-user-id".to_string(), "u1".to_string()),
            ("x-user-email".to_string(), "a@example.com".to_string()),
            ("x-user-name".to_string(), "José Ñ".to_string()),
        ]
    );
    assert!(d.remove_headers.is_empty());
    assert_eq!(d.set_cookies.len(), 2);
    assert_eq!(d.user_id.as_deref(), Some("u1"));
}

#[test]
fn missing_or_unsafe_identity_values_remove_the_header() {
    let soon = now() + Duration::minutes(5);
    let lookup = session("u1", None, Some("evil\r\nx-user-id: u2"), soon, &[]);
    let d = looked_up("/api/u1/tasks", lookup, Reason::SessionValid);
    assert_eq!(d.set_headers, [("x-user-id".to_string(), "u1".to_string())]);
    assert_eq!(d.remove_headers, ["x-user-email", "x-user-name"]);
    assert_eq!(d.dropped_headers, ["x-user-name"]);
}

#[test]
fn identity_values_over_the_cap_are_dropped_and_a_long_id_denies() {
    let soon = now() + Duration::minutes(5);
    let long = "n".repeat(MAX_IDENTITY_VALUE_BYTES + 1);
    let fits = "n".repeat(MAX_IDENTITY_VALUE_BYTES);
    let lookup = session("u1", Some(&long), Some(&fits), soon, &[]);
    let d = looked_up("/api/u1/tasks", lookup, Reason::SessionValid);
    assert_eq!(
        d.set_headers,
        [
            ("x-user-id".to_string(), "u1".to_string()),
            ("x-user-name".to_string(), fits.clone()),
        ]
    );
    assert_eq!(d.remove_headers, ["x-user-email"]);
    assert_eq!(d.dropped_headers, ["x-user-email"]);

    let d = looked_up(
        "/x",
        session(&long, None, None, soon, &[]),
        Reason::AuthError,
    );
    assert_eq!(d.detail, Detail::UserIdTooLong);
    let d = looked_up(
        "/x",
        session(&fits, None, None, soon, &[]),
        Reason::SessionValid,
    );
    assert_eq!(d.user_id.as_deref(), Some(fits.as_str()));
}

#[test]
fn an_unsafe_user_id_is_an_auth_error() {
    for id in ["", "u1\nx", "u\u{0}", " u1", "u1\t"] {
        let soon = now() + Duration::minutes(5);
        looked_up("/x", session(id, None, None, soon, &[]), Reason::AuthError);
    }
}

#[test]
fn expired_sessions_are_invalid_and_keep_clearing_cookies() {
    let clearing = "better-auth.session_token=; Max-Age=0";
    for expires_at in [now(), now() - Duration::seconds(1)] {
        let lookup = session("u1", None, None, expires_at, &[clearing]);
        let d = looked_up("/api/u1/tasks", lookup, Reason::SessionInvalid);
        assert_eq!(d.detail, Detail::SessionExpired);
        assert_eq!(d.set_cookies, [clearing]);
        assert!(d.set_headers.is_empty());
    }
}

#[test]
fn denies_carry_better_auth_cookies_but_never_identity() {
    let lookup = SessionLookup::NoSession {
        set_cookies: vec!["better-auth.session_token=; Max-Age=0".into()],
    };
    let d = looked_up("/api/u1/tasks", lookup, Reason::SessionInvalid);
    assert_eq!(d.set_cookies.len(), 1);
    assert!(d.set_headers.is_empty());

    let refreshed = "better-auth.session_token=new.sig";
    let lookup = session("u1", None, None, now() + Duration::hours(1), &[refreshed]);
    let d = looked_up("/api/u2/tasks", lookup, Reason::UserMismatch);
    assert_eq!(d.set_cookies, ["better-auth.session_token=new.sig"]);
    assert!(d.set_headers.is_empty());
    assert_eq!(d.user_id.as_deref(), Some("u1"));
}

#[test]
fn the_lookup_forwards_only_better_auth_cookies_and_client_facts() {
    let p = policy();
    let header = format!(
        "_ga=1; {}; better-auth.session_data=abc; other=2",
        session_cookie()
    );
    let r = req("GET", "/api/u1/tasks", vec![&header]);
    let Plan::Lookup(pending) = plan(&p, &r) else {
        panic!("expected a lookup")
    };
    assert_eq!(
        pending.query.credential,
        Credential::Cookie(format!(
            "{}; better-auth.session_data=abc",
            session_cookie()
        ))
    );
    assert_eq!(pending.query.client_addr.as_deref(), Some("203.0.113.7"));
    assert_eq!(pending.query.user_agent.as_deref(), Some("test-agent"));
    assert!(!format!("{:?}", pending.query).contains("tok123"));
}

#[test]
fn oversized_cookie_headers_are_refused_without_a_lookup() {
    let p = policy();
    let big = format!(
        "{}; pad={}",
        session_cookie(),
        "x".repeat(MAX_COOKIE_HEADER_BYTES)
    );
    check(
        &p,
        req("GET", "/api/u1/tasks", vec![&big]),
        valid("u1"),
        Expect {
            reason: Reason::HeadersTooLarge,
            asked: false,
        },
    );
}

#[test]
fn without_a_user_pattern_any_path_only_needs_a_session() {
    let mut p = policy();
    p.routes = Arc::new(RouteTable::from_variables(
        &[RoutePattern::parse("/api/auth/").unwrap()],
        None,
    ));
    let c = session_cookie();
    check(
        &p,
        req("GET", "/api/u2/tasks", vec![&c]),
        valid("u1"),
        Expect {
            reason: Reason::SessionValid,
            asked: true,
        },
    );
}

// ---- Per-route policy

const ROUTES: &str = r#"
app_origin: https://app.example
login_url: https://id.example/sign-in
routes:
  - name: public
    match:
      path: /public/
    allow: anonymous
  - name: admin
    match:
      path: /admin/
    require:
      roles: [admin, root]
    on_deny: login
  - name: verified
    match:
      path: /verified/
    require:
      email_verified: true
  - name: real
    match:
      path: /real/
    require:
      not_impersonated: true
  - name: recent
    match:
      path: /recent/
    require:
      max_age: 15m
    on_deny: login
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
    on_deny: login
  - name: team
    match:
      path: /teams/{org_slug}/
    require:
      org_roles: [member]
  - name: own
    match:
      path: /users/{user_id}/
    on_deny: login
  - name: dash
    match:
      path: /dash/
      methods: [GET, POST]
    on_deny: login
"#;

fn routed() -> Policy {
    Policy {
        routes: Arc::new(crate::routes::file::parse(ROUTES).expect("a valid policy")),
        ..policy()
    }
}

/// A valid session for u1, changed by `change`.
fn user(change: impl FnOnce(&mut SessionUser)) -> SessionLookup {
    let mut u = SessionUser {
        id: "u1".into(),
        email: Some("u1@example.com".into()),
        ..SessionUser::default()
    };
    change(&mut u);
    SessionLookup::Valid {
        user: u,
        expires_at: now() + Duration::hours(1),
        set_cookies: vec![],
        set_auth_token: None,
    }
}

/// Plan with the session cookie; the lookup's answer decides.
fn step(p: &Policy, method: &str, path: &str, lookup: SessionLookup) -> Step {
    let c = session_cookie();
    match plan(p, &req(method, path, vec![&c])) {
        Plan::Done(d) => Step::Done(d),
        Plan::Lookup(pending) => decide(p, pending, lookup, now()),
    }
}

#[test]
fn every_requirement_is_judged() {
    let p = routed();
    let minutes_ago = |m: i64| Some(now() - Duration::minutes(m));
    use Reason::*;
    let cases: Vec<(&str, SessionLookup, Reason, Detail)> = vec![
        // Roles: any one, in a comma-separated list, compared exactly.
        (
            "/admin/x",
            user(|u| u.role = Some("admin".into())),
            SessionValid,
            Detail::None,
        ),
        (
            "/admin/x",
            user(|u| u.role = Some("user, root".into())),
            SessionValid,
            Detail::None,
        ),
        (
            "/admin/x",
            user(|u| u.role = Some("user".into())),
            RoleRequired,
            Detail::RoleMissing,
        ),
        (
            "/admin/x",
            user(|u| u.role = Some("Admin".into())),
            RoleRequired,
            Detail::RoleMissing,
        ),
        (
            "/admin/x",
            user(|u| u.role = Some("administrator".into())),
            RoleRequired,
            Detail::RoleMissing,
        ),
        (
            "/admin/x",
            user(|u| u.role = Some(",".into())),
            RoleRequired,
            Detail::RoleMissing,
        ),
        ("/admin/x", user(|_| {}), RoleRequired, Detail::RoleMissing),
        // The servlet reading of the path is the admin area too.
        (
            "/admin;x/y",
            user(|_| {}),
            RoleRequired,
            Detail::RoleMissing,
        ),
        // Verified email.
        (
            "/verified/x",
            user(|u| u.email_verified = true),
            SessionValid,
            Detail::None,
        ),
        (
            "/verified/x",
            user(|_| {}),
            EmailUnverified,
            Detail::EmailNotVerified,
        ),
        // Impersonation.
        ("/real/x", user(|_| {}), SessionValid, Detail::None),
        (
            "/real/x",
            user(|u| u.impersonated = true),
            ImpersonationForbidden,
            Detail::ImpersonatedSession,
        ),
        (
            "/verified/x",
            user(|u| {
                u.impersonated = true;
                u.email_verified = true
            }),
            SessionValid,
            Detail::None,
        ),
        // Sign-in age: at most 15 minutes; unknown is too old.
        (
            "/recent/x",
            user(|u| u.signed_in_at = minutes_ago(10)),
            SessionValid,
            Detail::None,
        ),
        (
            "/recent/x",
            user(|u| u.signed_in_at = minutes_ago(15)),
            SessionValid,
            Detail::None,
        ),
        (
            "/recent/x",
            user(|u| u.signed_in_at = minutes_ago(16)),
            SessionTooOld,
            Detail::SignInTooOld,
        ),
        (
            "/recent/x",
            user(|u| u.signed_in_at = None),
            SessionTooOld,
            Detail::SignInTooOld,
        ),
        // The caller's own path.
        ("/users/u1/x", user(|_| {}), SessionValid, Detail::None),
        (
            "/users/u2/x",
            user(|_| {}),
            UserMismatch,
            Detail::PathOwnedByOtherUser,
        ),
        // No route: a session is enough; a path lacking its route's segment is denied.
        ("/elsewhere", user(|_| {}), SessionValid, Detail::None),
        ("/orgs", user(|_| {}), NoRoute, Detail::RouteSegmentMissing),
        ("/users", user(|_| {}), NoRoute, Detail::RouteSegmentMissing),
        // Anonymous: Better Auth is not asked.
        (
            "/public/x",
            SessionLookup::BadAnswer,
            PublicPath,
            Detail::None,
        ),
    ];
    for (path, lookup, reason, detail) in cases {
        let Step::Done(d) = step(&p, "GET", path, lookup) else {
            panic!("{path}: no organization is named")
        };
        assert_eq!((d.reason, d.detail), (reason, detail), "GET {path}");
        if reason == SessionValid {
            assert!(
                d.set_headers
                    .iter()
                    .any(|(k, v)| k == "x-user-id" && v == "u1"),
                "{path}"
            );
        } else {
            assert!(d.set_headers.is_empty(), "{path}");
        }
    }
    // A method the route does not list.
    let Step::Done(d) = step(&p, "DELETE", "/dash", user(|_| {})) else {
        panic!("no organization is named")
    };
    assert_eq!(
        (d.reason, d.detail),
        (Reason::NoRoute, Detail::MethodNotRouted)
    );
}

#[test]
fn route_denies_are_decided_before_any_lookup() {
    let p = routed();
    let c = session_cookie();
    for (method, path, detail) in [
        ("DELETE", "/dash/x", Detail::MethodNotRouted),
        ("GET", "/orgs/", Detail::RouteSegmentMissing),
    ] {
        // With or without a credential: no lookup, no redirect.
        for cookies in [vec![c.as_str()], vec![]] {
            let mut r = req(method, path, cookies);
            r.accept = Some("text/html");
            let Plan::Done(d) = plan(&p, &r) else {
                panic!("{method} {path}: decided without Better Auth")
            };
            assert_eq!(
                (d.reason, d.detail),
                (Reason::NoRoute, detail),
                "{method} {path}"
            );
            assert!(d.client_headers.is_empty());
        }
    }
    // The proxy named a route that is not in the policy, or named one twice.
    for (named, detail) in [
        (NamedRoute::Named("nope"), Detail::UnknownRoute),
        (NamedRoute::Repeated, Detail::RepeatedRoute),
    ] {
        let mut r = req("GET", "/public/x", vec![]);
        r.route = named;
        let Plan::Done(d) = plan(&p, &r) else {
            panic!("decided without Better Auth")
        };
        assert_eq!((d.reason, d.detail), (Reason::NoRoute, detail));
        assert_eq!(d.route.as_deref(), Some("public"));
    }
    // Naming an anonymous route never allows; naming a guarded one adds its requirements.
    let mut r = req("GET", "/elsewhere", vec![&c]);
    r.route = NamedRoute::Named("public");
    assert!(matches!(plan(&p, &r), Plan::Lookup(_)));
    r.route = NamedRoute::Named("admin");
    let Plan::Lookup(pending) = plan(&p, &r) else {
        panic!("a lookup")
    };
    let Step::Done(d) = decide(&p, pending, user(|_| {}), now()) else {
        panic!("no organization")
    };
    assert_eq!(d.reason, Reason::RoleRequired);
    assert_eq!(d.route.as_deref(), Some(crate::routes::DEFAULT_ROUTE));
}

#[test]
fn revalidate_asks_past_every_cache() {
    let p = routed();
    let c = session_cookie();
    for (path, fresh) in [
        ("/fresh/x", true),
        ("/admin/x", false),
        ("/elsewhere", false),
    ] {
        let Plan::Lookup(pending) = plan(&p, &req("GET", path, vec![&c])) else {
            panic!("{path}: a lookup")
        };
        assert_eq!(pending.query.fresh, fresh, "{path}");
    }
    let mut r = req("GET", "/elsewhere", vec![&c]);
    r.route = NamedRoute::Named("fresh");
    let Plan::Lookup(pending) = plan(&p, &r) else {
        panic!("a lookup")
    };
    assert!(pending.query.fresh, "a named route's revalidate applies");
}

/// The memberships a session on `path` waits for.
fn org_step(path: &str, lookup: SessionLookup) -> PendingOrgs {
    match step(&routed(), "GET", path, lookup) {
        Step::Orgs(orgs) => orgs,
        Step::Done(d) => panic!("{path}: decided without the memberships: {d:?}"),
    }
}

#[test]
fn organization_roles_ask_for_each_membership_then_finish() {
    let refreshed = "better-auth.session_token=new.sig";
    let lookup = || SessionLookup::Valid {
        user: SessionUser {
            id: "u1".into(),
            ..SessionUser::default()
        },
        expires_at: now() + Duration::hours(1),
        set_cookies: vec![refreshed.into()],
        set_auth_token: None,
    };
    let orgs = org_step("/orgs/o%201/tasks", lookup());
    assert_eq!(orgs.queries.len(), 1);
    let q = &orgs.queries[0];
    assert_eq!(q.org, OrgRef::Id("o 1".into()), "the segment, decoded");
    assert_eq!(q.user_id, "u1");
    assert_eq!(q.session.credential, Credential::Cookie(session_cookie()));
    assert!(!q.session.fresh);
    assert!(
        !format!("{q:?}").contains("tok123"),
        "the credential is redacted"
    );
    let orgs = org_step("/teams/acme/x", lookup());
    assert_eq!(orgs.queries[0].org, OrgRef::Slug("acme".into()));

    use Reason::*;
    let member = |role: &str| OrgLookup::Member { role: role.into() };
    for (answer, reason, detail) in [
        (member("owner"), SessionValid, Detail::None),
        (member("member, admin"), SessionValid, Detail::None),
        (member("member"), OrgForbidden, Detail::OrgRoleMissing),
        (member("Owner"), OrgForbidden, Detail::OrgRoleMissing),
        (member(""), OrgForbidden, Detail::OrgRoleMissing),
        (OrgLookup::NotMember, OrgForbidden, Detail::NotOrgMember),
        (
            OrgLookup::NoSession,
            SessionInvalid,
            Detail::SessionNotFound,
        ),
        (
            OrgLookup::Unavailable(Detail::UpstreamTimeout),
            AuthUnavailable,
            Detail::UpstreamTimeout,
        ),
        (OrgLookup::BadAnswer, AuthError, Detail::UpstreamBadAnswer),
    ] {
        let d = finish(org_step("/orgs/o1/x", lookup()), vec![answer.clone()]);
        assert_eq!((d.reason, d.detail), (reason, detail), "{answer:?}");
        assert_eq!(d.route.as_deref(), Some("org"), "{answer:?}");
        if reason.is_allow() {
            assert_eq!(d.user_id.as_deref(), Some("u1"));
            assert!(
                d.set_headers
                    .iter()
                    .any(|(k, v)| k == "x-user-id" && v == "u1")
            );
            assert_eq!(d.set_cookies, [refreshed]);
        } else {
            assert!(d.set_headers.is_empty(), "{answer:?}");
            assert!(
                d.client_headers.is_empty(),
                "403s never redirect: {answer:?}"
            );
        }
        if reason == OrgForbidden {
            assert_eq!(
                d.set_cookies,
                [refreshed],
                "the refreshed cookie still goes back"
            );
        }
    }
    // An answer missing, or one too many: never an allow.
    assert_eq!(
        finish(org_step("/orgs/o1/x", lookup()), vec![]).reason,
        AuthError
    );
    let two = vec![member("owner"), member("owner")];
    assert_eq!(
        finish(org_step("/orgs/o1/x", lookup()), two).reason,
        AuthError
    );
    // The teams route wants `member`.
    let d = finish(org_step("/teams/acme", lookup()), vec![member("member")]);
    assert_eq!(d.reason, SessionValid);
    let d = finish(org_step("/teams/acme", lookup()), vec![member("owner")]);
    assert_eq!(d.reason, OrgForbidden);
}

#[test]
fn memberships_are_asked_only_once_every_other_requirement_holds() {
    let p = routed();
    let c = session_cookie();
    // The org route named on a path without its segment: denied before any lookup.
    let mut r = req("GET", "/admin/orgs/o1", vec![&c]);
    r.route = NamedRoute::Named("org");
    let Plan::Done(d) = plan(&p, &r) else {
        panic!("denied without Better Auth")
    };
    assert_eq!(
        (d.reason, d.detail),
        (Reason::NoRoute, Detail::RouteSegmentMissing)
    );

    // The admin route named on an organization's path: the role is judged first.

    let mut r = req("GET", "/orgs/o1/x", vec![&c]);
    r.route = NamedRoute::Named("admin");
    let Plan::Lookup(pending) = plan(&p, &r) else {
        panic!("a lookup")
    };
    let Step::Done(d) = decide(&p, pending, user(|_| {}), now()) else {
        panic!("denied before any membership")
    };
    assert_eq!(d.reason, Reason::RoleRequired);
    let Plan::Lookup(pending) = plan(&p, &r) else {
        panic!("a lookup")
    };
    let Step::Orgs(orgs) = decide(&p, pending, user(|u| u.role = Some("root".into())), now())
    else {
        panic!("the role holds: the membership is asked")
    };
    assert_eq!(orgs.queries.len(), 1);
    // A session that is not valid never gets as far.
    for lookup in [
        SessionLookup::NoSession {
            set_cookies: vec![],
        },
        SessionLookup::BadAnswer,
        SessionLookup::Unavailable(Detail::Overloaded),
    ] {
        assert!(matches!(
            step(&p, "GET", "/orgs/o1/x", lookup),
            Step::Done(d) if !d.is_allow()
        ));
    }
}

/// A browser's `GET` (or another method) on `path`, with this `Accept` and these cookies.
fn navigation<'a>(
    method: &'a str,
    path: &'a str,
    accept: &'a str,
    cookies: Vec<&'a str>,
) -> CheckRequest<'a> {
    CheckRequest {
        accept: Some(accept),
        ..req(method, path, cookies)
    }
}

const SIGN_IN: &str = "https://id.example/sign-in?callbackURL=";

#[test]
fn browsers_without_a_session_are_sent_to_sign_in_on_login_routes() {
    let p = routed();
    let html = "text/html,application/xhtml+xml,*/*;q=0.8";
    // No credential: decided in the plan.
    for (method, path, accept, redirected) in [
        ("GET", "/dash/x?tab=1", html, true),
        ("HEAD", "/dash/x?tab=1", html, true),
        ("GET", "/dash/x?tab=1", "TEXT/HTML", true),
        // An API call or a form post keeps its 401.
        ("POST", "/dash/x?tab=1", html, false),
        ("GET", "/dash/x?tab=1", "application/json", false),
        ("GET", "/dash/x?tab=1", "*/*", false),
        // A route without on_deny: login.
        ("GET", "/verified/x", html, false),
        ("GET", "/elsewhere", html, false),
    ] {
        let r = navigation(method, path, accept, vec![]);
        let (d, asked) = run(&p, &r, user(|_| {}));
        assert!(!asked);
        assert_eq!(
            d.detail,
            Detail::NoSessionCookie,
            "{method} {path} {accept}"
        );
        if redirected {
            assert_eq!(d.reason, Reason::LoginRequired, "{method} {path} {accept}");
            assert_eq!(d.reason.http_status(), 302);
            assert_eq!(
                d.client_headers,
                [(
                    "location".to_string(),
                    format!("{SIGN_IN}https%3A%2F%2Fapp.example%2Fdash%2Fx%3Ftab%3D1")
                )]
            );
        } else {
            assert_eq!(
                d.reason,
                Reason::SessionRequired,
                "{method} {path} {accept}"
            );
            assert!(d.client_headers.is_empty());
        }
    }
    // A malformed cookie is a 401 too.
    let r = navigation(
        "GET",
        "/dash",
        html,
        vec!["better-auth.session_token=nodot"],
    );
    let (d, _) = run(&p, &r, user(|_| {}));
    assert_eq!(
        (d.reason, d.detail),
        (Reason::LoginRequired, Detail::MalformedSessionCookie)
    );
}

#[test]
fn only_401s_redirect_and_403s_never_do() {
    let p = routed();
    let c = session_cookie();
    let html = "text/html";
    let clearing = "better-auth.session_token=; Max-Age=0";
    let redirect = |path: &str| {
        format!("{SIGN_IN}{}", {
            let callback = format!("https://app.example{path}");
            percent_encoding::utf8_percent_encode(&callback, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2D", "-")
                .replace("%2E", ".")
                .replace("%5F", "_")
                .replace("%7E", "~")
        })
    };
    let cases: Vec<(&str, SessionLookup, Reason, Detail)> = vec![
        // 401s after the lookup: sent to sign in, with Better Auth's cookies.
        (
            "/dash",
            SessionLookup::NoSession {
                set_cookies: vec![clearing.into()],
            },
            Reason::LoginRequired,
            Detail::SessionNotFound,
        ),
        (
            "/dash",
            session("u1", None, None, now() - Duration::seconds(1), &[clearing]),
            Reason::LoginRequired,
            Detail::SessionExpired,
        ),
        (
            "/recent/x",
            user(|u| u.signed_in_at = Some(now() - Duration::hours(1))),
            Reason::LoginRequired,
            Detail::SignInTooOld,
        ),
        // 403s stay 403s, even on a login route.
        (
            "/admin/x",
            user(|_| {}),
            Reason::RoleRequired,
            Detail::RoleMissing,
        ),
        (
            "/users/u2",
            user(|_| {}),
            Reason::UserMismatch,
            Detail::PathOwnedByOtherUser,
        ),
        // Errors stay errors.
        (
            "/dash",
            SessionLookup::Unavailable(Detail::UpstreamTimeout),
            Reason::AuthUnavailable,
            Detail::UpstreamTimeout,
        ),
        (
            "/dash",
            SessionLookup::BadAnswer,
            Reason::AuthError,
            Detail::UpstreamBadAnswer,
        ),
        (
            "/dash",
            SessionLookup::RateLimited {
                retry_after: Some(3),
            },
            Reason::RateLimited,
            Detail::CredentialRateLimited,
        ),
    ];
    for (path, lookup, reason, detail) in cases {
        let r = navigation("GET", path, html, vec![&c]);
        let (d, asked) = run(&p, &r, lookup);
        assert!(asked, "{path}");
        assert_eq!((d.reason, d.detail), (reason, detail), "{path}");
        let location = d.client_headers.iter().find(|(k, _)| k == "location");
        if reason == Reason::LoginRequired {
            assert_eq!(
                location.map(|(_, v)| v.clone()),
                Some(redirect(path)),
                "{path}"
            );
        } else {
            assert!(location.is_none(), "{path}: {:?}", d.client_headers);
        }
        if detail == Detail::SessionNotFound || detail == Detail::SessionExpired {
            assert_eq!(d.set_cookies, [clearing], "{path}");
        }
    }
    // The same 401s for an API client: no redirect.
    let r = req("GET", "/dash", vec![&c]);
    let (d, _) = run(
        &p,
        &r,
        SessionLookup::NoSession {
            set_cookies: vec![],
        },
    );
    assert_eq!(d.reason, Reason::SessionInvalid);
    assert!(d.client_headers.is_empty());
    // A membership whose session ended meanwhile is a 401 like the others: redirected.
    let orgs = match plan(&p, &navigation("GET", "/orgs/o1", html, vec![&c])) {
        Plan::Lookup(pending) => match decide(&p, pending, user(|_| {}), now()) {
            Step::Orgs(orgs) => orgs,
            Step::Done(d) => panic!("{d:?}"),
        },
        Plan::Done(d) => panic!("{d:?}"),
    };
    let d = finish(orgs, vec![OrgLookup::NoSession]);
    assert_eq!(
        (d.reason, d.detail),
        (Reason::LoginRequired, Detail::SessionNotFound)
    );
    assert!(d.client_headers.iter().any(|(name, _)| name == "location"));
}

#[test]
fn decisions_carry_the_route_of_the_path() {
    let p = routed();
    let c = session_cookie();
    for (path, cookies, route) in [
        ("/public/x", vec![], "public"),
        ("/admin/x", vec![], "admin"),
        ("/admin/x", vec![c.as_str()], "admin"),
        ("/elsewhere", vec![c.as_str()], "_default"),
        ("/admin;x/y", vec![c.as_str()], "_default"),
    ] {
        let (d, _) = run(&p, &req("GET", path, cookies.clone()), user(|_| {}));
        assert_eq!(d.route.as_deref(), Some(route), "{path} {cookies:?}");
    }
    // Before the routes are consulted, none.
    let (d, _) = run(&p, &req("GET", "/a%2Fb", vec![]), user(|_| {}));
    assert_eq!((d.reason, d.route), (Reason::BadRequest, None));
}
