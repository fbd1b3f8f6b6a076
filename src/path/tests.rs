use super::*;

fn segs(raw: &str) -> Result<Vec<String>, PathError> {
    NormalPath::parse(raw).map(|p| p.segments().to_vec())
}

#[test]
fn normalisation_table() {
    let ok: &[(&str, &[&str])] = &[
        ("/", &[]),
        ("/api/u1/tasks", &["api", "u1", "tasks"]),
        ("/api/u1/tasks/", &["api", "u1", "tasks"]),
        // Query and fragment never take part.
        ("/api/u1/tasks?user=u2", &["api", "u1", "tasks"]),
        ("/api/u1?x=/api/u2/", &["api", "u1"]),
        ("/api/u1#/api/u2", &["api", "u1"]),
        // Double slashes merge.
        ("//api///u1//tasks", &["api", "u1", "tasks"]),
        // Dot segments resolve.
        ("/api/u2/../u1/tasks", &["api", "u1", "tasks"]),
        ("/api/./u1/./tasks", &["api", "u1", "tasks"]),
        ("/../../api/u1", &["api", "u1"]),
        // Encoded dots are dots (nginx and Envoy decode them before normalising).
        ("/api/u2/%2e%2e/u1", &["api", "u1"]),
        ("/api/u2/%2E./u1", &["api", "u1"]),
        ("/api/%2e/u1", &["api", "u1"]),
        // Encoded ordinary characters decode.
        ("/api/%75%31/tasks", &["api", "u1", "tasks"]),
        ("/api/us%20er", &["api", "us er"]),
        // Double encoding decodes once: `%2575` is the literal text `%75`.
        ("/api/%2575%2531", &["api", "%75%31"]),
        // A malformed escape stays literal, as in most servers.
        ("/api/%zz", &["api", "%zz"]),
        // `;` parameters are part of the segment (Starlette does not strip them).
        ("/api/u1;x=y/tasks", &["api", "u1;x=y", "tasks"]),
        ("/api/...;x/tasks", &["api", "...;x", "tasks"]),
        // Unicode decodes to itself.
        ("/api/%C3%A9", &["api", "é"]),
        ("/api/u1.", &["api", "u1."]),
    ];
    for (raw, want) in ok {
        assert_eq!(
            segs(raw),
            Ok(want.iter().map(|s| s.to_string()).collect()),
            "{raw}"
        );
    }

    let bad: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("api/u1", PathError::NotAbsolute),
        ("http://h/api/u1", PathError::NotAbsolute),
        ("/api/u1%2Ftasks", PathError::EncodedSeparator),
        ("/api/u1%2f..%2fu2", PathError::EncodedSeparator),
        ("/api/u1%5Ctasks", PathError::EncodedSeparator),
        ("/api/u1\\tasks", PathError::EncodedSeparator),
        ("/api/u1%00", PathError::ControlByte),
        ("/api/u1%0d%0a", PathError::ControlByte),
        ("/api/%ff", PathError::BadEncoding),
        // `..;` is a dot segment to Tomcat, Jetty and Envoy, a name to others: refused.
        ("/api/u1/..;/u2/tasks", PathError::DotWithParameters),
        ("/api/u1/%2e%2e;/u2/tasks", PathError::DotWithParameters),
        ("/api/u1/..%3B/u2/tasks", PathError::DotWithParameters),
        ("/api/auth/..;/u1/tasks", PathError::DotWithParameters),
        ("/api/.;x/u1", PathError::DotWithParameters),
        // An encoded `;` is a parameter to a back end that decodes first, text to a servlet.
        ("/api%3Bx/u2/tasks", PathError::EncodedParameter),
        ("/api/u2%3b/tasks", PathError::EncodedParameter),
        ("/%3B/api/u2", PathError::EncodedParameter),
        ("/api;x%3By/u2", PathError::EncodedParameter),
    ];
    for (raw, want) in bad {
        assert_eq!(segs(raw), Err(*want), "{raw}");
    }
}

#[test]
fn public_prefixes_match_whole_segments() {
    let p = PathPrefix::parse("/api/auth/").unwrap();
    let yes = [
        "/api/auth",
        "/api/auth/",
        "/api/auth/sign-in/email",
        "//api//auth/x",
        "/api/auth/sign-in?x=1",
    ];
    let no = [
        "/api/authz",
        "/API/Auth/x",
        "/api/auth-other",
        "/api",
        "/api/auth/../u1/tasks",
        "/api/auth/%2e%2e/u1/tasks",
        "/x/api/auth",
        "/api/u1?next=/api/auth/",
    ];
    for raw in yes {
        assert!(
            p.matches(&NormalPath::parse(raw).unwrap()),
            "{raw} should match"
        );
    }
    for raw in no {
        assert!(
            !p.matches(&NormalPath::parse(raw).unwrap()),
            "{raw} should not match"
        );
    }
}

