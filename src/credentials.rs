//! Which credential a request carries, of those Better Auth accepts: the session cookie, a
//! bearer token (`bearer` plugin) or an API key (`@better-auth/api-key` with
//! `enableSessionForAPIKeys`).
//!
//! The configured kinds are tried in order (`AUTHZ_CREDENTIALS`); the first one present is the
//! one forwarded to `get-session`, never two, so Better Auth judges exactly one credential and
//! the cache key names exactly one. A present credential that cannot be one Better Auth issues
//! (wrong shape, too long, unsendable bytes, sent twice) is refused without asking.

use crate::cookies::{BetterAuthCookies, CookieVerdict};
use crate::names;

/// Upper bound on a bearer token. Better Auth's is `token.signature`, about 80 bytes.
pub const MAX_BEARER_BYTES: usize = 1024;
/// Upper bound on an API key. The plugin's are 64 letters plus an optional prefix.
pub const MAX_API_KEY_BYTES: usize = 256;

/// A kind of credential, as named in `AUTHZ_CREDENTIALS`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Cookie,
    Bearer,
    ApiKey,
}

// === impl CredentialKind ===

impl CredentialKind {
    pub const NAMES: [(&'static str, CredentialKind); 3] = [
        ("cookie", CredentialKind::Cookie),
        ("bearer", CredentialKind::Bearer),
        ("api-key", CredentialKind::ApiKey),
    ];

    pub fn name(self) -> &'static str {
        names::name_of(&Self::NAMES, &self)
    }

    /// `cookie,bearer,api-key`: each known, none twice, at least one.
    pub fn parse_list(raw: &str) -> Result<Vec<CredentialKind>, String> {
        let mut kinds = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = names::parse(&Self::NAMES, part)?;
            if kinds.contains(&kind) {
                return Err(format!("{part:?} is listed twice"));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() {
            return Err("names no credential; e.g. cookie or cookie,bearer".into());
        }
        Ok(kinds)
    }
}

/// The one credential forwarded to Better Auth. Holds secrets: its `Debug` redacts them.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The Better Auth cookies, `"; "`-joined, values byte for byte.
    Cookie(String),
    /// The bearer token as the client sent it.
    Bearer(String),
    /// The API key, and the header it goes in.
    ApiKey { header: String, key: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(<redacted>)", self.kind().name())
    }
}

// === impl Credential ===

impl Credential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::Cookie(_) => CredentialKind::Cookie,
            Credential::Bearer(_) => CredentialKind::Bearer,
            Credential::ApiKey { .. } => CredentialKind::ApiKey,
        }
    }
}

/// What a request's credentials say before anyone asks Better Auth.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// None of the configured credentials is present.
    Nothing,
    /// The first present one cannot be a credential Better Auth issued.
    Malformed(CredentialKind),
    /// Ask Better Auth about this one. `key` is what its answer depends on: the cache and
    /// coalescing key (the kind, then the session cookies alone, the token or the key).
    Plausible { credential: Credential, key: String },
}

/// The request headers a credential may come in.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'r, 'a> {
    pub cookies: &'r [&'a str],
    /// Every `Authorization` header value.
    pub authorization: &'r [&'a str],
    /// Every value of the API-key header.
    pub api_keys: &'r [&'a str],
}

/// The first configured credential present, judged by shape.
pub fn find(
    kinds: &[CredentialKind],
    cookie_prefix: &str,
    api_key_header: &str,
    presented: Presented<'_, '_>,
) -> Found {
    for kind in kinds {
        let found = match kind {
            CredentialKind::Cookie => cookie(cookie_prefix, presented.cookies),
            CredentialKind::Bearer => bearer(presented.authorization),
            CredentialKind::ApiKey => api_key(api_key_header, presented.api_keys),
        };
        if found != Found::Nothing {
            return found;
        }
    }
    Found::Nothing
}

fn cookie(prefix: &str, headers: &[&str]) -> Found {
    let cookies = BetterAuthCookies::parse(prefix, headers.iter().copied());
    match cookies.verdict() {
        CookieVerdict::Missing => Found::Nothing,
        CookieVerdict::Malformed => Found::Malformed(CredentialKind::Cookie),
        CookieVerdict::Plausible => Found::Plausible {
            key: format!("cookie:{}", cookies.session_key),
            credential: Credential::Cookie(cookies.header),
        },
    }
}

/// `Authorization: Bearer <token>`, the scheme in any case. Another scheme is not ours.
fn bearer(values: &[&str]) -> Found {
    let tokens: Vec<&str> = values
        .iter()
        .filter_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .collect();
    match tokens.as_slice() {
        [] => Found::Nothing,
        [token] if is_sendable(token) && token.len() <= MAX_BEARER_BYTES => Found::Plausible {
            key: format!("bearer:{token}"),
            credential: Credential::Bearer((*token).to_owned()),
        },
        _ => Found::Malformed(CredentialKind::Bearer),
    }
}

