use proptest::prelude::*;

use super::*;

/// A policy the tests rely on being valid.
fn table(yaml: &str) -> RouteTable {
    file::parse(yaml).unwrap_or_else(|problems| panic!("refused: {problems:#?}"))
}

/// The problems of a policy the tests rely on being refused.
fn problems(yaml: &str) -> Vec<String> {
    match file::parse(yaml) {
        Ok(t) => panic!("accepted, with {} routes", t.routes().len()),
        Err(problems) => problems,
    }
}

fn path(raw: &str) -> NormalPath {
    NormalPath::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
}

/// What the routes say of a request, in one line: `route anonymous`, `route session` or
/// `route deny <detail>`.
fn outcome(d: &Demand) -> String {
    let route = d.route.as_deref().unwrap_or("-");
    match (d.deny, d.anonymous) {
        (Some((reason, detail)), _) => {
            assert_eq!(reason, Reason::NoRoute, "routes only deny with NO_ROUTE");
            format!("{route} deny {}", detail.code())
        }
        (None, true) => format!("{route} anonymous"),
        (None, false) => format!("{route} session"),
    }
}

fn demand(t: &RouteTable, method: &str, raw: &str, host: Option<&str>) -> Demand {
    t.demand(&path(raw), method, host, NamedRoute::None)
}

/// Every `(method, path, host, expected outcome)` row against `t`.
fn check(t: &RouteTable, rows: &[(&str, &str, Option<&str>, &str)]) {
    for (method, raw, host, want) in rows {
        let got = outcome(&demand(t, method, raw, *host));
        assert_eq!(got, *want, "{method} {raw} host={host:?}");
    }
}

const POLICY: &str = r#"
routes:
  - name: health
    match:
      path: /healthz/
      methods: [GET]
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
  - name: api-write
    match:
      path: /api/
      methods: [POST, put]
      hosts: [API.example.com]
    require:
      roles: [writer]
  - name: api-read
    match:
      path: /api/
      methods: [GET]
  - name: org
    match:
      path: /orgs/{org_id}/
    require:
      org_roles: [owner, admin]
  - name: team
    match:
      path: /t/{org_slug}/settings/
    require:
      org_roles: [owner]
  - name: own
    match:
      path: /users/{user_id}/
  - name: first
    match:
      path: /shadow/
    require:
      email_verified: true
  - name: second
    match:
      path: /shadow/
    allow: anonymous
"#;

#[test]
fn routes_are_tried_in_order_and_the_first_fit_wins() {
    let t = table(POLICY);
    check(
        &t,
        &[
            ("GET", "/healthz", None, "health anonymous"),
            ("GET", "/healthz/deep?x=1", None, "health anonymous"),
            ("GET", "/public/a/b", None, "public anonymous"),
            ("GET", "/admin", None, "admin session"),
            ("GET", "/admin/users/7", None, "admin session"),
            // A later route with the same path never applies.
            ("GET", "/shadow/x", None, "first session"),
            // Whole segments only.
            ("GET", "/publicity", None, "_default session"),
            ("GET", "/administrator", None, "_default session"),
            ("GET", "/", None, "_default session"),
            ("GET", "/elsewhere", None, "_default session"),
        ],
    );
}

#[test]
fn methods_and_hosts_narrow_a_route_and_a_forgotten_one_denies() {
    let t = table(POLICY);
    check(
        &t,
        &[
            // HEAD fits where GET is listed.
            ("HEAD", "/healthz", None, "health anonymous"),
            // Not the default: a forgotten method must not fall through.
            ("POST", "/healthz", None, "health deny method_not_routed"),
            ("DELETE", "/healthz", None, "health deny method_not_routed"),
            // An anonymous route compares methods exactly.
            ("get", "/healthz", None, "health deny method_not_routed"),
            // Hosts compare case-insensitively, without port or trailing dot.
            (
                "POST",
                "/api/x",
                Some("api.example.com"),
                "api-write session",
            ),
            (
                "PUT",
                "/api/x",
                Some("API.Example.COM:8443"),
                "api-write session",
            ),
            (
                "POST",
                "/api/x",
                Some("api.example.com."),
                "api-write session",
            ),
            // A route with requirements compares methods case-insensitively (listed `put`).
            (
                "put",
                "/api/x",
                Some("api.example.com"),
                "api-write session",
            ),
            // Another host: the later route does not admit POST either.
            (
                "POST",
                "/api/x",
                Some("other.example"),
                "api-write deny method_not_routed",
            ),
            ("POST", "/api/x", None, "api-write deny method_not_routed"),
            // Another method: the later route fits.
            ("GET", "/api/x", Some("other.example"), "api-read session"),
            ("HEAD", "/api/x", None, "api-read session"),
            ("DELETE", "/api/x", None, "api-write deny method_not_routed"),
        ],
    );

    // A later route that fits wins over the deny.
    let t = table(
        r#"
routes:
  - name: reads
    match:
      path: /docs/
      methods: [GET]
      hosts: [docs.example]
    allow: anonymous
  - name: everything
    match:
      path: /
"#,
    );
    check(
        &t,
        &[
            ("GET", "/docs/a", Some("docs.example:80"), "reads anonymous"),
            ("GET", "/docs/a", Some("DOCS.example"), "reads anonymous"),
            (
                "GET",
                "/docs/a",
                Some("other.example"),
                "everything session",
            ),
            (
                "POST",
                "/docs/a",
                Some("docs.example"),
                "everything session",
            ),
            ("GET", "/x", None, "everything session"),
        ],
    );
}

