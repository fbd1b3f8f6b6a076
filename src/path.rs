//! Request paths as the back end will route them, public prefixes, and the user-id pattern.
//!
//! The proxies hand us the raw request target (Envoy: `:path` with the query; nginx:
//! `$request_uri`), not the path they route on. We normalise it the way the proxies as shipped
//! and common back ends read it, so a rule cannot be dodged by spelling the same path
//! differently:
//!
//! 1. the query (`?…`) and fragment (`#…`) are cut off and never take part in matching;
//! 2. each segment is percent-decoded (`%61` is `a`, `%2e%2e` is `..`);
//! 3. empty segments are dropped (`//` is `/`, as with `merge_slashes`);
//! 4. `.` segments are dropped and `..` removes the previous one (RFC 3986 §5.2.4);
//! 5. a segment that decodes to something with `/`, `\`, a control byte or invalid UTF-8, a
//!    dot segment with `;` parameters (`..;x`), or a percent-encoded `;` is ambiguous (servers
//!    disagree on it), and the request is refused rather than guessed.
//!
//! Back ends disagree on `;` path parameters: Envoy, nginx, Starlette and Express keep
//! `api;x` as a segment name, while Tomcat, Jetty and Spring MVC strip `;…` from every segment
//! before routing (`/api;x/u2` is `/api/u2` to them, `/;x/api` is `/api`). A path with a `;`
//! therefore has two readings, and every rule holds in both: a path is public only when both
//! readings are under a public prefix, and the user-id rule applies when either reading
//! matches the pattern, with every matching reading naming the caller.
//!
//! Matching is by whole segments: `/api/auth/` covers `/api/auth` and `/api/auth/x` but never
//! `/api/authz`. Each rule errs towards denying: public prefixes compare case-sensitively (as
//! the proxies route them, so `/API/auth/` is not public), while the user-id pattern's literal
//! segments compare ASCII case-insensitively (so `/API/u2/` is still checked). The user id
//! itself compares exactly.

use percent_encoding::percent_decode_str;

/// A normalised path in both readings: decoded segments, no empty, `.` or `..` ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalPath {
    /// `;` parameters kept as part of the segment (Envoy, nginx, Starlette, Express).
    segments: Vec<String>,
    /// `;` parameters stripped from every segment (Tomcat, Jetty, Spring MVC); `None` when the
    /// path has no `;`, so both readings are the same.
    servlet: Option<Vec<String>>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`/…`): `*`, an absolute URL, or empty.
    NotAbsolute,
    /// A segment decodes to bytes that are not UTF-8.
    BadEncoding,
    /// A segment decodes to `/` or `\`: the back end may split there, we would not.
    EncodedSeparator,
    /// A control byte (NUL, CR, LF, DEL…) in a decoded segment.
    ControlByte,
    /// `..;x` or `.;x`: a dot segment with a `;` parameter, which Tomcat, Jetty and Envoy read as
    /// a dot segment and others as a name.
    DotWithParameters,
    /// `%3B`: a `;` that a servlet container keeps as text and a back end that decodes first
    /// reads as a parameter.
    EncodedParameter,
}

// === impl NormalPath ===

impl NormalPath {
    /// Normalise a raw request target (path, optionally with query and fragment).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let end = raw.find(['?', '#']).unwrap_or(raw.len());
        let path = &raw[..end];
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let segments = resolve(path.split('/'))?;
        let servlet = if path.contains(';') {
            let stripped = path
                .split('/')
                .map(|segment| segment.split(';').next().unwrap_or(segment));
            Some(resolve(stripped)?).filter(|servlet| *servlet != segments)
        } else {
            None
        };
        Ok(NormalPath { segments, servlet })
    }

    /// The reading with `;` parameters kept.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The reading with `;` parameters stripped, as servlet containers route.
    pub fn servlet_segments(&self) -> &[String] {
        self.servlet.as_deref().unwrap_or(&self.segments)
    }

    /// Every distinct reading of the path: one, or two when it has `;` parameters.
    pub fn readings(&self) -> impl Iterator<Item = &[String]> {
        std::iter::once(self.segments.as_slice()).chain(self.servlet.as_deref())
    }
}

