//! Property tests of the translation, with proptest (cargo-fuzz needs a nightly toolchain;
//! proptest is the stable equivalent): `decision::plan` (+ `decide`) on arbitrary
//! `CheckRequest`s and lookup outcomes, against an oracle written from the README's rules, then
//! `grpc::check_response` and `http::response` on every resulting decision; and the user-id rule
//! on its own. The same target through the running service (the gRPC adapter, the four ways a
//! proxy names the original request): `properties_transports.rs`. The other targets:
//! `properties_cookies.rs`, `properties_paths.rs`; the generators they share: `support/props.rs`.
//!
//! Cases per property: `PROPTEST_CASES` times this target's weight (`W_TRANSLATION`; the
//! calibration is in `support/props.rs`): the default takes a few seconds, **`PROPTEST_CASES=12000`
//! (CI) about a minute**, this file and `properties_transports.rs` together (the translation
//! target). Failure persistence is off: a failure found here becomes a plain `#[test]` at the end
//! of this file with its minimal input.

#[path = "support/props.rs"]
mod props;

use std::collections::BTreeMap;
use std::sync::Arc;

use better_authz::cookies::{BetterAuthCookies, CookieVerdict, MAX_COOKIE_HEADER_BYTES};
use better_authz::credentials::{Credential, CredentialKind};
use better_authz::decision::{
    Decision, IdentityHeaders, Plan, Policy, SessionLookup, SessionUser, Step, decide, plan,
};
use better_authz::path::{NormalPath, PathPrefix, UserPathPattern};
use better_authz::reason::{Detail, Reason};
use better_authz::routes::{Access, RoutePattern, RouteTable};
use proptest::prelude::*;
use proptest::sample::select;
use time::OffsetDateTime;

use props::*;

fn identity() -> IdentityHeaders {
    IdentityHeaders {
        user_id: "x-user-id".into(),
        email: "x-user-email".into(),
        name: "x-user-name".into(),
    }
}

/// The shorthand the policy's routes were made from, read back as the variables' own parsers
/// read it: the oracle for `RouteTable::from_variables`.
fn shorthand(policy: &Policy) -> (Vec<PathPrefix>, Option<UserPathPattern>) {
    let mut public = Vec::new();
    let mut user = None;
    for route in policy.routes.routes() {
        let raw = route.pattern.to_string();
        match route.access {
            Access::Anonymous => public.push(PathPrefix::parse(&raw).unwrap()),
            Access::Session(_) => user = Some(UserPathPattern::parse(&raw).unwrap()),
        }
    }
    (public, user)
}

/// The decision of a check that names no organization (the shorthand never does).
fn decided(step: Step) -> Decision {
    match step {
        Step::Done(d) => d,
        Step::Orgs(_) => panic!("the shorthand names no organization"),
    }
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(
            prop::collection::vec(select(WORDS[..9].to_vec()), 1..3),
            0..3,
        ),
        prop::option::weighted(0.8, pattern_strategy()),
        any::<bool>(),
    )
        .prop_map(|(public, pattern, allow_preflight)| Policy {
            credentials: vec![CredentialKind::Cookie],
            api_key_header: "x-api-key".into(),
            cookie_prefix: PREFIX.into(),
            routes: Arc::new(RouteTable::from_variables(
                &public
                    .iter()
                    .map(|segs| RoutePattern::parse(&format!("/{}/", segs.join("/"))).unwrap())
                    .collect::<Vec<_>>(),
                pattern.map(|(raw, _)| RoutePattern::parse(&raw).unwrap()),
            )),
            allow_preflight,
            identity: identity(),
            header_map: vec![],
            jwt_header: None,
            strip_credentials: false,
        })
}

fn any_detail() -> impl Strategy<Value = Detail> {
    select(ALL_DETAILS.to_vec())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn user_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["u1", "u2", "auth", "API", "x", "%", "tasks"]).prop_map(str::to_owned),
        2 => "[a-zA-Z0-9]{1,12}",
        1 => any::<String>(),
    ]
}

fn set_cookie() -> impl Strategy<Value = String> {
    prop_oneof![
        "better-auth\\.session_token=[A-Za-z0-9.]{0,20}; Max-Age=[0-9]{1,6}; Path=/; HttpOnly",
        "[ -~]{0,30}",
    ]
}

fn set_cookies() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(set_cookie(), 0..3)
}

