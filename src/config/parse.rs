//! One parser per kind of value, each with its range: text in, a typed value or a message
//! naming the bad value out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::path::{PathPrefix, UserPathPattern};
use crate::routes::{RoutePattern, RouteTable};

use super::{LogFormat, OtlpProtocol};

/// Listener address meaning "do not listen": for installs that use one proxy only.
pub const LISTENER_OFF: &str = "off";

pub fn millis(min: u64, max: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |raw| bounded(raw, min, max, " milliseconds").map(Duration::from_millis)
}

pub fn count<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> {
    move |raw| {
        let n = bounded(raw, min, max, "")?;
        T::try_from(n).map_err(|_| format!("{n} is too large here"))
    }
}

/// A whole number within `min..=max`; `unit` names it in messages.
fn bounded(raw: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let n: u64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number{}", unit.replace(' ', " of ")))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}{unit}"));
    }
    Ok(n)
}

pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{raw:?} is not true or false")),
    }
}

pub fn addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|_| format!("{raw:?} is not an IP:port address, e.g. 0.0.0.0:9001"))
}

/// An address, or `off` (`None`).
pub fn listener_addr(raw: &str) -> Result<Option<SocketAddr>, String> {
    if raw.eq_ignore_ascii_case(LISTENER_OFF) {
        return Ok(None);
    }
    addr(raw)
        .map(Some)
        .map_err(|e| format!("{e}, or {LISTENER_OFF}"))
}

pub fn base_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// `BETTER_AUTH_URL`: a base URL without a user name or password. The Better Auth calls carry
/// the caller's credential, and only it: a user and password here would be sent to no one. The
/// message does not repeat them.
pub fn better_auth_url(raw: &str) -> Result<url::Url, String> {
    let url = base_url(raw)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry a user name or password".into());
    }
    Ok(url)
}

pub fn endpoint_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') || raw.contains(['?', '#', ' ']) {
        return Err(format!(
            "{raw:?} must be an absolute path without query, e.g. /api/auth/get-session"
        ));
    }
    Ok(raw.to_owned())
}

pub fn cookie_prefix(raw: &str) -> Result<String, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "-_.!#$%&'*+^`|~".contains(c);
    if raw.chars().all(token) {
        Ok(raw.to_owned())
    } else {
        Err(format!("{raw:?} has characters a cookie name cannot hold"))
    }
}

/// `AUTHZ_PUBLIC_PATHS`: each prefix checked as before, then as the anonymous route it stands
/// for.
pub fn public_paths(raw: &str) -> Result<Vec<RoutePattern>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match PathPrefix::parse(part).and_then(|p| RoutePattern::parse(&p.to_string())) {
            Ok(pattern) => out.push(pattern),
            Err(problem) => bad.push(problem),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad.join("; "))
    }
}

/// `AUTHZ_USER_PATH_PATTERN`: checked as before, then as the `own` route it stands for.
pub fn user_path(raw: &str) -> Result<RoutePattern, String> {
    UserPathPattern::parse(raw).and_then(|p| RoutePattern::parse(&p.to_string()))
}

/// `AUTHZ_POLICY_FILE`: read and checked now; every problem, each with its line.
pub fn policy_file(raw: &str) -> Result<(PathBuf, RouteTable), String> {
    let path = PathBuf::from(raw);
    crate::routes::file::load(&path)
        .map(|routes| (path, routes))
        .map_err(|problems| format!("{raw}:\n    {}", problems.join("\n    ")))
}

/// Identity header names: valid HTTP names, lower-case, and not one the proxies own.
pub fn header_name(raw: &str) -> Result<String, String> {
    let name = http::HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("{raw:?} is not a valid header name"))?;
    const RESERVED: [&str; 12] = [
        "host",
        "cookie",
        "set-cookie",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "transfer-encoding",
        "upgrade",
        "te",
        "keep-alive",
        "x-forwarded-for",
    ];
    if RESERVED.contains(&name.as_str()) {
        return Err(format!("{raw:?} is a header the proxies manage"));
    }
    Ok(name.as_str().to_owned())
}

/// The JWT's header: any header name the identity headers may take, or `authorization`.
pub fn jwt_header(raw: &str) -> Result<String, String> {
    if raw.eq_ignore_ascii_case("authorization") {
        return Ok("authorization".into());
    }
    header_name(raw)
}

pub fn log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{raw:?} is not text or json")),
    }
}

pub fn otlp_protocol(raw: &str) -> Result<OtlpProtocol, String> {
    match raw {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        other => Err(format!("{other:?} is not grpc or http/protobuf")),
    }
}

/// A sampler's name; the ratio is its own variable.
pub fn sampler_name(raw: &str) -> Result<String, String> {
    const NAMES: [&str; 6] = [
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ];
    NAMES
        .contains(&raw)
        .then(|| raw.to_owned())
        .ok_or_else(|| format!("{raw:?} is not a supported sampler"))
}

pub fn ratio(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{raw:?} is not a ratio between 0 and 1"))
}

pub fn file(raw: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

/// A PEM bundle of CA certificates, loaded once here.
pub fn ca_bundle(raw: &str) -> Result<crate::better_auth::CaBundle, String> {
    let pem = std::fs::read(raw).map_err(|e| format!("{raw}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{raw}: not a PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{raw}: no PEM certificate in the file"));
    }
    Ok(crate::better_auth::CaBundle {
        path: PathBuf::from(raw),
        certs,
    })
}
