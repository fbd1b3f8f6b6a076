//! Shared by the property tests (`properties_cookies.rs`, `properties_paths.rs`,
//! `properties_translation.rs`, `properties_transports.rs`, which include this file with
//! `#[path = "support/props.rs"] mod props;`): how many cases each property runs, and the
//! generators and oracles more than one of them uses.
//!
//! Cases per property: `PROPTEST_CASES` (default [`DEFAULT_CASES`]: a few seconds per target in
//! a debug build) times the target's weight (`W_*`), chosen so that one value gives the three
//! targets (cookies, paths, translation: the last one spread over `properties_translation.rs`
//! and `properties_transports.rs`) about the same run time. Calibrated on the 2-core development
//! machine, debug build, idle, one test at a time: `PROPTEST_CASES=11000` took cookies 50 s,
//! paths 56 s, translation 56 s, so **`PROPTEST_CASES=12000` runs each target for about a
//! minute** (cost is linear in cases; nextest runs two tests at once, halving the wall time on
//! two idle cores). The default takes ~2–3 s per target. Failure persistence is off: a failure
//! found by a property becomes a plain `#[test]` at the end of its file with its minimal input.

// Each properties file uses part of this, as with `support`.
#![allow(dead_code)]

use std::sync::OnceLock;

use better_authz::decision::{CheckRequest, Decision};
use better_authz::reason::{Detail, GrpcCode};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as ProptestConfig;

/// Cases per property when `PROPTEST_CASES` is unset.
pub const DEFAULT_CASES: u32 = 512;

/// `PROPTEST_CASES` (or the default) times `weight`, failure persistence off.
pub fn config(weight: f64) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases: ((f64::from(cases) * weight).ceil() as u32).max(1),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Run one property. (Not the `proptest!` macro: it re-reads `PROPTEST_CASES` over the
/// configuration it is given, which would undo the per-target weights.)
pub fn check<S>(weight: f64, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = proptest::test_runner::TestRunner::new(config(weight));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// Weights: how many cases of each property one `PROPTEST_CASES` unit buys, so that the three
// targets take about the same time (each property's cost per case differs by two orders of
// magnitude: a cookie parse is microseconds, a gRPC check over loopback with a refused lookup is not).
// Measured CPU cost per case, debug build: a cookie property ~1.3 ms, a path property ~0.2 ms,
// plan+decide+render ~1.8 ms, the user rule ~0.5 ms, a gRPC adapter case ~2.8 ms, a
// four-transport case ~3.7 ms: each target costs ~5.4 ms of CPU per unit of PROPTEST_CASES.
pub const W_COOKIES: f64 = 1.0;
pub const W_PATHS: f64 = 7.0;
pub const W_TRANSLATION: f64 = 1.0;
/// Each case is a gRPC round trip to the in-process service (and a refused connection).
pub const W_ADAPTER: f64 = 0.5;
/// Each case is four round trips (three HTTP, one gRPC) and a stand-in Better Auth call.
pub const W_LIVE: f64 = 0.45;

/// `n` values of `strategy`, the same on every run (for the coverage tests).
pub fn sample<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

pub const PREFIX: &str = "better-auth";
pub const SESSION_NAMES: [&str; 2] = [
    "better-auth.session_token",
    "__Secure-better-auth.session_token",
];

// ==========================================================================================
// Cookies: generators (the cookies and translation targets)
// ==========================================================================================

/// Arbitrary bytes, decoded as both adapters decode header bytes (lossy UTF-8).
pub fn lossy_bytes() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A token as Better Auth signs it: distinctive enough never to appear in a fixed text.
pub fn signed_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{16,40}\\.[A-Za-z0-9]{4,40}(%2B|%3D|%2F){0,2}"
}

/// Cookie names: ours, the session's, lookalikes that are not ours, foreign ones.
pub fn clean_cookie_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(SESSION_NAMES.to_vec()).prop_map(str::to_owned),
        2 => "(__Secure-)?better-auth\\.[a-z_]{1,12}",
        2 => "[A-Za-z_][A-Za-z0-9_]{0,10}",
        2 => select(vec![
            "better-auth",
            "better-auth.",
            "__Secure-better-auth.",
            "__Secure-better-auth",
            "better-authz.session_token",
            "__Host-better-auth.session_token",
            "Better-Auth.session_token",
            "xbetter-auth.session_token",
            "__secure-better-auth.session_token",
            "__Secure-__Secure-better-auth.session_token",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Cookie values without `;`, `,` or edge blanks (so that a list of them splits back exactly).
pub fn clean_cookie_value() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => signed_token(),
        1 => Just(String::new()),
        1 => signed_token().prop_map(|t| format!("\"{t}\"")),
        1 => Just("\"\"".to_owned()),
        2 => "[!#-+\\--:<-~]{1,30}", // visible ASCII but space, '"', ',' and ';'
        1 => "[a-z]{1,4}[\\x00-\\x1f\\x7f\u{80}-\u{ff}\u{fffd} \t][a-z]{1,4}", // unsendable inside
        1 => "[A-Za-z0-9]{1,12}", // not signed
        1 => (1020..1030usize).prop_map(|n| format!("{}.sig", "a".repeat(n))), // absurdly long
        1 => "\\.[a-z]{1,5}|[a-z]{1,5}\\.|\\.", // an empty half
    ]
}

/// What separates pairs: `;` with optional blanks. Never `,`, which Better Auth's parser (and
/// so ours) keeps inside a value.
pub fn separator() -> impl Strategy<Value = &'static str> {
    select(vec!["; ", ";", " ; ", ";\t", ";  "])
}

