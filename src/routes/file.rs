//! `AUTHZ_POLICY_FILE`: the YAML policy, read into a [`RouteTable`] with every problem named
//! with its line. Parsing is `serde-saphyr` (no panics, bounded aliases); a structural error
//! (bad YAML, an unknown key, a wrong type) is reported alone, then every route is checked and
//! every problem reported.

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Access, Login, Requirements, Route, RoutePattern, RouteTable, host_key};

/// Longest file read: a policy is a few kilobytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    app_origin: Option<Spanned<String>>,
    #[serde(default)]
    login_url: Option<Spanned<String>>,
    /// `routes:` with nothing under it is an empty list.
    #[serde(default)]
    routes: Option<Vec<Spanned<RouteEntry>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    name: String,
    #[serde(rename = "match")]
    matches: MatchEntry,
    #[serde(default)]
    allow: Option<String>,
    #[serde(default)]
    require: Option<RequireEntry>,
    #[serde(default)]
    on_deny: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchEntry {
    path: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequireEntry {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    org_roles: Vec<String>,
    #[serde(default)]
    email_verified: bool,
    #[serde(default)]
    not_impersonated: bool,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    revalidate: bool,
}

/// Read and check the policy at `path`.
pub fn load(path: &std::path::Path) -> Result<RouteTable, Vec<String>> {
    let text = read(path).map_err(|problem| vec![problem])?;
    parse(&text)
}

/// The file's text, bounded.
pub fn read(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it as UTF-8 text: {e}"))?;
    Ok(text)
}

/// Parse and check a policy. `Err` lists every problem, each starting with its line.
pub fn parse(text: &str) -> Result<RouteTable, Vec<String>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![format!(
            "the file is over {MAX_FILE_BYTES} bytes; a policy is a few kilobytes"
        )]);
    }
    let file: PolicyFile =
        serde_saphyr::from_str(text).map_err(|e| vec![e.without_snippet().to_string()])?;
    let mut problems = Vec::new();
    let login = login_of(&file, &mut problems);
    let mut routes: Vec<Route> = Vec::new();
    for entry in file.routes.iter().flatten() {
        let line = entry.referenced.line();
        let mut mine = Vec::new();
        let route = route_of(&entry.value, line, &mut mine);
        if let Some(route) = &route {
            if routes.iter().any(|r| r.name == route.name) {
                mine.push("the name is already used by an earlier route".into());
            }
            if route.login && login.is_none() && file.app_origin.is_none() {
                mine.push("on_deny: login needs app_origin and login_url at the top".into());
            }
        }
        let name = &entry.value.name;
        problems.extend(
            mine.into_iter()
                .map(|p| format!("line {line}: route {name:?}: {p}")),
        );
        routes.extend(route);
    }
    if problems.is_empty() {
        Ok(RouteTable::new(routes, login))
    } else {
        Err(problems)
    }
}

fn login_of(file: &PolicyFile, problems: &mut Vec<String>) -> Option<Login> {
    let at = |s: &Spanned<String>| s.referenced.line();
    let origin = file.app_origin.as_ref().and_then(|o| {
        origin_of(&o.value)
            .map_err(|p| problems.push(format!("line {}: app_origin: {p}", at(o))))
            .ok()
    });
    let login_url = file.login_url.as_ref().and_then(|u| {
        absolute_url(&u.value)
            .map_err(|p| problems.push(format!("line {}: login_url: {p}", at(u))))
            .ok()
    });
    match (&file.app_origin, &file.login_url) {
        (Some(o), None) => problems.push(format!("line {}: app_origin needs login_url", at(o))),
        (None, Some(u)) => problems.push(format!("line {}: login_url needs app_origin", at(u))),
        _ => {}
    }
    Some(Login {
        app_origin: origin?,
        login_url: login_url?,
    })
}

/// `scheme://host[:port]`: an http(s) URL with no path, query or user info.
fn origin_of(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{raw:?} must be an http or https origin"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be an origin only, without a path or query"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} must not carry user info"));
    }
    Ok(url.origin().ascii_serialization())
}

