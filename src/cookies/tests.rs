use super::*;

const TOKEN: &str = "abcDEF123.c2lnbmF0dXJl%2Bx%3D";

fn check(headers: &[&str], header: &str, sessions: usize, verdict: CookieVerdict) {
    let got = BetterAuthCookies::parse("better-auth", headers.iter().copied());
    assert_eq!(got.header, header, "forwarded header for {headers:?}");
    assert_eq!(
        got.session_cookies, sessions,
        "session count for {headers:?}"
    );
    assert_eq!(got.verdict(), verdict, "verdict for {headers:?}");
}

#[test]
fn table() {
    use CookieVerdict::*;
    let t = TOKEN;
    let cases: Vec<(Vec<String>, String, usize, CookieVerdict)> = vec![
        // Nothing at all.
        (vec![], "".into(), 0, Missing),
        (vec!["".into()], "".into(), 0, Missing),
        // Other apps' cookies are never forwarded.
        (
            vec!["theme=dark; _ga=GA1.2.3".into()],
            "".into(),
            0,
            Missing,
        ),
        // The plain session cookie.
        (
            vec![format!("better-auth.session_token={t}")],
            format!("better-auth.session_token={t}"),
            1,
            Plausible,
        ),
        // The __Secure- variant is always accepted.
        (
            vec![format!("__Secure-better-auth.session_token={t}")],
            format!("__Secure-better-auth.session_token={t}"),
            1,
            Plausible,
        ),
        // Mixed with other cookies, `; ` separated; other Better Auth cookies kept.
        (
            vec![format!(
                "a=1; better-auth.session_token={t}; better-auth.session_data=xyz; b=2"
            )],
            format!("better-auth.session_token={t}; better-auth.session_data=xyz"),
            1,
            Plausible,
        ),
        // `,` separates nothing: to Better Auth this is one cookie named `a`, so to us too.
        (
            vec![format!(
                "a=1,better-auth.session_token={t},better-auth.dont_remember=1"
            )],
            "".into(),
            0,
            Missing,
        ),
        (
            vec![format!("theme=x,better-auth.session_token={t}")],
            "".into(),
            0,
            Missing,
        ),
        // The value runs to the next `;`, commas included; Better Auth judges it.
        (
            vec![format!("better-auth.session_token={t},x=1; a=2")],
            format!("better-auth.session_token={t},x=1"),
            1,
            Plausible,
        ),
        // Several header values (header_map, HTTP/1.1 repeated lines).
        (
            vec!["a=1".into(), format!("better-auth.session_token={t}")],
            format!("better-auth.session_token={t}"),
            1,
            Plausible,
        ),
        // No space after `;`, tabs around.
        (
            vec![format!("a=1;\tbetter-auth.session_token={t} ;b=2")],
            format!("better-auth.session_token={t}"),
            1,
            Plausible,
        ),
        // Quoted values are forwarded byte for byte, judged unquoted.
        (
            vec![format!("better-auth.session_token=\"{t}\"")],
            format!("better-auth.session_token=\"{t}\""),
            1,
            Plausible,
        ),
        // Percent-encoded values stay encoded.
        (
            vec!["better-auth.session_token=a%2Eb.sig%3D%3D".into()],
            "better-auth.session_token=a%2Eb.sig%3D%3D".into(),
            1,
            Plausible,
        ),
        // Both plain and __Secure- present: both forwarded, Better Auth picks its own.
        (
            vec![format!(
                "better-auth.session_token={t}; __Secure-better-auth.session_token={t}"
            )],
            format!("better-auth.session_token={t}; __Secure-better-auth.session_token={t}"),
            2,
            Plausible,
        ),
        // Empty session cookie: nothing to validate.
        (
            vec!["better-auth.session_token=".into()],
            "better-auth.session_token=".into(),
            1,
            Missing,
        ),
        (
            vec!["better-auth.session_token=\"\"".into()],
            "better-auth.session_token=\"\"".into(),
            1,
            Missing,
        ),
        // Not a signed token: no `.`, or an empty half.
        (
            vec!["better-auth.session_token=justatoken".into()],
            "better-auth.session_token=justatoken".into(),
            1,
            Malformed,
        ),
        (
            vec!["better-auth.session_token=.sig".into()],
            "better-auth.session_token=.sig".into(),
            1,
            Malformed,
        ),
        (
            vec!["better-auth.session_token=tok.".into()],
            "better-auth.session_token=tok.".into(),
            1,
            Malformed,
        ),
        // Absurd length.
        (
            vec![format!("better-auth.session_token=a.{}", "b".repeat(2000))],
            format!("better-auth.session_token=a.{}", "b".repeat(2000)),
            1,
            Malformed,
        ),
        // A name that only looks like ours.
        (
            vec![format!("better-auth-session_token={t}; better-auth.={t}")],
            "".into(),
            0,
            Missing,
        ),
        (
            vec![format!("xbetter-auth.session_token={t}")],
            "".into(),
            0,
            Missing,
        ),
        // Session token without `=` is no cookie.
        (
            vec!["better-auth.session_token".into()],
            "".into(),
            0,
            Missing,
        ),
    ];
    for (headers, header, sessions, verdict) in cases {
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        check(&refs, &header, sessions, verdict);
    }
}