/// `Cookie` header values built from clean pairs; the pairs, in order, alongside.
pub fn cookie_headers() -> impl Strategy<Value = (Vec<String>, Vec<(String, String)>)> {
    prop::collection::vec(
        (
            clean_cookie_name(),
            clean_cookie_value(),
            separator(),
            0..3usize,
        ),
        0..8,
    )
    .prop_map(|items| {
        let mut headers: Vec<String> = Vec::new();
        let mut pairs = Vec::new();
        for (i, (name, value, sep, new_header)) in items.into_iter().enumerate() {
            if i == 0 || new_header == 0 {
                headers.push(String::new());
            } else {
                headers.last_mut().unwrap().push_str(sep);
            }
            headers
                .last_mut()
                .unwrap()
                .push_str(&format!("{name}={value}"));
            pairs.push((name, value));
        }
        (headers, pairs)
    })
}

/// Anything a `Cookie` header may carry, well-formed or not.
pub fn any_cookie_header() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => cookie_headers().prop_map(|(h, _)| h.join("; ")),
        1 => any::<String>(),
        1 => lossy_bytes(),
        1 => "[ -~\t]{0,60}",
        2 => "(better-auth\\.|__Secure-|session_token|=|;|,| |\t|\\.|\"|%|[a-z0-9]){0,40}",
    ]
}

// ==========================================================================================
// Paths: generators and independent models (the paths and translation targets)
// ==========================================================================================

/// Words policies and paths share, so that generated paths hit generated rules.
pub const WORDS: [&str; 10] = [
    "api", "auth", "API", "Auth", "u1", "u2", "tasks", "x", "authz", "%",
];

/// Raw path pieces, including every trick the normaliser must see through; the ones that make
/// a path unusable (400) are rarer, so that most paths reach the rules behind.
pub fn raw_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(WORDS.to_vec()).prop_map(str::to_owned),
        6 => select(vec![
            "", ".", "..", "%2e", "%2E%2e", ".%2e", "%2e.", "%75%31", "%61%70%69", "%41PI",
            "%", "%2", "%zz", "%25", "%252e%252e", ";", ";x=1", "u1;", "~", "%20", " ", "+",
            "%2B", "\u{e9}", "%C3%A9", "\u{301}", "\u{feff}", "\u{fe0f}", "%e2%80%a8", "%55%31",
            "api;x=1", ";x", "u2;", "auth;", "a;b;c",
        ])
        .prop_map(str::to_owned),
        1 => select(vec![
            "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%0a", "%0D", "%7f", "%c2%85", "%c3%28",
            "%ff", "a%09b", "..;", ".;x=1", "%2e%2e;", "..%3b", "%2E;a", "%3b", "api%3Bx",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z0-9._~-]{1,6}",
        1 => "\\PC{1,4}",
    ]
}

/// A raw request target: mostly `/a/b/...`, maybe with a query or fragment.
pub fn raw_path() -> impl Strategy<Value = String> {
    let structured = (
        prop::collection::vec(raw_piece(), 0..8),
        any::<bool>(),
        prop_oneof![
            6 => Just(String::new()),
            1 => "\\?[ -~]{0,12}",
            1 => "#[ -~]{0,12}",
        ],
        prop_oneof![9 => Just("/"), 1 => select(vec!["", "//", "http://h/", "*", "./"])],
    )
        .prop_map(|(pieces, trailing, query, lead)| {
            let mut p = format!("{lead}{}", pieces.join("/"));
            if trailing {
                p.push('/');
            }
            p + &query
        });
    prop_oneof![
        6 => structured,
        1 => any::<String>(),
        1 => any::<String>().prop_map(|s| format!("/{s}")),
        1 => lossy_bytes().prop_map(|s| format!("/{s}")),
    ]
}

pub fn pattern_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["api", "API", "auth", "x", "tasks"]).prop_map(str::to_owned),
        1 => "[a-zA-Z]{1,5}",
    ]
}

