//! Property tests of the path reading, with proptest (cargo-fuzz needs a nightly toolchain;
//! proptest is the stable equivalent): `NormalPath`, `PathPrefix`, `UserPathPattern` on
//! arbitrary and adversarially spelled paths (percent-encoding, dot segments, doubled slashes,
//! queries, `;` parameters), against models written independently of the service. The other
//! targets: `properties_cookies.rs`, `properties_translation.rs` and `properties_transports.rs`;
//! the generators they share: `support/props.rs`.
//!
//! Cases per property: `PROPTEST_CASES` times this target's weight (`W_PATHS`; the calibration is
//! in `support/props.rs`): the default takes a few seconds, **`PROPTEST_CASES=12000` (CI) about a
//! minute**. Failure persistence is off: a failure found here becomes a plain `#[test]` at the end
//! of this file with its minimal input.

#[path = "support/props.rs"]
mod props;

use std::collections::BTreeMap;

use better_authz::path::{NormalPath, PathError, PathPrefix, UserPathPattern};
use proptest::prelude::*;
use proptest::sample::select;

use props::*;

/// A segment a back end could route on: no separator, no control character, not a dot segment.
fn clean_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(WORDS.to_vec()).prop_map(str::to_owned),
        3 => "[a-zA-Z0-9._~%?#;=+ -]{1,8}",
        1 => "\\PC{1,4}",
    ]
    .prop_filter("a routable segment", |s| is_routable(s))
}

/// What a normalised segment can be: not empty, not a dot segment (with or without `;`
/// parameters), no separator, no control character.
fn is_routable(s: &str) -> bool {
    let head = s.split(';').next().unwrap_or(s);
    !s.is_empty()
        && head != "."
        && head != ".."
        && !s.contains(['/', '\\'])
        && !s.chars().any(char::is_control)
}