#[test]
fn unsendable_bytes_make_the_session_malformed_and_are_not_forwarded() {
    for bad in ["a.b\u{0}c", "a.b\rc", "a.b\nc", "a.b\u{fffd}", "a.bé"] {
        let header = format!("better-auth.session_token={bad}");
        let got = BetterAuthCookies::parse("better-auth", [header.as_str()]);
        assert!(got.unforwardable, "{bad:?}");
        assert_eq!(got.header, "", "{bad:?}");
        assert_eq!(got.verdict(), CookieVerdict::Malformed, "{bad:?}");
    }
}

#[test]
fn custom_prefix() {
    let h = format!("better-auth.session_token=x.y; myapp.session_token={TOKEN}");
    let got = BetterAuthCookies::parse("myapp", [h.as_str()]);
    assert_eq!(got.header, format!("myapp.session_token={TOKEN}"));
    assert_eq!(got.verdict(), CookieVerdict::Plausible);
}

#[test]
fn duplicate_session_cookies_are_all_forwarded_in_order() {
    // Browsers send two cookies of one name when they differ in Path or Domain. Better Auth
    // decides which one counts, exactly as if the browser had called it directly.
    let h = "better-auth.session_token=old.sig1; better-auth.session_token=new.sig2";
    let got = BetterAuthCookies::parse("better-auth", [h]);
    assert_eq!(got.header, h);
    assert_eq!(got.session_cookies, 2);
    assert_eq!(got.verdict(), CookieVerdict::Plausible);
}

#[test]
fn thousands_of_cookies_keep_only_ours() {
    let mut h: String = (0..3000).map(|i| format!("c{i}=v{i}; ")).collect();
    h.push_str(&format!("better-auth.session_token={TOKEN}"));
    let got = BetterAuthCookies::parse("better-auth", [h.as_str()]);
    assert_eq!(got.header, format!("better-auth.session_token={TOKEN}"));
}

#[test]
fn an_unsendable_sibling_cookie_is_dropped_without_failing_the_session() {
    let h = format!(
        "better-auth.session_token={TOKEN}; better-auth.pref=caf\u{e9}; better-auth.session_data=ok"
    );
    let got = BetterAuthCookies::parse("better-auth", [h.as_str()]);
    assert!(!got.unforwardable);
    assert_eq!(
        got.header,
        format!("better-auth.session_token={TOKEN}; better-auth.session_data=ok")
    );
    assert_eq!(got.verdict(), CookieVerdict::Plausible);
}