pub fn pattern_strategy() -> impl Strategy<Value = (String, Vec<Option<String>>)> {
    (
        prop::collection::vec(pattern_literal(), 0..3),
        prop::collection::vec(pattern_literal(), 0..2),
    )
        .prop_map(|(before, after)| {
            let mut segs: Vec<Option<String>> = before.into_iter().map(Some).collect();
            segs.push(None);
            segs.extend(after.into_iter().map(Some));
            let raw = segs
                .iter()
                .map(|s| s.as_deref().unwrap_or("{user_id}"))
                .collect::<Vec<_>>()
                .join("/");
            (format!("/{raw}/"), segs)
        })
}

/// How Tomcat, Jetty and Spring MVC route a raw target, written independently of the
/// service: query and fragment cut, `;…` stripped from each segment before decoding, then
/// decoded, empty and `.` segments dropped, `..` pops. `None` where it would not decode.
pub fn servlet_model(raw: &str) -> Option<Vec<String>> {
    let path = raw.split(['?', '#']).next()?;
    let mut out: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let segment = segment.split(';').next()?;
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?
            .into_owned();
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(decoded),
        }
    }
    Some(out)
}

/// The segment at the placeholder when `segments` match the pattern (literals ASCII
/// case-insensitively), written independently of the service.
pub fn pattern_segment(pattern: &[Option<String>], segments: &[String]) -> Option<String> {
    let fits = segments.len() >= pattern.len()
        && pattern.iter().zip(segments).all(|(lit, s)| match lit {
            Some(lit) => lit.eq_ignore_ascii_case(s),
            None => true,
        });
    let at = pattern.iter().position(Option::is_none)?;
    fits.then(|| segments[at].clone())
}

// ==========================================================================================
// Requests and the rendering oracle (plan/decide/render and the gRPC adapter)
// ==========================================================================================

/// An owned `CheckRequest`.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub cookies: Vec<String>,
    pub origin: Option<String>,
    pub acrm: Option<String>,
    pub user_agent: Option<String>,
    pub client_addr: Option<String>,
}

impl Req {
    pub fn core(&self) -> CheckRequest<'_> {
        CheckRequest {
            method: &self.method,
            path: &self.path,
            host: None,
            forwarded_conflict: false,
            cookies: self.cookies.iter().map(String::as_str).collect(),
            origin: self.origin.as_deref(),
            access_control_request_method: self.acrm.as_deref(),
            user_agent: self.user_agent.as_deref(),
            client_addr: self.client_addr.as_deref(),
            // Transport and trace context: metadata no rule reads.
            ..Default::default()
        }
    }

    /// Every cookie value of the request that is long enough to be a secret.
    pub fn secrets(&self) -> Vec<String> {
        self.cookies
            .iter()
            .flat_map(|h| h.split([';', ',']))
            .filter_map(|p| p.split_once('=').map(|(_, v)| v.trim().to_owned()))
            .filter(|v| v.len() >= 16 && v.chars().any(|c| c.is_ascii_alphanumeric()))
            .collect()
    }
}

pub fn opt_text(values: Vec<&'static str>) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        3 => select(values).prop_map(|s| Some(s.to_owned())),
        1 => any::<String>().prop_map(Some),
    ]
}