fn api_key(header: &str, values: &[&str]) -> Found {
    let keys: Vec<&str> = values.iter().map(|v| v.trim()).collect();
    match keys.as_slice() {
        [] | [""] => Found::Nothing,
        [key] if is_sendable(key) && key.len() <= MAX_API_KEY_BYTES => Found::Plausible {
            key: format!("api-key:{key}"),
            credential: Credential::ApiKey {
                header: header.to_owned(),
                key: (*key).to_owned(),
            },
        },
        _ => Found::Malformed(CredentialKind::ApiKey),
    }
}

/// Visible ASCII, no separators a header list would split on.
fn is_sendable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use CredentialKind::*;

    const TOKEN: &str = "abcDEF123.c2lnbmF0dXJl+x=";
    /// Configured kinds, then the Cookie, Authorization and API-key header values.
    type Headers<'a> = (
        &'a [CredentialKind],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
    );
    const KEY: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNMqwertyuiopas";

    fn run(kinds: &[CredentialKind], cookies: &[&str], auth: &[&str], keys: &[&str]) -> Found {
        let presented = Presented {
            cookies,
            authorization: auth,
            api_keys: keys,
        };
        find(kinds, "better-auth", "x-api-key", presented)
    }

    fn kind_of(found: &Found) -> Option<CredentialKind> {
        match found {
            Found::Plausible { credential, .. } => Some(credential.kind()),
            _ => None,
        }
    }

    #[test]
    fn the_first_configured_credential_present_is_the_one() {
        let session = format!("better-auth.session_token={TOKEN}");
        let bearer = format!("Bearer {TOKEN}");
        let all = [Cookie, Bearer, ApiKey];
        let cases: &[(Headers, Option<CredentialKind>)] = &[
            ((&all, &[&session], &[&bearer], &[KEY]), Some(Cookie)),
            ((&all, &["theme=x"], &[&bearer], &[KEY]), Some(Bearer)),
            ((&all, &[], &["Basic dXNlcg=="], &[KEY]), Some(ApiKey)),
            ((&[ApiKey, Cookie], &[&session], &[], &[KEY]), Some(ApiKey)),
            // The default: only the cookie; a bearer token is not read at all.
            ((&[Cookie], &[], &[&bearer], &[KEY]), None),
            ((&[Bearer], &[], &["bearer abc"], &[]), Some(Bearer)),
            ((&[Bearer], &[], &["BEARER  abc "], &[]), Some(Bearer)),
        ];
        for ((kinds, cookies, auth, keys), want) in cases {
            let found = run(kinds, cookies, auth, keys);
            assert_eq!(kind_of(&found), *want, "{kinds:?} {auth:?}");
        }
    }

    #[test]
    fn only_the_chosen_credential_is_forwarded_and_keyed_by_kind() {
        let bearer = format!("Bearer {TOKEN}");
        let found = run(&[Bearer, ApiKey], &[], &[&bearer], &[KEY]);
        let Found::Plausible { credential, key } = found else {
            panic!("{found:?}");
        };
        assert_eq!(credential, Credential::Bearer(TOKEN.into()));
        assert_eq!(key, format!("bearer:{TOKEN}"));
        assert!(!format!("{credential:?}").contains(TOKEN));
    }

    #[test]
    fn malformed_credentials_are_refused_without_asking() {
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_BYTES + 1));
        let long_key = "k".repeat(MAX_API_KEY_BYTES + 1);
        let cases: &[(Headers, CredentialKind)] = &[
            ((&[Bearer], &[], &["Bearer a b"], &[]), Bearer),
            ((&[Bearer], &[], &[&long], &[]), Bearer),
            ((&[Bearer], &[], &["Bearer a", "Bearer b"], &[]), Bearer),
            ((&[Bearer], &[], &["Bearer a,b"], &[]), Bearer),
            ((&[Bearer], &[], &["Bearer tök"], &[]), Bearer),
            ((&[ApiKey], &[], &[], &[&long_key]), ApiKey),
            ((&[ApiKey], &[], &[], &[KEY, KEY]), ApiKey),
            ((&[ApiKey], &[], &[], &["a key"]), ApiKey),
        ];
        for ((kinds, cookies, auth, keys), kind) in cases {
            assert_eq!(
                run(kinds, cookies, auth, keys),
                Found::Malformed(*kind),
                "{auth:?} {keys:?}"
            );
        }
        // A bare `Bearer` scheme carries no token; an empty API-key header is no key.
        assert_eq!(run(&[Bearer], &[], &["Bearer "], &[]), Found::Nothing);
        assert_eq!(run(&[ApiKey], &[], &[], &[""]), Found::Nothing);
    }

    #[test]
    fn the_list_names_each_kind_once() {
        assert_eq!(
            CredentialKind::parse_list("cookie, Bearer,api-key"),
            Ok(vec![Cookie, Bearer, ApiKey])
        );
        for bad in ["", ",", "cookie,cookie", "jwt", "cookie,basic"] {
            assert!(CredentialKind::parse_list(bad).is_err(), "{bad:?}");
        }
    }
}
