//! Property tests of the cookie reading, with proptest (cargo-fuzz needs a nightly toolchain;
//! proptest is the stable equivalent): `BetterAuthCookies::parse` + `verdict` on arbitrary
//! header values (arbitrary Unicode, arbitrary bytes decoded as the adapters decode them, and
//! cookie-shaped soups). The other targets: `properties_paths.rs`, `properties_translation.rs`
//! and `properties_transports.rs`; the generators they share: `support/props.rs`.
//!
//! Cases per property: `PROPTEST_CASES` times this target's weight (`W_COOKIES`; the calibration is
//! in `support/props.rs`): the default takes a few seconds, **`PROPTEST_CASES=12000` (CI) about a
//! minute**. Failure persistence is off: a failure found here becomes a plain `#[test]` at the end
//! of this file with its minimal input.

#[path = "support/props.rs"]
mod props;

use std::collections::BTreeMap;

use better_authz::cookies::{BetterAuthCookies, CookieVerdict};
use proptest::prelude::*;

use props::*;

fn is_visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn is_ours(name: &str) -> bool {
    ["better-auth.", "__Secure-better-auth."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn looks_signed(v: &str) -> bool {
    v.len() <= 1024
        && v.split_once('.')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
}

/// Where `name`, blanks, `=`, blanks, `value` first occurs in `input`: the offset just past it.
fn find_pair(input: &str, name: &str, value: &str) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = input[start..].find(name) {
        let after_name = start + i + name.len();
        let rest = input[after_name..].trim_start_matches([' ', '\t']);
        if let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start_matches([' ', '\t']);
            if rest.starts_with(value) {
                return Some(input.len() - rest.len() + value.len());
            }
        }
        start += i + 1;
        while !input.is_char_boundary(start) {
            start += 1;
        }
    }
    None
}

/// The forwarded pairs (`name=value`) of a parse.
fn forwarded(c: &BetterAuthCookies) -> Vec<&str> {
    if c.header.is_empty() {
        vec![]
    } else {
        c.header.split("; ").collect()
    }
}

/// Invariants of any parse, whatever the input.
fn check_cookie_invariants(headers: &[String], c: &BetterAuthCookies) -> Result<(), TestCaseError> {
    let joined = headers.join("\u{0}");
    let mut from = 0;
    let mut session_pairs = 0;
    let mut plausible_pair = false;
    let mut non_empty_session = false;
    for pair in forwarded(c) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| TestCaseError::fail(format!("forwarded {pair:?} is not name=value")))?;
        prop_assert!(is_ours(name), "forwarded a foreign cookie {name:?}");
        prop_assert!(
            is_visible_ascii(pair) && !pair.contains(';'),
            "forwarded {pair:?} is not one visible-ASCII pair"
        );
        // Name and value byte for byte as sent, in the order sent; between them in the input
        // only the `=` and the blanks the parser trims (`a = b` goes out as `a=b`).
        let at = find_pair(&joined[from..], name, value);
        prop_assert!(
            at.is_some(),
            "{pair:?} not verbatim (in order) in {headers:?}"
        );
        from += at.unwrap();
        if SESSION_NAMES.contains(&name) {
            session_pairs += 1;
            let v = unquote(value);
            non_empty_session |= !v.is_empty();
            plausible_pair |= looks_signed(v) && !v.is_empty();
        }
    }
    prop_assert_eq!(c.session_cookies, session_pairs);
    match c.verdict() {
        CookieVerdict::Plausible => {
            prop_assert!(
                plausible_pair,
                "Plausible without a signed-looking session value"
            );
            prop_assert!(!c.unforwardable);
        }
        CookieVerdict::Missing => {
            prop_assert!(
                !non_empty_session,
                "Missing although a session value is forwarded"
            );
            prop_assert!(!c.unforwardable);
        }
        CookieVerdict::Malformed => {
            prop_assert!(c.unforwardable || (non_empty_session && !plausible_pair));
        }
    }
    Ok(())
}

/// Never panics; whatever comes in, only our cookies go out, verbatim, visible ASCII.
#[test]
fn cookies_arbitrary_input_keeps_the_invariants() {
    check(
        W_COOKIES,
        (prop::collection::vec(any_cookie_header(), 0..4),),
        |(headers,)| {
            let c = BetterAuthCookies::parse(PREFIX, headers.iter().map(String::as_str));
            check_cookie_invariants(&headers, &c)?;
            Ok(())
        },
    );
}