pub fn req_strategy() -> impl Strategy<Value = Req> {
    // With a clean session cookie somewhere among others, or anything at all.
    let with_session = (
        cookie_headers(),
        select(SESSION_NAMES.to_vec()),
        signed_token(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|((mut headers, _), name, token, at)| {
            let pair = format!("{name}={token}");
            if headers.is_empty() {
                headers.push(pair);
            } else {
                let i = at.index(headers.len());
                headers[i] = format!("{}; {pair}", headers[i]);
            }
            headers
        });
    let cookies = prop_oneof![
        6 => with_session,
        6 => prop::collection::vec(any_cookie_header(), 0..3),
        1 => (signed_token(), 16_000..17_000usize).prop_map(|(t, n)| vec![
            format!("better-auth.session_token={t}"),
            format!("pad={}", "x".repeat(n)),
        ]),
    ];
    (
        prop_oneof![
            4 => select(vec!["GET", "POST", "OPTIONS", "options", "Options", "DELETE"])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ],
        raw_path(),
        cookies,
        opt_text(vec!["http://app.example", ""]),
        opt_text(vec!["POST", ""]),
        opt_text(vec!["Mozilla/5.0"]),
        opt_text(vec!["203.0.113.9", "2001:db8::1"]),
    )
        .prop_map(
            |(method, path, cookies, origin, acrm, user_agent, client_addr)| Req {
                method,
                path,
                cookies,
                origin,
                acrm,
                user_agent,
                client_addr,
            },
        )
}

pub const ALL_DETAILS: &[Detail] = Detail::ALL;

/// Both renderings of any decision.
#[allow(deprecated)]
pub fn check_rendering(d: &Decision, secrets: &[String]) -> Result<(), TestCaseError> {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;

    // ---- gRPC
    type Flat = Vec<(String, String, Option<bool>)>;
    // Headers as (name, value, append); Better Auth's cookies as they must go out (appended).
    let flat = |headers: &[HeaderValueOption]| -> Flat {
        headers
            .iter()
            .map(|h| {
                let hv = h.header.clone().unwrap();
                (hv.key, hv.value, h.append.map(|b| b.value))
            })
            .collect()
    };
    let cookies: Flat = d
        .set_cookies
        .iter()
        .map(|c| ("set-cookie".to_owned(), c.clone(), Some(true)))
        .collect();
    let client_headers: Flat = d
        .client_headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), Some(false)))
        .collect();
    let resp = better_authz::grpc::check_response(d);
    let code = resp.status.as_ref().map(|s| s.code);
    prop_assert_eq!(code, Some(d.reason.grpc_code() as i32));
    prop_assert_eq!(code == Some(0), d.is_allow(), "gRPC code 0 iff allow");
    prop_assert_eq!(d.reason.grpc_code() == GrpcCode::Ok, d.is_allow());
    match resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            prop_assert!(d.is_allow());
            let want: Flat = d
                .set_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), Some(false)))
                .collect();
            prop_assert_eq!(
                flat(&ok.headers),
                want,
                "identity overwrites, never appends"
            );
            prop_assert_eq!(&ok.headers_to_remove, &d.remove_headers);
            let mut to_client = cookies.clone();
            to_client.extend(client_headers.clone());
            prop_assert_eq!(flat(&ok.response_headers_to_add), to_client);
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            prop_assert!(!d.is_allow());
            prop_assert_eq!(
                denied.status.map(|s| s.code),
                Some(i32::from(d.reason.http_status()))
            );
            check_deny_body(d, &denied.body, secrets)?;
            let mut want: Flat = [
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ]
            .iter()
            .map(|(name, value)| ((*name).into(), (*value).into(), Some(false)))
            .collect();
            want.extend(cookies);
            want.extend(client_headers);
            prop_assert_eq!(
                flat(&denied.headers),
                want,
                "a deny carries its content type, no-store, Better Auth's cookies, its own client \
                 headers and nothing else"
            );
        }
        other => prop_assert!(false, "unexpected {other:?}"),
    }

    // ---- HTTP
    let resp = better_authz::http::response(d);
    prop_assert_eq!(resp.status().as_u16(), d.reason.http_status());
    let headers = resp.headers().clone();
    let body = runtime()
        .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
        .unwrap();
    let cookies: Vec<&[u8]> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    // Cookies that can be a header value pass, in order; none is invented.
    let want: Vec<&[u8]> = d
        .set_cookies
        .iter()
        .filter(|c| http::HeaderValue::from_str(c).is_ok())
        .map(|c| c.as_bytes())
        .collect();
    prop_assert_eq!(cookies, want);
    if d.is_allow() {
        prop_assert!(body.is_empty());
        for (name, value) in &d.set_headers {
            let got: Vec<&[u8]> = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            prop_assert_eq!(got, vec![value.as_bytes()], "identity header {}", name);
        }
    } else {
        prop_assert_eq!(
            headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        for name in ["x-user-id", "x-user-email", "x-user-name"] {
            prop_assert!(headers.get(name).is_none(), "deny carries {}", name);
        }
        check_deny_body(d, std::str::from_utf8(&body).unwrap(), secrets)?;
    }
    prop_assert_eq!(
        headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "every /auth answer is no-store"
    );
    Ok(())
}

/// A deny body is one of the closed set of bodies: exactly `error_code`, `message`, `detail`,
/// from the reason's row and the `Detail` texts; no request data (cookie values) in it.
pub fn check_deny_body(d: &Decision, body: &str, secrets: &[String]) -> Result<(), TestCaseError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| TestCaseError::fail(format!("deny body {body:?} is not JSON: {e}")))?;
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    prop_assert_eq!(keys, vec!["detail", "error_code", "message"]);
    prop_assert_eq!(obj["error_code"].as_str(), Some(d.reason.code()));
    prop_assert_eq!(obj["message"].as_str(), Some(d.reason.message()));
    let detail = obj["detail"].as_str().unwrap();
    prop_assert!(
        ALL_DETAILS.iter().any(|x| x.text() == detail),
        "detail {detail:?}"
    );
    for s in secrets {
        prop_assert!(!body.contains(s.as_str()), "deny body leaks {s:?}");
    }
    Ok(())
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}