#[test]
fn anonymous_routes_compare_exactly_and_guarded_routes_ignore_case() {
    let t = table(POLICY);
    check(
        &t,
        &[
            ("GET", "/PUBLIC/x", None, "_default session"),
            ("GET", "/Public/x", None, "_default session"),
            ("GET", "/HEALTHZ", None, "_default session"),
            ("GET", "/ADMIN/x", None, "admin session"),
            ("GET", "/aDmIn", None, "admin session"),
            ("GET", "/%41dmin/x", None, "admin session"),
            ("GET", "/ORGS/o1", None, "org session"),
        ],
    );
}

#[test]
fn placeholders_bind_decoded_segments_and_a_missing_one_denies() {
    let t = table(POLICY);
    check(
        &t,
        &[
            ("GET", "/orgs", None, "org deny route_segment_missing"),
            ("GET", "/orgs/", None, "org deny route_segment_missing"),
            (
                "GET",
                "/orgs/o1/../",
                None,
                "org deny route_segment_missing",
            ),
            ("GET", "/users", None, "own deny route_segment_missing"),
            ("GET", "/t", None, "team deny route_segment_missing"),
            // The placeholder is there but a literal after it is not: another path.
            ("GET", "/t/acme", None, "_default session"),
            ("GET", "/t/acme/settings/x", None, "team session"),
        ],
    );

    // Short means: past the literal prefix, before a placeholder. A path that ends within the
    // prefix is not under the route (the home page is not an organization's).
    let t2 = table(
        r#"
routes:
  - name: deep
    match:
      path: /api/v1/{user_id}/
  - name: both
    match:
      path: /o/{org_id}/u/{user_id}/
"#,
    );
    check(
        &t2,
        &[
            ("GET", "/", None, "_default session"),
            ("GET", "/api", None, "_default session"),
            ("GET", "/api/v1", None, "deep deny route_segment_missing"),
            ("GET", "/API/V1/", None, "deep deny route_segment_missing"),
            ("GET", "/api/v2", None, "_default session"),
            ("GET", "/o", None, "both deny route_segment_missing"),
            ("GET", "/o/o1", None, "both deny route_segment_missing"),
            ("GET", "/o/o1/u", None, "both deny route_segment_missing"),
            ("GET", "/o/o1/v", None, "_default session"),
            ("GET", "/o/o1/u/u1", None, "both session"),
        ],
    );
    let t3 = table("routes:\n  - name: tenant\n    match:\n      path: /{org_slug}/\n");
    check(
        &t3,
        &[
            ("GET", "/", None, "tenant deny route_segment_missing"),
            ("GET", "/acme", None, "tenant session"),
        ],
    );

    let d = demand(&t, "GET", "/orgs/o1/tasks", None);
    assert_eq!(
        d.orgs,
        [(
            OrgRef::Id("o1".into()),
            vec!["owner".into(), "admin".into()]
        )]
    );
    let d = demand(&t, "GET", "/orgs/a%20b%26organizationId=x/tasks", None);
    assert_eq!(d.orgs[0].0, OrgRef::Id("a b&organizationId=x".into()));
    let d = demand(&t, "GET", "/t/Acme/settings", None);
    assert_eq!(
        d.orgs,
        [(OrgRef::Slug("Acme".into()), vec!["owner".into()])]
    );
    let d = demand(&t, "GET", "/users/%75%31/x", None);
    assert_eq!(d.users, ["u1"]);
    assert!(d.orgs.is_empty() && d.roles.is_empty());
    let d = demand(&t, "GET", "/admin/x", None);
    assert_eq!(d.roles, [vec!["admin".to_string()]]);
    // No route: a valid session and nothing more.
    assert_eq!(
        demand(&t, "GET", "/elsewhere", None),
        Demand {
            route: Some(Arc::from(DEFAULT_ROUTE)),
            ..Demand::default()
        }
    );
}