/// On well-formed lists the result is exactly the documented one.
#[test]
fn cookies_well_formed_lists_parse_exactly() {
    check(W_COOKIES, (cookie_headers(),), |((headers, pairs),)| {
        let c = BetterAuthCookies::parse(PREFIX, headers.iter().map(String::as_str));
        let mut want = Vec::new();
        let mut unforwardable = false;
        let mut sessions = Vec::new();
        for (name, value) in &pairs {
            if !is_ours(name) {
                continue;
            }
            if !is_visible_ascii(name) || !(value.is_empty() || is_visible_ascii(value)) {
                // Only an unsendable session token spoils the session; others are dropped.
                unforwardable |= SESSION_NAMES.contains(&name.as_str());
                continue;
            }
            want.push(format!("{name}={value}"));
            if SESSION_NAMES.contains(&name.as_str()) {
                sessions.push(unquote(value).to_owned());
            }
        }
        prop_assert_eq!(&c.header, &want.join("; "));
        prop_assert_eq!(c.unforwardable, unforwardable);
        prop_assert_eq!(c.session_cookies, sessions.len());
        let non_empty: Vec<&String> = sessions.iter().filter(|v| !v.is_empty()).collect();
        let verdict = if non_empty.is_empty() && !unforwardable {
            CookieVerdict::Missing
        } else if unforwardable || !non_empty.iter().any(|v| looks_signed(v)) {
            CookieVerdict::Malformed
        } else {
            CookieVerdict::Plausible
        };
        prop_assert_eq!(c.verdict(), verdict);
        check_cookie_invariants(&headers, &c)?;
        Ok(())
    });
}

/// Envoy joins repeated `Cookie` headers with `,`, nginx passes them apart, a browser
/// joins with `; `: all three read the same. Foreign cookies change nothing.
#[test]
fn cookies_joining_and_foreign_cookies_do_not_matter() {
    check(
        W_COOKIES,
        (
            prop::collection::vec(any_cookie_header(), 1..4),
            "[a-z_]{1,8}=[a-zA-Z0-9.]{0,12}",
            any::<prop::sample::Index>(),
        ),
        |(headers, foreign, at)| {
            let parse =
                |h: &[String]| BetterAuthCookies::parse(PREFIX, h.iter().map(String::as_str));
            let apart = parse(&headers);
            prop_assert_eq!(&parse(&[headers.join(";")]), &apart);
            prop_assert_eq!(&parse(&[headers.join("; ")]), &apart);
            let mut with_foreign = headers.clone();
            with_foreign.insert(at.index(headers.len() + 1), foreign);
            prop_assert_eq!(&parse(&with_foreign), &apart);
            Ok(())
        },
    );
}

/// Any cookie prefix (Better Auth's `advanced.cookiePrefix`): never a cookie of another.
#[test]
fn cookies_other_prefixes_forward_only_their_own() {
    check(
        W_COOKIES,
        (
            "[a-z][a-z0-9-]{0,10}",
            prop::collection::vec(any_cookie_header(), 0..3),
        ),
        |(prefix, headers)| {
            let c = BetterAuthCookies::parse(&prefix, headers.iter().map(String::as_str));
            for pair in forwarded(&c) {
                let name = pair.split_once('=').map(|(n, _)| n).unwrap_or(pair);
                let plain = format!("{prefix}.");
                let secure = format!("__Secure-{prefix}.");
                prop_assert!(
                    (name.starts_with(&plain) && name.len() > plain.len())
                        || (name.starts_with(&secure) && name.len() > secure.len()),
                    "{name:?} forwarded under prefix {prefix:?}"
                );
            }
            Ok(())
        },
    );
}

/// The generators reach every verdict (else the properties above would pass vacuously).
#[test]
fn cookies_generators_reach_every_verdict() {
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for headers in sample(prop::collection::vec(any_cookie_header(), 0..4), 1000) {
        let v = BetterAuthCookies::parse(PREFIX, headers.iter().map(String::as_str)).verdict();
        *verdicts.entry(format!("{v:?}")).or_default() += 1;
    }
    eprintln!("cookie verdicts over 1000 inputs: {verdicts:?}");
    assert!(
        verdicts.len() == 3 && verdicts.values().all(|n| *n >= 30),
        "{verdicts:?}"
    );
}