/// Decode, check and resolve raw segments into one reading.
fn resolve<'a>(raw_segments: impl Iterator<Item = &'a str>) -> Result<Vec<String>, PathError> {
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in raw_segments {
        let decoded = percent_decode_str(raw_segment)
            .decode_utf8()
            .map_err(|_| PathError::BadEncoding)?;
        if decoded.contains(['/', '\\']) {
            return Err(PathError::EncodedSeparator);
        }
        if decoded.chars().any(char::is_control) {
            return Err(PathError::ControlByte);
        }
        if let Some((head, _params)) = decoded.split_once(';') {
            if head == "." || head == ".." {
                return Err(PathError::DotWithParameters);
            }
            if decoded.matches(';').count() > raw_segment.matches(';').count() {
                return Err(PathError::EncodedParameter);
            }
        }
        match &*decoded {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(decoded.into_owned()),
        }
    }
    Ok(segments)
}

fn starts_with(segments: &[String], prefix: &[String]) -> bool {
    segments.len() >= prefix.len() && segments.iter().zip(prefix).all(|(s, p)| s == p)
}

/// A public path prefix (`AUTHZ_PUBLIC_PATHS`), matched segment-wise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix {
    segments: Vec<String>,
}

// === impl PathPrefix ===

impl PathPrefix {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.contains(['?', '#']) {
            return Err(format!("{raw:?} must be a path without query or fragment"));
        }
        let path = NormalPath::parse(raw)
            .map_err(|e| format!("{raw:?} is not a usable path prefix ({e:?})"))?;
        if path.segments.is_empty() {
            return Err(format!(
                "{raw:?} would make every path public; remove the variable to protect nothing \
                 less, or name the prefixes"
            ));
        }
        Ok(PathPrefix {
            segments: path.segments,
        })
    }

    /// Whether every reading of `path` is under this prefix.
    pub fn matches(&self, path: &NormalPath) -> bool {
        path.readings().all(|r| starts_with(r, &self.segments))
    }
}

impl std::fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        f.write_str("/")
    }
}

/// `AUTHZ_USER_PATH_PATTERN`: literal segments and exactly one `{user_id}` segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPathPattern {
    segments: Vec<PatternSegment>,
    user_index: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    UserId,
}

pub const USER_ID_PLACEHOLDER: &str = "{user_id}";

// === impl UserPathPattern ===

impl UserPathPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("{raw:?} must start with '/'"));
        }
        if raw.contains(['?', '#', '%']) {
            return Err(format!(
                "{raw:?} must be a plain path: no query, fragment or percent-encoding"
            ));
        }
        let mut segments = Vec::new();
        let mut user_index = None;
        for part in raw.split('/').filter(|s| !s.is_empty()) {
            if part == USER_ID_PLACEHOLDER {
                if user_index.is_some() {
                    return Err(format!("{raw:?} has more than one {USER_ID_PLACEHOLDER}"));
                }
                user_index = Some(segments.len());
                segments.push(PatternSegment::UserId);
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "{raw:?}: only a whole segment {USER_ID_PLACEHOLDER} is a placeholder, \
                     found {part:?}"
                ));
            } else if part == "." || part == ".." {
                return Err(format!("{raw:?} must not contain dot segments"));
            } else {
                segments.push(PatternSegment::Literal(part.to_owned()));
            }
        }
        let user_index = user_index.ok_or_else(|| {
            format!("{raw:?} must contain the segment {USER_ID_PLACEHOLDER}, e.g. /api/{USER_ID_PLACEHOLDER}/")
        })?;
        Ok(UserPathPattern {
            segments,
            user_index,
        })
    }

    /// The (decoded) user id segment of every reading of `path` that matches the pattern: none,
    /// one, or two when the readings differ. Each one must be the caller.
    pub fn user_segments<'p>(&self, path: &'p NormalPath) -> impl Iterator<Item = &'p str> {
        path.readings().filter_map(|r| self.user_segment_of(r))
    }

    fn user_segment_of<'p>(&self, segments: &'p [String]) -> Option<&'p str> {
        if segments.len() < self.segments.len() {
            return None;
        }
        for (pattern, segment) in self.segments.iter().zip(segments) {
            if let PatternSegment::Literal(lit) = pattern
                && !lit.eq_ignore_ascii_case(segment)
            {
                return None;
            }
        }
        Some(segments[self.user_index].as_str())
    }
}

impl std::fmt::Display for UserPathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.segments {
            match segment {
                PatternSegment::Literal(lit) => write!(f, "/{lit}")?,
                PatternSegment::UserId => write!(f, "/{USER_ID_PLACEHOLDER}")?,
            }
        }
        f.write_str("/")
    }
}

#[cfg(test)]
mod tests;