fn absolute_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{raw:?} must be an absolute http or https URL"));
    }
    if url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a fragment"));
    }
    Ok(url.to_string())
}

/// One route, or `None` with its problems in `report`.
fn route_of(entry: &RouteEntry, line: u64, report: &mut Vec<String>) -> Option<Route> {
    let name = &entry.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        report.push("the name must be [a-z0-9-]+".into());
    }
    let pattern = RoutePattern::parse(&entry.matches.path)
        .map_err(|p| report.push(format!("match.path: {p}")))
        .ok();
    let methods = entry.matches.methods.as_ref().map(|ms| {
        if ms.is_empty() {
            report.push("match.methods is empty: leave it out to match every method".into());
        }
        for m in ms {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                report.push(format!("match.methods: {m:?} is not an HTTP method"));
            }
        }
        ms.iter().map(|m| m.to_ascii_uppercase()).collect()
    });
    let hosts = entry.matches.hosts.as_ref().map(|hs| {
        if hs.is_empty() {
            report.push("match.hosts is empty: leave it out to match every host".into());
        }
        for h in hs {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
            if !ok {
                report.push(format!("match.hosts: {h:?} is not a host name"));
            }
        }
        hs.iter().map(|h| host_key(h)).collect()
    });
    let login = match entry.on_deny.as_deref() {
        None | Some("status") => false,
        Some("login") => true,
        Some(other) => {
            report.push(format!("on_deny: {other:?} is not one of status, login"));
            false
        }
    };
    let access = match entry.allow.as_deref() {
        Some("anonymous") => {
            if entry.require.is_some() || login {
                report.push("allow: anonymous takes no require or on_deny: login".into());
            }
            if pattern.as_ref().is_some_and(RoutePattern::has_placeholder) {
                report.push(
                    "an anonymous route has no placeholders: nobody to compare them with".into(),
                );
            }
            Access::Anonymous
        }
        Some(other) => {
            report.push(format!(
                "allow: {other:?} is not anonymous (leave it out for a session)"
            ));
            Access::Anonymous
        }
        None => Access::Session(requirements_of(
            entry.require.as_ref(),
            pattern.as_ref(),
            report,
        )),
    };
    if !report.is_empty() {
        return None;
    }
    Some(Route {
        methods,
        hosts,
        access,
        login,
        line,
        short_denies: true,
        ..Route::new(name, pattern?)
    })
}

fn requirements_of(
    entry: Option<&RequireEntry>,
    pattern: Option<&RoutePattern>,
    report: &mut Vec<String>,
) -> Requirements {
    let Some(entry) = entry else {
        return Requirements::default();
    };
    for (key, list) in [("roles", &entry.roles), ("org_roles", &entry.org_roles)] {
        for role in list {
            if role.trim().is_empty() || role.contains(',') || role.trim() != role {
                report.push(format!("require.{key}: {role:?} is not a role name"));
            }
        }
    }
    if !entry.org_roles.is_empty() && pattern.is_some_and(|p| !p.has_org()) {
        report.push("require.org_roles needs {org_id} or {org_slug} in match.path".into());
    }
    let max_age = entry.max_age.as_deref().and_then(|raw| {
        duration(raw)
            .map_err(|p| report.push(format!("require.max_age: {p}")))
            .ok()
    });
    Requirements {
        roles: entry.roles.clone(),
        org_roles: entry.org_roles.clone(),
        email_verified: entry.email_verified,
        not_impersonated: entry.not_impersonated,
        max_age,
        revalidate: entry.revalidate,
    }
}

/// `90s`, `15m`, `12h`, `7d`: a whole number and a unit.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{raw:?} is not a duration like 90s, 15m, 12h or 7d"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90s, 15m, 12h or 7d"))?;
    if n == 0 {
        return Err(format!("{raw:?} would deny every session"));
    }
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}