#[test]
fn shorthand_routes_keep_their_old_meaning() {
    let t = RouteTable::from_variables(
        &[RoutePattern::parse("/api/auth/").unwrap()],
        Some(RoutePattern::parse("/api/{user_id}/").unwrap()),
    );
    assert_eq!(
        t.routes().iter().map(|r| &*r.name).collect::<Vec<_>>(),
        ["public-1", "own"]
    );
    check(
        &t,
        &[
            ("GET", "/api/auth/get-session", None, "public-1 anonymous"),
            ("POST", "/api/auth", None, "public-1 anonymous"),
            ("GET", "/API/auth", None, "own session"),
            // Not under the pattern: a plain session, not a deny.
            ("GET", "/api", None, "_default session"),
            ("GET", "/api/u1/tasks", None, "own session"),
        ],
    );
    assert_eq!(demand(&t, "GET", "/API/U2", None).users, ["U2"]);
}

#[test]
fn every_reading_of_a_path_with_parameters_is_judged() {
    let t = table(POLICY);
    check(
        &t,
        &[
            // Anonymous only when both readings are.
            ("GET", "/public;x/y", None, "_default session"),
            ("GET", "/public/y;jsessionid=1", None, "public anonymous"),
            // The servlet reading is the admin area: its requirements apply.
            ("GET", "/admin;x/y", None, "_default session"),
            ("GET", "/;x/admin", None, "_default session"),
            // The servlet reading lacks the organization.
            (
                "GET",
                "/orgs;x",
                None,
                "_default deny route_segment_missing",
            ),
            // Dot segments and encodings resolve before matching.
            ("GET", "/public/../admin/x", None, "admin session"),
            ("GET", "/public/%2e%2e/admin", None, "admin session"),
            ("GET", "//admin//x", None, "admin session"),
        ],
    );
    assert_eq!(
        demand(&t, "GET", "/admin;x/y", None).roles,
        [vec!["admin".to_string()]]
    );
    // Both readings name a user: both are compared with the caller.
    assert_eq!(
        demand(&t, "GET", "/users/u1;x/y", None).users,
        ["u1;x", "u1"]
    );
    let d = demand(&t, "GET", "/orgs/o1;v=2/x", None);
    let orgs: Vec<&OrgRef> = d.orgs.iter().map(|(o, _)| o).collect();
    assert_eq!(
        orgs,
        [&OrgRef::Id("o1;v=2".into()), &OrgRef::Id("o1".into())]
    );
}

#[test]
fn named_routes_add_requirements_and_never_allow() {
    let t = table(POLICY);
    let named = |raw: &str, route: NamedRoute<'_>| t.demand(&path(raw), "GET", None, route);

    // Added to the path's route; the label stays the path's.
    let d = named("/public/x", NamedRoute::Named("admin"));
    assert_eq!(outcome(&d), "public session");
    assert_eq!(d.roles, [vec!["admin".to_string()]]);
    let d = named("/elsewhere", NamedRoute::Named("first"));
    assert_eq!(outcome(&d), "_default session");
    assert!(d.email_verified);

    // Naming an anonymous route adds nothing.
    let d = named("/admin/x", NamedRoute::Named("public"));
    assert_eq!(outcome(&d), "admin session");
    assert_eq!(d.roles, [vec!["admin".to_string()]]);
    assert_eq!(
        outcome(&named("/elsewhere", NamedRoute::Named("health"))),
        "_default session"
    );
    assert_eq!(
        outcome(&named("/public/x", NamedRoute::Named("public"))),
        "public anonymous"
    );

    // Unknown or repeated: denied, even on an anonymous path.
    for raw in ["/public/x", "/admin", "/elsewhere"] {
        assert!(
            outcome(&named(raw, NamedRoute::Named("nope"))).ends_with("deny unknown_route"),
            "{raw}"
        );
        assert!(
            outcome(&named(raw, NamedRoute::Repeated)).ends_with("deny repeated_route"),
            "{raw}"
        );
    }
    assert!(outcome(&named("/x", NamedRoute::Named(""))).ends_with("deny unknown_route"));
    assert!(outcome(&named("/x", NamedRoute::Named("ADMIN"))).ends_with("deny unknown_route"));

    // A named route with a placeholder binds it from the path, or denies without it.
    let d = named("/orgs/o2/x", NamedRoute::Named("org"));
    assert_eq!(d.orgs.len(), 2, "the path's route and the named one");
    assert!(d.orgs.iter().all(|(o, _)| *o == OrgRef::Id("o2".into())));
    assert_eq!(
        outcome(&named("/elsewhere", NamedRoute::Named("org"))),
        "_default deny route_segment_missing"
    );
    assert_eq!(
        outcome(&named("/orgs", NamedRoute::Named("org"))),
        "org deny route_segment_missing"
    );
    assert_eq!(
        named("/users/u1", NamedRoute::Named("own")).users,
        ["u1", "u1"]
    );
}