#[test]
fn bad_prefixes_are_refused() {
    assert!(PathPrefix::parse("/").is_err());
    assert!(PathPrefix::parse("api").is_err());
    assert!(PathPrefix::parse("/a?b").is_err());
    assert!(PathPrefix::parse("/a%2fb").is_err());
}

#[test]
fn user_pattern_table() {
    let pat = UserPathPattern::parse("/api/{user_id}/").unwrap();
    // Every reading that matches names its segment: the caller must be each of them.
    let cases: &[(&str, &[&str])] = &[
        ("/api/u1/tasks", &["u1"]),
        ("/api/u1", &["u1"]),
        ("/api/u1/", &["u1"]),
        ("/API/u1/tasks", &["u1"]),
        ("/api/%75%31/tasks", &["u1"]),
        ("/api/u2/../u1/tasks", &["u1"]),
        ("/api//u1/tasks", &["u1"]),
        ("/api/u1/tasks?user_id=u2", &["u1"]),
        ("/api/u1./tasks", &["u1."]),
        // `;` parameters: the literal reading and the servlet reading.
        ("/api/u1;x/tasks", &["u1;x", "u1"]),
        ("/api/u1/tasks;jsessionid=1", &["u1", "u1"]),
        ("/api;x=1/u2/tasks", &["u2"]),
        ("/;x/api/u2/tasks", &["u2"]),
        ("/api;/u2/tasks", &["u2"]),
        ("/API;x/u2/tasks", &["u2"]),
        ("/api/;x/u2/tasks", &[";x", "u2"]),
        ("/x;y/../api/u2", &["u2"]),
        ("/api", &[]),
        ("/other/u1", &[]),
        ("/healthz", &[]),
        ("/?/api/u2/", &[]),
    ];
    for (raw, want) in cases {
        let path = NormalPath::parse(raw).unwrap();
        let got: Vec<&str> = pat.user_segments(&path).collect();
        assert_eq!(got, *want, "{raw}");
    }

    let deep = UserPathPattern::parse("/v1/users/{user_id}/todos").unwrap();
    let path = NormalPath::parse("/v1/users/u9/todos/3").unwrap();
    assert_eq!(deep.user_segments(&path).collect::<Vec<_>>(), ["u9"]);
    let path = NormalPath::parse("/v1/users/u9/profile").unwrap();
    assert_eq!(deep.user_segments(&path).count(), 0);
    let path = NormalPath::parse("/v1/users;a/u9/todos;b/3").unwrap();
    assert_eq!(deep.user_segments(&path).collect::<Vec<_>>(), ["u9"]);
}

#[test]
fn servlet_reading_strips_parameters_from_every_segment() {
    let cases: &[(&str, &[&str])] = &[
        ("/api;x=1/u2/tasks", &["api", "u2", "tasks"]),
        ("/;x/api/u2", &["api", "u2"]),
        ("/api/u1;x/tasks;y", &["api", "u1", "tasks"]),
        ("/a;b;c/d", &["a", "d"]),
        ("/api/u1", &["api", "u1"]),
        ("/api/%75%31;x", &["api", "u1"]),
    ];
    for (raw, want) in cases {
        let path = NormalPath::parse(raw).unwrap();
        assert_eq!(path.servlet_segments(), *want, "{raw}");
    }
}

#[test]
fn public_only_when_both_readings_are_public() {
    let p = PathPrefix::parse("/api/auth/").unwrap();
    for raw in [
        "/api/auth/ok",
        "/api/auth/ok;jsessionid=1",
        "/api/auth/x;y/z",
    ] {
        assert!(p.matches(&NormalPath::parse(raw).unwrap()), "{raw}");
    }
    // The servlet reading is public, the literal one is not (or the other way round).
    for raw in [
        "/api;x/auth/ok",
        "/api/auth;x/ok",
        "/;x/api/auth/ok",
        "/api/auth;/ok",
        "/api/x;y/../../auth/ok",
    ] {
        assert!(!p.matches(&NormalPath::parse(raw).unwrap()), "{raw}");
    }
}

#[test]
fn bad_patterns_are_refused() {
    for raw in [
        "api/{user_id}/",
        "/api/",
        "/api/{user_id}/{user_id}",
        "/api/{id}/",
        "/api/x{user_id}/",
        "/api/../{user_id}",
        "/api/{user_id}?x",
        "/api/%7Buser_id%7D",
    ] {
        assert!(UserPathPattern::parse(raw).is_err(), "{raw}");
    }
}