fn lookup_strategy() -> impl Strategy<Value = SessionLookup> {
    prop_oneof![
        6 => (
            user_id(),
            prop::option::of(prop_oneof!["[a-z0-9]{1,8}@example\\.com", any::<String>()]),
            prop::option::of(any::<String>()),
            -3600i64..3600,
            set_cookies(),
        )
            .prop_map(|(id, email, name, expires_in, set_cookies)| SessionLookup::Valid {
                user: SessionUser {
                    id,
                    email,
                    name,
                    mapped: vec![],
                    jwt: None,
                    ..SessionUser::default()
                },
                expires_at: now() + time::Duration::seconds(expires_in),
                set_cookies,
                // Never for a cookie client, whatever Better Auth sends.
                set_auth_token: Some("refreshed.token".into()),
            }),
        1 => prop::option::of(0u64..100_000)
            .prop_map(|retry_after| SessionLookup::RateLimited { retry_after }),
        2 => set_cookies().prop_map(|set_cookies| SessionLookup::NoSession { set_cookies }),
        1 => any_detail().prop_map(SessionLookup::Unavailable),
        1 => Just(SessionLookup::BadAnswer),
    ]
}

fn header_safe(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

/// A user id must also have no edge blanks (HTTP parsers would strip them).
fn id_safe(v: &str) -> bool {
    header_safe(v) && v.trim() == v
}

fn is_preflight(r: &Req) -> bool {
    r.method.eq_ignore_ascii_case("OPTIONS")
        && r.origin.as_deref().is_some_and(|v| !v.is_empty())
        && r.acrm.as_deref().is_some_and(|v| !v.is_empty())
}

/// Properties of step one: what is decided without Better Auth, and what is asked.
fn check_plan(policy: &Policy, r: &Req, planned: &Plan) -> Result<(), TestCaseError> {
    let path = NormalPath::parse(&r.path);
    let public = path
        .as_ref()
        .is_ok_and(|p| shorthand(policy).0.iter().any(|pp| pp.matches(p)));
    let cookies = BetterAuthCookies::parse(PREFIX, r.cookies.iter().map(String::as_str));
    let cookie_bytes: usize = r.cookies.iter().map(String::len).sum();
    match planned {
        Plan::Lookup(pending) => {
            // Better Auth is only asked about a usable, protected path with a plausible session
            // cookie, within the size limit, and only with our cookies.
            prop_assert!(path.is_ok() && !public);
            prop_assert!(!(policy.allow_preflight && is_preflight(r)));
            prop_assert!(cookie_bytes <= MAX_COOKIE_HEADER_BYTES);
            prop_assert_eq!(cookies.verdict(), CookieVerdict::Plausible);
            prop_assert_eq!(
                &pending.query.credential,
                &Credential::Cookie(cookies.header.clone())
            );
            prop_assert_eq!(&pending.query.client_addr, &r.client_addr);
            prop_assert_eq!(&pending.query.user_agent, &r.user_agent);
        }
        Plan::Done(d) => {
            prop_assert_eq!(
                public,
                d.reason == Reason::PublicPath,
                "public path {:?}",
                path
            );
            if path.is_err() {
                prop_assert_eq!(d.reason, Reason::BadRequest);
            }
            if d.is_allow() {
                // Nothing is allowed by a session without asking Better Auth.
                prop_assert!(matches!(d.reason, Reason::PublicPath | Reason::Preflight));
                prop_assert!(d.set_headers.is_empty() && d.user_id.is_none());
                let mut removed = d.remove_headers.clone();
                removed.sort();
                prop_assert_eq!(removed, vec!["x-user-email", "x-user-id", "x-user-name"]);
                if d.reason == Reason::Preflight {
                    prop_assert!(policy.allow_preflight && is_preflight(r));
                }
            } else {
                prop_assert!(d.set_cookies.is_empty() && d.user_id.is_none());
                prop_assert!(d.set_headers.is_empty() && d.remove_headers.is_empty());
            }
        }
    }
    Ok(())
}

/// Properties of step two against an oracle written from the README's rules.
fn check_decide(
    policy: &Policy,
    r: &Req,
    lookup: &SessionLookup,
    d: &Decision,
) -> Result<(), TestCaseError> {
    match lookup {
        SessionLookup::Unavailable(detail) => {
            prop_assert_eq!((d.reason, d.detail), (Reason::AuthUnavailable, *detail));
        }
        SessionLookup::BadAnswer => prop_assert_eq!(d.reason, Reason::AuthError),
        SessionLookup::RateLimited { retry_after } => {
            prop_assert_eq!(d.reason, Reason::RateLimited);
            let want: Vec<(String, String)> = retry_after
                .map(|s| ("retry-after".to_owned(), s.to_string()))
                .into_iter()
                .collect();
            prop_assert_eq!(&d.client_headers, &want);
        }
        SessionLookup::NoSession { set_cookies } => {
            prop_assert_eq!(d.reason, Reason::SessionInvalid);
            prop_assert_eq!(&d.set_cookies, set_cookies);
        }
        SessionLookup::Valid {
            user,
            expires_at,
            set_cookies,
            ..
        } => {
            // A cookie client never gets the bearer token.
            prop_assert!(d.client_headers.is_empty());
            let path = NormalPath::parse(&r.path).unwrap();
            let (_, user_path) = shorthand(policy);
            let segments: Vec<&str> = user_path
                .as_ref()
                .map(|p| p.user_segments(&path).collect())
                .unwrap_or_default();
            let segment = segments
                .iter()
                .find(|s| **s != user.id)
                .or(segments.first());
            let want = if *expires_at <= now() {
                Reason::SessionInvalid
            } else if !id_safe(&user.id) {
                Reason::AuthError
            } else if segment.is_some_and(|s| *s != user.id) {
                Reason::UserMismatch
            } else {
                Reason::SessionValid
            };
            prop_assert_eq!(d.reason, want, "user {:?}, segment {:?}", user.id, segment);
            match want {
                Reason::SessionValid => {
                    prop_assert_eq!(&d.set_cookies, set_cookies);
                    prop_assert_eq!(d.user_id.as_deref(), Some(user.id.as_str()));
                    prop_assert_eq!(
                        &d.set_headers[0],
                        &("x-user-id".to_owned(), user.id.clone())
                    );
                    // Every identity header is either set to Better Auth's value or removed.
                    for (name, value) in
                        [("x-user-email", &user.email), ("x-user-name", &user.name)]
                    {
                        let set = d.set_headers.iter().find(|(n, _)| n == name);
                        let removed = d.remove_headers.iter().any(|n| n == name);
                        // Values are trimmed, then sent when still safe.
                        match value.as_deref().map(str::trim).filter(|v| header_safe(v)) {
                            Some(v) => prop_assert!(set.is_some_and(|(_, s)| s == v) && !removed),
                            None => prop_assert!(set.is_none() && removed),
                        }
                    }
                    for (_, v) in &d.set_headers {
                        prop_assert!(header_safe(v));
                    }
                }
                Reason::UserMismatch => {
                    prop_assert_eq!(d.user_id.as_deref(), Some(user.id.as_str()));
                    prop_assert!(d.set_headers.is_empty());
                }
                _ => prop_assert!(d.set_headers.is_empty()),
            }
        }
    }
    Ok(())
}

/// `plan` and `decide` on arbitrary requests and lookup outcomes, then both renderings.
#[test]
fn translation_plan_decide_render() {
    check(
        W_TRANSLATION,
        (policy_strategy(), req_strategy(), lookup_strategy()),
        |(policy, r, lookup)| {
            let planned = plan(&policy, &r.core());
            check_plan(&policy, &r, &planned)?;
            let d = match planned {
                Plan::Done(d) => d,
                Plan::Lookup(pending) => {
                    let d = decided(decide(&policy, pending, lookup.clone(), now()));
                    check_decide(&policy, &r, &lookup, &d)?;
                    d
                }
            };
            check_rendering(&d, &r.secrets())?;
            Ok(())
        },
    );
}

/// The user-id rule on its own: for any path and any user, a session whose user is not the
/// path's `{user_id}` segment is `USER_MISMATCH`, and is allowed otherwise.
#[test]
fn translation_another_users_path_is_always_forbidden() {
    check(
        W_TRANSLATION,
        (
            pattern_strategy(),
            raw_path(),
            user_id(),
            prop::bool::weighted(0.3),
            signed_token(),
        ),
        |((pattern_raw, pattern), raw, id, id_is_the_segment, token)| {
            let policy = Policy {
                credentials: vec![CredentialKind::Cookie],
                api_key_header: "x-api-key".into(),
                cookie_prefix: PREFIX.into(),
                routes: Arc::new(RouteTable::from_variables(
                    &[],
                    Some(RoutePattern::parse(&pattern_raw).unwrap()),
                )),
                allow_preflight: true,
                identity: identity(),
                header_map: vec![],
                jwt_header: None,
                strip_credentials: false,
            };
            let cookie = format!("better-auth.session_token={token}");
            let r = Req {
                method: "GET".into(),
                path: raw.clone(),
                cookies: vec![cookie],
                origin: None,
                acrm: None,
                user_agent: None,
                client_addr: None,
            };
            match plan(&policy, &r.core()) {
                Plan::Done(d) => {
                    prop_assert!(NormalPath::parse(&raw).is_err(), "{raw:?}: {d:?}");
                    prop_assert_eq!(d.reason, Reason::BadRequest);
                }
                Plan::Lookup(pending) => {
                    let p = NormalPath::parse(&raw).unwrap();
                    // What Envoy/Starlette route to, and what Tomcat routes to (the model).
                    let literal = pattern_segment(&pattern, p.segments());
                    let servlet = pattern_segment(&pattern, &servlet_model(&raw).unwrap());
                    let segment = literal.clone().or(servlet.clone());
                    // Often the session's user is the path's own: both sides of the rule are seen.
                    let id = match &segment {
                        Some(s) if id_is_the_segment => s.clone(),
                        _ => id,
                    };
                    let lookup = SessionLookup::Valid {
                        user: SessionUser {
                            id: id.clone(),
                            email: None,
                            name: None,
                            mapped: vec![],
                            jwt: None,
                            ..SessionUser::default()
                        },
                        expires_at: now() + time::Duration::hours(1),
                        set_cookies: vec![],
                        set_auth_token: None,
                    };
                    let d = decided(decide(&policy, pending, lookup, now()));
                    let other = [literal, servlet].into_iter().flatten().find(|x| *x != id);
                    if !id_safe(&id) {
                        prop_assert_eq!(d.reason, Reason::AuthError);
                    } else if let Some(x) = other {
                        prop_assert_eq!(
                            d.reason,
                            Reason::UserMismatch,
                            "segment {:?} vs {:?}",
                            x,
                            id
                        );
                        prop_assert!(!d.is_allow());
                    } else {
                        prop_assert_eq!(d.reason, Reason::SessionValid);
                    }
                    check_rendering(&d, &r.secrets())?;
                }
            }
            Ok(())
        },
    );
}

/// The generators reach every reason, and the user rule sees both sides (else the properties
/// above would pass vacuously).
#[test]
fn translation_generators_reach_every_reason() {
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lookups = 0;
    for (policy, r, lookup) in sample((policy_strategy(), req_strategy(), lookup_strategy()), 2000)
    {
        let d = match plan(&policy, &r.core()) {
            Plan::Done(d) => d,
            Plan::Lookup(pending) => {
                lookups += 1;
                decided(decide(&policy, pending, lookup, now()))
            }
        };
        *reasons.entry(d.reason.code()).or_default() += 1;
    }
    eprintln!("reasons over 2000 requests ({lookups} lookups): {reasons:?}");
    // Reasons only a policy file's routes can give are reached by the routes' own tables
    // (src/routes/tests.rs, src/decision/tests.rs); these generators make the shorthand.
    let policy_only = [
        Reason::RoleRequired,
        Reason::OrgForbidden,
        Reason::EmailUnverified,
        Reason::ImpersonationForbidden,
        Reason::SessionTooOld,
        Reason::NoRoute,
        Reason::LoginRequired,
    ];
    for r in Reason::ALL.iter().filter(|r| !policy_only.contains(r)) {
        assert!(
            reasons.get(r.code()).is_some_and(|n| *n >= 10),
            "{r} barely reached: {reasons:?}"
        );
    }

    // The user rule sees both sides: matching segments that differ from the user, and equal.
    let (mut mismatch, mut same) = (0, 0);
    for ((pattern_raw, _), raw, id) in sample((pattern_strategy(), raw_path(), user_id()), 2000) {
        let up = UserPathPattern::parse(&pattern_raw).unwrap();
        if let Ok(p) = NormalPath::parse(&raw)
            && let Some(x) = up.user_segments(&p).next()
        {
            if x == id { same += 1 } else { mismatch += 1 }
        }
    }
    eprintln!("user pattern over 2000 inputs: {mismatch} mismatches, {same} same user");
    assert!(mismatch >= 30 && same >= 3, "{mismatch} / {same}");
}