#[test]
fn requirements_of_several_routes_combine_towards_the_strictest() {
    let t = table(
        r#"
routes:
  - name: a
    match:
      path: /a/
    require:
      max_age: 1h
      revalidate: true
  - name: b
    match:
      path: /b/
    require:
      max_age: 90s
      not_impersonated: true
"#,
    );
    let d = t.demand(&path("/a/x"), "GET", None, NamedRoute::Named("b"));
    assert_eq!(d.max_age, Some(Duration::from_secs(90)));
    assert!(d.revalidate && d.not_impersonated && !d.email_verified);
    let d = t.demand(&path("/b"), "GET", None, NamedRoute::Named("a"));
    assert_eq!(d.max_age, Some(Duration::from_secs(90)));
}

#[test]
fn the_trie_finds_a_handful_of_candidates_among_many_routes() {
    let mut yaml = String::from("routes:\n");
    for i in 0..5_000 {
        yaml.push_str(&format!(
            "  - name: svc-{i}\n    match:\n      path: /svc-{i}/{{user_id}}/\n"
        ));
    }
    let t = table(&yaml);
    assert_eq!(t.routes().len(), 5_000);
    let reading: Vec<String> = ["svc-4321", "u1", "x"].map(String::from).to_vec();
    let mut candidates = Vec::new();
    t.trie.collect(&reading, &mut candidates);
    assert_eq!(candidates, [4321]);
    assert_eq!(
        outcome(&demand(&t, "GET", "/SVC-4321/u1", None)),
        "svc-4321 session"
    );
    assert_eq!(
        outcome(&demand(&t, "GET", "/svc-7/", None)),
        "svc-7 deny route_segment_missing"
    );
    assert_eq!(
        outcome(&demand(&t, "GET", "/svc-5000/u1", None)),
        "_default session"
    );
}

// ---- The trie against a linear model

/// What the plain reading of the contract selects: each route in order, compared segment by
/// segment.
fn linear(routes: &[Route], reading: &[String], method: &str, host: Option<&str>) -> String {
    let mut narrowed = None;
    for route in routes {
        let exact = route.access == Access::Anonymous;
        let same = |a: &str, b: &str| {
            if exact {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let segments = route.pattern.segments();
        let mut fits = Some(true);
        for (i, segment) in segments.iter().enumerate() {
            match (reading.get(i), segment) {
                (None, _) => {
                    // Short only past the literal prefix, with a placeholder still to come.
                    let placeholder = |s: &Segment| !matches!(s, Segment::Literal(_));
                    let first = segments.iter().position(placeholder);
                    let short =
                        first.is_some_and(|p| p <= i) && segments[i..].iter().any(placeholder);
                    fits = (route.short_denies && short).then_some(false);
                    break;
                }
                (Some(s), Segment::Literal(lit)) if !same(s, lit) => {
                    fits = None;
                    break;
                }
                _ => {}
            }
        }
        let Some(full) = fits else { continue };
        let method_ok = route.methods.as_ref().is_none_or(|ms| {
            ms.iter()
                .any(|m| same(m, method) || (m == "GET" && same("HEAD", method)))
        });
        let host = host.map(host_key);
        let host_ok = route
            .hosts
            .as_ref()
            .is_none_or(|hs| host.as_ref().is_some_and(|h| hs.contains(h)));
        if !(method_ok && host_ok) {
            narrowed.get_or_insert(&route.name);
            continue;
        }
        return match (full, &route.access) {
            (false, _) => format!("{} deny route_segment_missing", route.name),
            (true, Access::Anonymous) => format!("{} anonymous", route.name),
            (true, Access::Session(_)) => format!("{} session", route.name),
        };
    }
    match narrowed {
        Some(name) => format!("{name} deny method_not_routed"),
        None => format!("{DEFAULT_ROUTE} session"),
    }
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["a", "b", "A", "c", "{user_id}", "{org_id}", "{org_slug}"][..])
}

/// A generated route: segments, methods, host, and whether it is anonymous (when it has no
/// placeholder).
type Spec = (
    Vec<&'static str>,
    Option<Vec<&'static str>>,
    Option<&'static str>,
    bool,
);

/// One route: 0–3 segments, maybe methods, maybe hosts, anonymous when it has no placeholder
/// and the coin says so.
fn route_yaml() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(segment(), 0..4),
        prop::option::of(prop::sample::subsequence(&["GET", "POST", "put"][..], 1..3)),
        prop::option::of(prop::sample::select(&["x.example", "Y.example"][..])),
        any::<bool>(),
    )
}