fn push_percent(out: &mut String, bytes: &[u8], upper: bool) {
    for b in bytes {
        if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
}

/// Spell `segments` as a raw path: each byte percent-encoded where it must be (`%`, `?`, `#`)
/// or where `noise` says so, hex case by `noise`, with dot segments and doubled slashes
/// between segments where `noise` says so. Empty `noise`: the plainest spelling.
fn spell(segments: &[String], noise: &[u8]) -> String {
    let mut n = noise.iter().copied().cycle();
    let mut next = || {
        if noise.is_empty() {
            0
        } else {
            n.next().unwrap()
        }
    };
    let mut out = String::new();
    for seg in segments {
        out.push('/');
        for ch in seg.chars() {
            let r = next();
            let mut buf = [0u8; 4];
            let bytes = ch.encode_utf8(&mut buf).as_bytes();
            // `;` stays as it is: `%3B` is a different (refused) path.
            if ch != ';' && (matches!(ch, '%' | '?' | '#') || r % 4 == 1) {
                push_percent(&mut out, bytes, r % 8 < 4);
            } else {
                out.push(ch);
            }
        }
        let filler = [
            "",
            "",
            "",
            "",
            "/",
            "/.",
            "/%2e",
            "/%2E/",
            "/junk/..",
            "/junk/%2e%2E",
            "/j/k/../..",
            "//./",
        ];
        out.push_str(filler[usize::from(next()) % filler.len()]);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn check_normal(p: &NormalPath) -> Result<(), TestCaseError> {
    for s in p.segments() {
        prop_assert!(is_routable(s), "segment {s:?} in {p:?}");
    }
    Ok(())
}

/// Never panics; a normalised path has no empty, `.` or `..` segment, no separator and no
/// control character; spelled back and normalised again it is the same path; the query
/// and fragment never matter; `NotAbsolute` exactly when the path part lacks its `/`.
#[test]
fn paths_normalise_to_clean_stable_segments() {
    check(W_PATHS, (raw_path(), "[?#][ -~]{0,8}"), |(raw, tail)| {
        let parsed = NormalPath::parse(&raw);
        let path_part = &raw[..raw.find(['?', '#']).unwrap_or(raw.len())];
        prop_assert_eq!(
            matches!(parsed, Err(PathError::NotAbsolute)),
            !path_part.starts_with('/')
        );
        if let Ok(p) = &parsed {
            check_normal(p)?;
            // Each reading, spelled back, is itself again (a `;` keeps both readings apart).
            for reading in [p.segments(), p.servlet_segments()] {
                let again = NormalPath::parse(&spell(reading, &[]));
                prop_assert_eq!(
                    again.as_ref().map(NormalPath::segments),
                    Ok(reading),
                    "spelled {:?}",
                    spell(reading, &[])
                );
            }
            if !path_part.contains(';') {
                prop_assert_eq!(p.servlet_segments(), p.segments());
            }
        }
        prop_assert_eq!(
            &NormalPath::parse(&format!("{path_part}{tail}")),
            &NormalPath::parse(path_part)
        );
        if path_part.starts_with('/') {
            for suffix in ["/.", "//", "/x/..", "/%2e", "/x/%2e%2E", "/./"] {
                prop_assert_eq!(
                    &NormalPath::parse(&format!("{path_part}{suffix}")),
                    &NormalPath::parse(path_part),
                    "suffix {:?}",
                    suffix
                );
            }
        }
        Ok(())
    });
}

/// However a path is spelled (percent-encoding, hex case, dot segments, doubled slashes),
/// it normalises to the segments a back end routes on.
#[test]
fn paths_every_spelling_of_a_path_is_the_same_path() {
    check(
        W_PATHS,
        (
            prop::collection::vec(clean_segment(), 0..6),
            prop::collection::vec(any::<u8>(), 0..32),
        ),
        |(segments, noise)| {
            let raw = spell(&segments, &noise);
            let p = NormalPath::parse(&raw);
            prop_assert!(p.is_ok(), "{raw:?}: {p:?}");
            let p = p.unwrap();
            prop_assert_eq!(p.segments(), &segments[..], "spelled {:?}", raw);
            let servlet: Vec<String> = segments
                .iter()
                .map(|s| s.split(';').next().unwrap_or_default().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            prop_assert_eq!(p.servlet_segments(), &servlet[..], "spelled {:?}", raw);
            Ok(())
        },
    );
}

/// A public prefix matches exactly the paths whose segments start with its own: never a
/// sibling (`/api/authz`), never through a dot segment or an encoding.
#[test]
fn paths_public_prefixes_match_by_whole_segments() {
    check(
        W_PATHS,
        (
            prop::collection::vec(select(WORDS[..9].to_vec()), 1..3),
            raw_path(),
        ),
        |(prefix, raw)| {
            let prefix_raw = format!("/{}/", prefix.join("/"));
            let pp = PathPrefix::parse(&prefix_raw).unwrap();
            if let Ok(p) = NormalPath::parse(&raw) {
                let under = |segs: &[String]| {
                    segs.len() >= prefix.len() && segs.iter().zip(&prefix).all(|(a, b)| a == b)
                };
                // Public only when the servlet model routes it under the prefix too.
                let servlet = servlet_model(&raw).unwrap();
                let by_segments = under(p.segments()) && under(&servlet);
                prop_assert_eq!(pp.matches(&p), by_segments, "{} vs {:?}", prefix_raw, p);
            }
            Ok(())
        },
    );
}

/// Every path the service accepts reads, in its servlet reading, exactly as the servlet model
/// routes it; and a servlet container would never see a segment with `;` or a dot segment.
#[test]
fn paths_servlet_reading_is_the_servlet_model() {
    check(W_PATHS, raw_path(), |raw| {
        if let Ok(p) = NormalPath::parse(&raw) {
            let model = servlet_model(&raw);
            prop_assert_eq!(Some(p.servlet_segments().to_vec()), model, "{:?}", raw);
            for s in p.servlet_segments() {
                prop_assert!(!s.contains(';') && s != "." && s != "..", "{raw:?}: {s:?}");
            }
        }
        Ok(())
    });
}

/// `user_segments` is the path's segment at the placeholder in each reading (params kept, and
/// the servlet model's when the path has a `;`) where every literal matches (ASCII
/// case-insensitively) and the path is long enough.
#[test]
fn paths_user_pattern_extracts_the_right_segment() {
    check(
        W_PATHS,
        (pattern_strategy(), raw_path()),
        |((pattern_raw, pattern), raw)| {
            let up = UserPathPattern::parse(&pattern_raw).unwrap();
            if let Ok(p) = NormalPath::parse(&raw) {
                let segs = p.segments();
                let mut want: Vec<String> = pattern_segment(&pattern, segs).into_iter().collect();
                // The servlet reading counts on its own only where it differs.
                let servlet = servlet_model(&raw).unwrap();
                if servlet != segs {
                    want.extend(pattern_segment(&pattern, &servlet));
                }
                let got: Vec<&str> = up.user_segments(&p).collect();
                prop_assert_eq!(got, want, "{} on {:?}", pattern_raw, p);
            }
            Ok(())
        },
    );
}

/// The generators reach every path error (else the properties above would pass vacuously).
#[test]
fn paths_generators_reach_every_path_error() {
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for raw in sample(raw_path(), 1000) {
        let k = match NormalPath::parse(&raw) {
            Ok(p) if p.segments().is_empty() => "Ok(root)".to_owned(),
            Ok(_) => "Ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        *paths.entry(k).or_default() += 1;
    }
    eprintln!("paths over 1000 inputs: {paths:?}");
    assert!(
        paths.len() == 8 && paths.values().all(|n| *n >= 5),
        "{paths:?}"
    );
}
