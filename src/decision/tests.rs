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