/// The policy of these routes (after one that never matches), unless one names a placeholder
/// twice.
fn policy_of(routes: &[Spec]) -> Option<RouteTable> {
    let mut yaml = String::from("routes:\n  - name: never\n    match:\n      path: /never/\n");
    for (i, (segments, methods, host, anonymous)) in routes.iter().enumerate() {
        let placeholders: Vec<&&str> = segments.iter().filter(|s| s.starts_with('{')).collect();
        let orgs = placeholders.iter().filter(|s| s.contains("org")).count();
        let users = placeholders.len() - orgs;
        if orgs > 1 || users > 1 {
            return None;
        }
        yaml.push_str(&format!(
            "  - name: r{i}\n    match:\n      path: \"/{}\"\n",
            segments.join("/")
        ));
        if let Some(methods) = methods {
            yaml.push_str(&format!("      methods: [{}]\n", methods.join(", ")));
        }
        if let Some(host) = host {
            yaml.push_str(&format!("      hosts: [\"{host}\"]\n"));
        }
        if *anonymous && placeholders.is_empty() {
            yaml.push_str("    allow: anonymous\n");
        }
    }
    Some(table(&yaml))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The trie selects what trying every route in order selects.
    #[test]
    fn the_trie_agrees_with_trying_every_route_in_order(
        routes in prop::collection::vec(route_yaml(), 0..40),
        requests in prop::collection::vec((
            prop::collection::vec(prop::sample::select(&["a", "b", "A", "B", "c", "zz"][..]), 0..5),
            prop::sample::select(&["GET", "HEAD", "POST", "get", "PUT", "DELETE"][..]),
            prop::option::of(prop::sample::select(&["x.example", "X.EXAMPLE:8080", "y.example.", "z.example"][..])),
        ), 1..20),
    ) {
        let Some(t) = policy_of(&routes) else { return Ok(()) };
        for (segments, method, host) in requests {
            let raw = format!("/{}", segments.join("/"));
            let reading: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
            let want = linear(t.routes(), &reading, method, host);
            let got = outcome(&demand(&t, method, &raw, host));
            prop_assert_eq!(got, want, "{} {} host={:?}", method, raw, host);
        }
    }
}

// ---- The file

#[test]
fn a_full_policy_compiles() {
    let t = table(
        r#"
app_origin: https://App.Example:443
login_url: https://id.example/sign-in?app=1
routes:
  - name: public
    match:
      path: /public/
      methods: [get, Head]
      hosts: ["App.Example:8443", "www.example."]
    allow: anonymous
  - name: admin
    match:
      path: /admin/
    require:
      roles: [admin, root]
      email_verified: true
      not_impersonated: true
      max_age: 12h
      revalidate: true
    on_deny: login
  - name: org
    match:
      path: /orgs/{org_slug}/
    require:
      org_roles: [owner]
    on_deny: status
"#,
    );
    assert_eq!(
        t.login,
        Some(Login {
            app_origin: "https://app.example".into(),
            login_url: "https://id.example/sign-in?app=1".into(),
        })
    );
    let [public, admin, org] = t.routes() else {
        panic!("three routes")
    };
    assert_eq!((public.line, admin.line, org.line), (5, 11, 21));
    assert_eq!(
        public.methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".into()][..])
    );
    assert_eq!(
        public.hosts.as_deref(),
        Some(&["app.example".to_string(), "www.example".into()][..])
    );
    assert_eq!(public.access, Access::Anonymous);
    assert_eq!(
        admin.access,
        Access::Session(Requirements {
            roles: vec!["admin".into(), "root".into()],
            org_roles: vec![],
            email_verified: true,
            not_impersonated: true,
            max_age: Some(Duration::from_secs(12 * 3600)),
            revalidate: true,
        })
    );
    assert!(admin.login && !org.login && public.short_denies);
    assert_eq!(t.route("org").map(|r| r.line), Some(21));
    assert!(t.route("nope").is_none());
    // `policy check` prints each route on one line.
    assert_eq!(
        admin.to_string(),
        "admin            /admin/  -> session, role in [admin, root], email verified, \
         not impersonated, signed in within 43200s, revalidated, on_deny=login"
    );
    assert_eq!(
        public.to_string(),
        "public           /public/ methods=GET,HEAD hosts=app.example,www.example  -> anonymous"
    );
    assert_eq!(
        org.to_string(),
        "org              /orgs/{org_slug}/  -> session, org role in [owner]"
    );
    // An empty file is an empty policy: every path needs a session.
    assert!(table("").routes().is_empty());
    assert!(table("routes: []\n").login.is_none());
}

