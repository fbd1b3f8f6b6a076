//! The headers the back end receives beyond the three identity headers: fields of Better Auth's
//! answer mapped to headers (`AUTHZ_HEADER_MAP`), the `jwt` plugin's token (`AUTHZ_HEADER_JWT`),
//! and the request's credentials removed (`AUTHZ_STRIP_CREDENTIALS`).
//!
//! Every header named here is set or removed on every allow, so a client-sent copy never
//! reaches the back end. Nothing here reads a JWT's signature: Better Auth signed it and the back
//! end verifies it; only its `exp` is read, so that a cached one is never served past it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::credentials::CredentialKind;
use crate::decision::{CheckRequest, MAX_IDENTITY_VALUE_BYTES, Policy, SessionUser};

/// Headers that no mapping may name: the proxies and the credentials own them.
const RESERVED: [&str; 15] = [
    "authorization",
    "cookie",
    "set-cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "x-forwarded-for",
];

/// Words that mark a field as a credential: never copied to a header.
const SECRET_WORDS: [&str; 4] = ["token", "key", "secret", "password"];

/// One `name=path` of `AUTHZ_HEADER_MAP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedHeader {
    /// Lower-case header name.
    pub name: String,
    /// Where in get-session's answer: `user` or `session`, then field names.
    pub path: Vec<String>,
}

/// Parse `AUTHZ_HEADER_MAP`: `x-user-role=user.role,x-org-id=session.activeOrganizationId`.
pub fn parse_map(raw: &str) -> Result<Vec<MappedHeader>, String> {
    let mut out: Vec<MappedHeader> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, path) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not header=field, e.g. x-user-role=user.role"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?
            .as_str()
            .to_owned();
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "{name:?} is a header the proxies or credentials own"
            ));
        }
        if out.iter().any(|m| m.name == name) {
            return Err(format!("{name:?} is mapped twice"));
        }
        let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        let well_formed = path.len() >= 2
            && matches!(path[0].as_str(), "user" | "session")
            && path.iter().all(|s| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !well_formed {
            return Err(format!(
                "{:?} is not a field of the answer: user.<field> or session.<field>",
                path.join(".")
            ));
        }
        let secret = path.iter().any(|s| {
            let s = s.to_ascii_lowercase();
            SECRET_WORDS.iter().any(|w| s.contains(w))
        });
        if secret {
            return Err(format!(
                "{:?} names a credential, never sent on",
                path.join(".")
            ));
        }
        out.push(MappedHeader { name, path });
    }
    Ok(out)
}

/// The text of a mapped field: strings as they are, numbers and booleans as text, arrays
/// comma-joined; `None` (the header removed) for null, absent, objects, or nested arrays.
pub fn field_text(answer: &serde_json::Value, path: &[String]) -> Option<String> {
    use serde_json::Value;
    let value = path.iter().try_fold(answer, |v, key| v.get(key))?;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        other => scalar(other),
    }
}

/// The `exp` claim of a JWT, read without checking anything else. `None` when it has none.
pub fn jwt_expiry(jwt: &str) -> Option<time::OffsetDateTime> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<i64>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    time::OffsetDateTime::from_unix_timestamp(claims.exp?).ok()
}

