//! Picking Better Auth's cookies out of a request's `Cookie` header(s).
//!
//! Only cookies named `<prefix>.*` or `__Secure-<prefix>.*` are kept; everything else the
//! browser sends (other apps' cookies, analytics…) never leaves the gateway. Kept cookies are
//! forwarded byte for byte: Better Auth signs the URL-encoded value, so decoding or unquoting
//! would break the signature check.
//!
//! Separators: pairs are split on `;` only, exactly as Better Auth's cookie parser (better-call's
//! `parseCookies`) splits them, so that what we call a session is what Better Auth will read.
//! `theme=x,better-auth.session_token=T` is one cookie named `theme` to Better Auth, and so to
//! us. (Envoy's `headers` map joins repeated `Cookie` headers with `,`; the shipped Envoy sends
//! `header_map` instead, one entry per header line. HTTP/1.1 clients must send one `Cookie`
//! line, and HTTP/2 crumbs are re-joined with `; `.)

/// Upper bound on the summed size of a request's `Cookie` headers. Browsers cap a cookie at
/// 4 KiB and a domain at ~180 cookies, but proxies cap header blocks far lower (nginx 8 KiB per
/// line, Envoy 60 KiB in all); 16 KiB leaves room for Better Auth's chunked `session_data`
/// cookie cache while refusing abuse before we parse it.
pub const MAX_COOKIE_HEADER_BYTES: usize = 16 * 1024;

/// Upper bound on one session token cookie value. A real one is
/// `encodeURIComponent(token + "." + base64(hmac))`: about 80 bytes.
pub const MAX_SESSION_VALUE_BYTES: usize = 1024;

/// The Better Auth cookies found in a request. Holds cookie values: its `Debug` redacts them.
#[derive(Default, PartialEq, Eq)]
pub struct BetterAuthCookies {
    /// Every Better Auth cookie as `name=value`, joined with `"; "`, ready for the one `Cookie`
    /// header of the session lookup.
    pub header: String,
    /// How many session token cookies (plain or `__Secure-`) were present, empty ones included.
    pub session_cookies: usize,
    /// The session cookies alone (`session_token` and `session_data`, its chunks included) as
    /// forwarded: what a session lookup's answer depends on, and so the cache and coalescing
    /// key. Other Better Auth cookies are left out, so junk cookies cannot mint new keys.
    pub session_key: String,
    /// Non-empty session token values (unquoted view), counted for the shape checks: the
    /// values themselves are not kept.
    non_empty_values: usize,
    /// Of those, the ones that look like a signed token of a sendable length.
    plausible_values: usize,
    /// A session token cookie had a byte that cannot be sent in a header (control, space,
    /// non-ASCII). Other Better Auth cookies with such bytes are dropped silently.
    pub unforwardable: bool,
}

impl std::fmt::Debug for BetterAuthCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetterAuthCookies")
            .field(
                "header",
                &format_args!("<{} bytes redacted>", self.header.len()),
            )
            .field("session_cookies", &self.session_cookies)
            .field("unforwardable", &self.unforwardable)
            .finish_non_exhaustive()
    }
}

/// What the cookies say before anyone asks Better Auth.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieVerdict {
    /// No session token cookie, or only empty ones: nothing to validate.
    Missing,
    /// A session token that cannot be a Better Auth signed token (no `.`, absurd length,
    /// unsendable bytes): it is invalid without asking.
    Malformed,
    /// Plausible: ask Better Auth.
    Plausible,
}

// === impl BetterAuthCookies ===

impl BetterAuthCookies {
    /// Parse every `Cookie` header value of a request and keep the Better Auth ones.
    ///
    /// Runs on every check: names are compared piecewise (`[__Secure-]<prefix>.<rest>`) rather
    /// than against names formatted per call, and nothing is allocated beyond the two strings
    /// kept.
    pub fn parse<'a>(prefix: &str, headers: impl IntoIterator<Item = &'a str>) -> Self {
        // What follows `<prefix>.` (plain) and `__Secure-<prefix>.` in a name, when non-empty.
        let rests = |name: &'a str| -> [Option<&'a str>; 2] {
            let after = |n: &'a str| {
                n.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('.'))
                    .filter(|r| !r.is_empty())
            };
            [after(name), name.strip_prefix("__Secure-").and_then(after)]
        };
        let is_session_data = |rest: &str| match rest.strip_prefix("session_data") {
            Some("") => true,
            Some(chunk) => chunk
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => false,
        };

        let mut out = BetterAuthCookies::default();
        for header in headers {
            for pair in header.split(';') {
                let pair = pair.trim_matches([' ', '\t']);
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let name = name.trim_matches([' ', '\t']);
                let value = value.trim_matches([' ', '\t']);
                let rests = rests(name);
                if rests == [None, None] {
                    continue;
                }
                let is_session = rests.contains(&Some("session_token"));
                if !is_sendable(name) || !(value.is_empty() || is_sendable(value)) {
                    // An unsendable session token makes the session invalid. Any other Better
                    // Auth cookie is only left out: a sibling subdomain able to set one must not
                    // be able to lock users out.
                    out.unforwardable |= is_session;
                    continue;
                }
                if is_session {
                    out.session_cookies += 1;
                    let value = unquote(value);
                    if !value.is_empty() {
                        out.non_empty_values += 1;
                        if value.len() <= MAX_SESSION_VALUE_BYTES && looks_signed(value) {
                            out.plausible_values += 1;
                        }
                    }
                }
                if is_session || rests.into_iter().flatten().any(is_session_data) {
                    out.session_key.push_str(name);
                    out.session_key.push('=');
                    out.session_key.push_str(value);
                    out.session_key.push(';');
                }
                if out.header.is_empty() {
                    out.header.reserve(header.len());
                } else {
                    out.header.push_str("; ");
                }
                out.header.push_str(name);
                out.header.push('=');
                out.header.push_str(value);
            }
        }
        out
    }

    /// Classify the session cookies without calling Better Auth.
    pub fn verdict(&self) -> CookieVerdict {
        if self.non_empty_values == 0 {
            return if self.unforwardable {
                CookieVerdict::Malformed
            } else {
                CookieVerdict::Missing
            };
        }
        if self.unforwardable {
            return CookieVerdict::Malformed;
        }
        if self.plausible_values > 0 {
            CookieVerdict::Plausible
        } else {
            CookieVerdict::Malformed
        }
    }
}

/// `token.signature`: Better Auth's signed cookie always has a `.` between two non-empty parts.
/// `.` is never percent-encoded by `encodeURIComponent`, so the raw value shows it.
fn looks_signed(value: &str) -> bool {
    match value.split_once('.') {
        Some((token, signature)) => !token.is_empty() && !signature.is_empty(),
        None => false,
    }
}

/// Visible ASCII only: what can be put back into a `Cookie` header unchanged.
fn is_sendable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests;