#[test]
fn structural_errors_name_their_line_and_column() {
    for (yaml, line, words) in [
        (
            "routes:\n  - name: a\n    match:\n      path: /a/\n    requires: {}\n",
            5,
            "requires",
        ),
        ("routez: []\n", 1, "routez"),
        (
            "routes:\n  - name: a\n    match:\n      path: /a/\n      method: [GET]\n",
            5,
            "method",
        ),
        (
            "routes:\n  - name: a\n    match:\n      path: /a/\n    require:\n      role: [x]\n",
            6,
            "role",
        ),
        ("routes:\n  - name: a\n", 2, "match"),
        (
            "routes:\n  - name: a\n    match:\n      path: [/a/]\n",
            4,
            "",
        ),
        ("routes: [\n", 0, ""),
    ] {
        let found = problems(yaml);
        assert_eq!(found.len(), 1, "{yaml}: {found:?}");
        let text = found[0].to_lowercase();
        assert!(text.contains(words), "{yaml}: {text}");
        if line > 0 {
            assert!(text.contains(&format!("line {line}")), "{yaml}: {text}");
            assert!(text.contains("column"), "{yaml}: {text}");
        }
    }
}

#[test]
fn every_route_problem_is_reported_with_its_line() {
    let cases: &[(&str, &str)] = &[
        (
            "name: Admin\n    match:\n      path: /a/",
            "the name must be [a-z0-9-]+",
        ),
        (
            "name: \"\"\n    match:\n      path: /a/",
            "the name must be [a-z0-9-]+",
        ),
        (
            "name: a_b\n    match:\n      path: /a/",
            "the name must be [a-z0-9-]+",
        ),
        (
            "name: r\n    match:\n      path: a/",
            "match.path: \"a/\" must start with '/'",
        ),
        (
            "name: r\n    match:\n      path: /a?x/",
            "must be a plain path",
        ),
        (
            "name: r\n    match:\n      path: /a%2F/",
            "must be a plain path",
        ),
        (
            "name: r\n    match:\n      path: /a;x/",
            "must be a plain path",
        ),
        (
            "name: r\n    match:\n      path: /a/../b/",
            "must not contain dot segments",
        ),
        (
            "name: r\n    match:\n      path: /u-{user_id}/",
            "is not a placeholder",
        ),
        (
            "name: r\n    match:\n      path: /{id}/",
            "is not a placeholder",
        ),
        (
            "name: r\n    match:\n      path: /{org_id}/{org_slug}/",
            "names the organization placeholder more than once",
        ),
        (
            "name: r\n    match:\n      path: /{user_id}/{user_id}/",
            "names the user placeholder more than once",
        ),
        (
            "name: r\n    match:\n      path: /a/\n      methods: []",
            "match.methods is empty",
        ),
        (
            "name: r\n    match:\n      path: /a/\n      methods: [\"GE T\"]",
            "match.methods: \"GE T\" is not an HTTP method",
        ),
        (
            "name: r\n    match:\n      path: /a/\n      hosts: []",
            "match.hosts is empty",
        ),
        (
            "name: r\n    match:\n      path: /a/\n      hosts: [\"a/b\"]",
            "match.hosts: \"a/b\" is not a host name",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    on_deny: redirect",
            "on_deny: \"redirect\" is not one of status, login",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    allow: everyone",
            "allow: \"everyone\" is not anonymous",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    allow: anonymous\n    require:\n      roles: [a]",
            "allow: anonymous takes no require or on_deny: login",
        ),
        (
            "name: r\n    match:\n      path: /u/{user_id}/\n    allow: anonymous",
            "an anonymous route has no placeholders",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    require:\n      roles: [\"a,b\"]",
            "require.roles: \"a,b\" is not a role name",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    require:\n      roles: [\" a\"]",
            "require.roles: \" a\" is not a role name",
        ),
        (
            "name: r\n    match:\n      path: /o/{org_id}/\n    require:\n      org_roles: [\"\"]",
            "require.org_roles: \"\" is not a role name",
        ),
        (
            "name: r\n    match:\n      path: /u/{user_id}/\n    require:\n      org_roles: [owner]",
            "require.org_roles needs {org_id} or {org_slug} in match.path",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    require:\n      max_age: 2w",
            "require.max_age: \"2w\" is not a duration like 90s, 15m, 12h or 7d",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    require:\n      max_age: 0m",
            "require.max_age: \"0m\" would deny every session",
        ),
        (
            "name: r\n    match:\n      path: /a/\n    on_deny: login",
            "on_deny: login needs app_origin and login_url at the top",
        ),
    ];
    for (route, problem) in cases {
        // The route starts on line 4, after a good one.
        let yaml = format!("routes:\n  - name: ok\n    match: {{path: /ok/}}\n  - {route}\n");
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{route}: {found:?}");
        let name = route
            .strip_prefix("name: ")
            .and_then(|r| r.lines().next())
            .unwrap()
            .trim_matches('"');
        let head = format!("line 4: route {name:?}: ");
        assert!(
            found[0].starts_with(&head) && found[0].contains(problem),
            "{route}:\n  got  {}\n  want {head}…{problem}…",
            found[0]
        );
    }
}

#[test]
fn problems_are_reported_all_at_once() {
    let found = problems(
        r#"
app_origin: https://app.example/home
routes:
  - name: a
    match:
      path: /a/
  - name: a
    match:
      path: /b/
      methods: []
    require:
      max_age: soon
  - name: ok
    match:
      path: /c/
  - name: Bad
    match:
      path: c
"#,
    );
    assert_eq!(
        found,
        [
            "line 2: app_origin: \"https://app.example/home\" must be an origin only, without a \
             path or query",
            "line 2: app_origin needs login_url",
            "line 7: route \"a\": match.methods is empty: leave it out to match every method",
            "line 7: route \"a\": require.max_age: \"soon\" is not a duration like 90s, 15m, 12h \
             or 7d",
            "line 16: route \"Bad\": the name must be [a-z0-9-]+",
            "line 16: route \"Bad\": match.path: \"c\" must start with '/'",
        ]
    );
    // A duplicate is named as such.
    let found = problems(
        "routes:\n  - name: a\n    match: {path: /a/}\n  - name: a\n    match: {path: /b/}\n",
    );
    assert_eq!(
        found,
        ["line 4: route \"a\": the name is already used by an earlier route"]
    );
}

#[test]
fn the_sign_in_page_needs_an_origin_and_an_absolute_url() {
    let route = "routes:\n  - name: r\n    match: {path: /r/}\n    on_deny: login\n";
    for (top, want) in [
        (
            "login_url: https://id.example/in\n",
            "login_url needs app_origin",
        ),
        (
            "app_origin: https://app.example\n",
            "app_origin needs login_url",
        ),
        (
            "app_origin: ftp://app.example\nlogin_url: https://id.example/in\n",
            "must be an http or https origin",
        ),
        (
            "app_origin: https://app.example/?x=1\nlogin_url: https://id.example/in\n",
            "must be an origin only",
        ),
        (
            "app_origin: https://u:p@app.example\nlogin_url: https://id.example/in\n",
            "must not carry user info",
        ),
        (
            "app_origin: app.example\nlogin_url: https://id.example/in\n",
            "is not a URL",
        ),
        (
            "app_origin: https://app.example\nlogin_url: /sign-in\n",
            "login_url: \"/sign-in\" is not a URL",
        ),
        (
            "app_origin: https://app.example\nlogin_url: javascript:alert(1)\n",
            "must be an absolute http or https URL",
        ),
        (
            "app_origin: https://app.example\nlogin_url: https://id.example/in#x\n",
            "must not have a fragment",
        ),
    ] {
        let found = problems(&format!("{top}{route}"));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("line ") && p.contains(want)),
            "{top}: {found:?}"
        );
    }
    // Without a route asking for it, a sign-in page is still checked but not needed.
    assert!(table("routes: []\n").login.is_none());
    assert!(
        table("app_origin: http://localhost:3000\nlogin_url: http://localhost:3000/sign-in\n")
            .login
            .is_some()
    );
}