/// The `Cookie` header without the Better Auth cookies: every other pair byte for byte, in
/// order. `None` when nothing is left.
pub fn without_better_auth_cookies(prefix: &str, headers: &[&str]) -> Option<String> {
    let plain = format!("{prefix}.");
    let secure = format!("__Secure-{prefix}.");
    let kept: Vec<&str> = headers
        .iter()
        .flat_map(|h| h.split(';'))
        .map(|pair| pair.trim_matches([' ', '\t']))
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair
                .split('=')
                .next()
                .unwrap_or(pair)
                .trim_matches([' ', '\t']);
            !(name.starts_with(&plain) || name.starts_with(&secure))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Header edits for the upstream request, gathered for one decision.
#[derive(Debug, Default)]
pub struct Edits {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
    /// Names removed because Better Auth's value could not be sent (for the log).
    pub dropped: Vec<String>,
    /// `AUTHZ_STRIP_CREDENTIALS` is on: the credentials are the service's to pass or drop.
    pub strips: bool,
}

// === impl Edits ===

impl Edits {
    /// Set `name` to `value` when it can be sent, else remove it (and say so when there was a
    /// value): a client-sent copy never survives.
    pub fn set_or_remove(&mut self, name: &str, value: Option<String>, max: usize) {
        match value {
            Some(v) if is_sendable(&v) && v.len() <= max => self.set.push((name.to_owned(), v)),
            Some(_) => {
                self.remove.push(name.to_owned());
                self.dropped.push(name.to_owned());
            }
            None => self.remove.push(name.to_owned()),
        }
    }
}

/// The credentials the back end must not receive (`AUTHZ_STRIP_CREDENTIALS`): the Better Auth
/// cookies out of `Cookie` (the others kept byte for byte), a bearer `Authorization`, the
/// API-key header. Only the configured kinds, and only what the request carries.
pub fn strip(policy: &Policy, req: &CheckRequest<'_>) -> Edits {
    let mut edits = Edits {
        strips: policy.strip_credentials,
        ..Edits::default()
    };
    if !policy.strip_credentials {
        return edits;
    }
    for kind in &policy.credentials {
        match kind {
            CredentialKind::Cookie if !req.cookies.is_empty() => {
                match without_better_auth_cookies(&policy.cookie_prefix, &req.cookies) {
                    Some(rest) => edits.set.push(("cookie".to_owned(), rest)),
                    None => edits.remove.push("cookie".to_owned()),
                }
            }
            CredentialKind::Bearer if req.authorization.iter().any(|v| is_bearer(v)) => {
                edits.remove.push("authorization".to_owned());
            }
            CredentialKind::ApiKey if !req.api_keys.is_empty() => {
                edits.remove.push(policy.api_key_header.clone());
            }
            _ => {}
        }
    }
    edits
}

/// The mapped fields and the JWT for an allow with a session.
pub fn from_session(policy: &Policy, user: &SessionUser, edits: &mut Edits) {
    for (mapped, value) in policy.header_map.iter().zip(&user.mapped) {
        edits.set_or_remove(&mapped.name, value.clone(), MAX_IDENTITY_VALUE_BYTES);
    }
    if let Some(name) = &policy.jwt_header {
        let value = user.jwt.as_ref().map(|jwt| match name.as_str() {
            "authorization" => format!("Bearer {jwt}"),
            _ => jwt.clone(),
        });
        // The JWT replaces a stripped bearer token rather than being removed with it.
        edits.remove.retain(|r| r != name);
        edits.set_or_remove(name, value, MAX_JWT_BYTES);
    }
}

/// Every header an allow without a session must remove: the mapped ones and the JWT's.
pub fn session_only(policy: &Policy) -> impl Iterator<Item = &str> {
    policy
        .header_map
        .iter()
        .map(|m| m.name.as_str())
        .chain(policy.jwt_header.as_deref())
}

/// Upper bound on a JWT header: the `jwt` plugin's token carries the whole user, a few KiB.
pub const MAX_JWT_BYTES: usize = 8 * 1024;

fn is_bearer(value: &str) -> bool {
    value
        .trim()
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

/// Non-empty, no control bytes: what both Envoy and nginx accept as a header value.
fn is_sendable(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_names_fields_of_the_answer_and_nothing_it_must_not() {
        let map = parse_map(
            "x-user-role=user.role, X-Org-Id=session.activeOrganizationId,x-imp=session.impersonatedBy",
        )
        .unwrap();
        assert_eq!(map[1].name, "x-org-id");
        assert_eq!(map[1].path, ["session", "activeOrganizationId"]);
        for bad in [
            "x-a",
            "x-a=role",
            "x-a=account.id",
            "x-a=user.",
            "x-a=user.na-me",
            "cookie=user.id",
            "authorization=user.id",
            "connection=user.id",
            "x-a=user.id,x-a=user.name",
            "x-a=session.token",
            "x-a=user.apiKey",
            "x-a=user.clientSecret",
            "bad name=user.id",
        ] {
            assert!(parse_map(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_map(""), Ok(vec![]));
    }

    #[test]
    fn field_values_become_text() {
        let answer = serde_json::json!({
            "user": {"role": "admin,user", "age": 42, "verified": true, "tags": ["a", 1, false],
                     "deep": {"x": 1}, "none": null, "mixed": [{"x": 1}]},
            "session": {"activeOrganizationId": "org1"}
        });
        let get = |p: &str| {
            let path: Vec<String> = p.split('.').map(str::to_owned).collect();
            field_text(&answer, &path)
        };
        assert_eq!(get("user.role").as_deref(), Some("admin,user"));
        assert_eq!(get("user.age").as_deref(), Some("42"));
        assert_eq!(get("user.verified").as_deref(), Some("true"));
        assert_eq!(get("user.tags").as_deref(), Some("a,1,false"));
        assert_eq!(get("session.activeOrganizationId").as_deref(), Some("org1"));
        for absent in [
            "user.deep",
            "user.none",
            "user.missing",
            "user.mixed",
            "session.x.y",
        ] {
            assert_eq!(get(absent), None, "{absent}");
        }
    }

    #[test]
    fn a_jwt_expiry_is_read_from_its_claims() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1","exp":1800000900}"#);
        let jwt = format!("eyJhbGciOiJFZERTQSJ9.{payload}.c2ln");
        assert_eq!(
            jwt_expiry(&jwt).map(|t| t.unix_timestamp()),
            Some(1_800_000_900)
        );
        let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1"}"#);
        for bad in ["", "a.b.c", "x", &format!("h.{no_exp}.s")] {
            assert_eq!(jwt_expiry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stripping_keeps_every_other_cookie_byte_for_byte() {
        let headers = [
            "theme=dark; better-auth.session_token=T.S; _ga=GA1.2=3",
            "__Secure-better-auth.session_data=x; lang=\"fr\"",
        ];
        assert_eq!(
            without_better_auth_cookies("better-auth", &headers).as_deref(),
            Some("theme=dark; _ga=GA1.2=3; lang=\"fr\"")
        );
        assert_eq!(
            without_better_auth_cookies("better-auth", &["better-auth.session_token=T.S"]),
            None
        );
    }
}