#[test]
fn durations() {
    for (raw, secs) in [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43_200),
        ("7d", 604_800),
        ("1s", 1),
    ] {
        assert_eq!(file::duration(raw), Ok(Duration::from_secs(secs)), "{raw}");
    }
    for raw in [
        "",
        "s",
        "15",
        "1.5h",
        "-1m",
        "1 h",
        "1H",
        "10ms",
        "1w",
        "0s",
        "+1s",
        "99999999999999999999d",
    ] {
        assert!(file::duration(raw).is_err(), "{raw}");
    }
    assert_eq!(
        file::duration("999999999999999999d"),
        Err("\"999999999999999999d\" is too long".into())
    );
}

#[test]
fn an_oversized_file_is_refused_before_parsing() {
    let big = format!("# {}\n", "x".repeat(file::MAX_FILE_BYTES));
    let found = problems(&big);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("over"), "{found:?}");
}

// ---- The sign-in redirect

#[test]
fn the_callback_is_always_on_the_app_origin() {
    let login = Login {
        app_origin: "https://app.example".into(),
        login_url: "https://id.example/sign-in".into(),
    };
    let redirect = |raw: &str| login.redirect_for(&path(raw), raw);
    let callback = |location: String| {
        let (_, value) = location
            .split_once("?callbackURL=")
            .expect("a callbackURL parameter");
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    for (raw, want) in [
        ("/dash", "https://app.example/dash"),
        ("/dash/", "https://app.example/dash/"),
        ("/", "https://app.example/"),
        ("/dash/x?tab=1&b=2", "https://app.example/dash/x?tab=1&b=2"),
        ("/dash#frag", "https://app.example/dash"),
        ("/dash?x=1#frag", "https://app.example/dash?x=1"),
        // The normalised path: never a scheme-relative or absolute URL of its own.
        ("//evil.example/x", "https://app.example/evil.example/x"),
        ("/a/../../evil.example", "https://app.example/evil.example"),
        ("/%2e%2e/x", "https://app.example/x"),
        // Hostile segments are re-encoded.
        ("/%40evil.example", "https://app.example/%40evil.example"),
        ("/a%3Fnext=x/b", "https://app.example/a%3Fnext%3Dx/b"),
        ("/a%23b", "https://app.example/a%23b"),
        ("/a b/é", "https://app.example/a%20b/%C3%A9"),
        ("/a:b@c", "https://app.example/a%3Ab%40c"),
    ] {
        assert_eq!(callback(redirect(raw)), want, "{raw}");
    }
    // The whole callback is one parameter: the query cannot add another to the sign-in URL.
    assert_eq!(
        redirect("/d?x=1&callbackURL=https://evil.example"),
        "https://id.example/sign-in?callbackURL=https%3A%2F%2Fapp.example%2Fd%3Fx%3D1%26callbackURL%3Dhttps%3A%2F%2Fevil.example"
    );
    // A sign-in URL with a query of its own gets `&`.
    let login = Login {
        login_url: "https://id.example/sign-in?app=1".into(),
        ..login
    };
    assert_eq!(
        login.redirect_for(&path("/x"), "/x"),
        "https://id.example/sign-in?app=1&callbackURL=https%3A%2F%2Fapp.example%2Fx"
    );
}

#[test]
fn explain_names_the_route_and_what_it_requires() {
    let t = table(POLICY);
    let text = demand(&t, "GET", "/orgs/o1/x", None).to_string();
    assert_eq!(
        text,
        "route: org\nrequires: a valid session\n  membership of organization id \"o1\" with a \
         role in [owner, admin]\n"
    );
    let text = demand(&t, "POST", "/healthz", None).to_string();
    assert_eq!(
        text,
        "route: health\ndenied: 403 NO_ROUTE (the route of this path does not admit this method \
         or host)\n"
    );
    let text = demand(&t, "GET", "/public/x", None).to_string();
    assert_eq!(
        text,
        "route: public\nallowed without a session (identity headers removed)\n"
    );
}

#[test]
fn an_empty_routes_key_is_an_empty_policy() {
    for text in ["routes:\n", "routes: []\n", "{}\n"] {
        let table = file::parse(text).unwrap_or_else(|p| panic!("{text:?}: {p:?}"));
        assert!(table.routes().is_empty(), "{text:?}");
    }
}
