//! Per-route policy: the compiled route table, the matcher, and what a matched route demands.
//! Pure: no IO (the file is read by [`file`], reloaded by `crate::reload`).
//!
//! Routes are tried in order; the first whose `match` fits wins. A path that matches a route
//! whose `methods` or `hosts` do not fit, with no later route fitting, is denied: a forgotten
//! method must not fall through to the default. No route → the default, a session.
//!
//! Paths are judged as [`NormalPath`] says, in each of its readings (`;` parameters kept and
//! stripped): the route of every reading applies, so a path is anonymous only when every
//! reading's route is. Each rule errs towards denying: an anonymous route's literal segments
//! and methods compare exactly (as the proxies route), a route with requirements compares them
//! ASCII case-insensitively (so `/ADMIN/` is still the admin area for a back end that ignores
//! case). Matching walks a segment trie, so its cost does not grow with the number of routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::path::NormalPath;
use crate::reason::{Detail, Reason};

pub mod file;

/// The label of checks no route matched (names are `[a-z0-9-]+`, so it cannot clash).
pub const DEFAULT_ROUTE: &str = "_default";

/// Every route, in order, and the trie that finds the candidates for a path.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_name: HashMap<Arc<str>, usize>,
    trie: Node,
    /// Where browsers denied on an `on_deny: login` route are sent.
    pub login: Option<Login>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// `scheme://host[:port]`, no trailing slash: every callback starts with it.
    pub app_origin: String,
    /// The sign-in page, absolute.
    pub login_url: String,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub pattern: RoutePattern,
    /// Upper case; `GET` admits `HEAD`. `None`: every method.
    pub methods: Option<Vec<String>>,
    /// Lower case, without port or trailing dot. `None`: every host.
    pub hosts: Option<Vec<String>>,
    pub access: Access,
    /// `on_deny: login`.
    pub login: bool,
    /// The line of the route in its file (0 for routes made from variables).
    pub line: u64,
    /// A path that ends before one of the placeholders is denied (policy files). The
    /// shorthand keeps its meaning: such a path is simply not under the pattern.
    pub short_denies: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// No session needed; identity headers removed.
    Anonymous,
    /// A session, and these requirements.
    Session(Requirements),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Any one of these in `user.role` (a comma-separated list).
    pub roles: Vec<String>,
    /// Any one of these as the user's role in the organization the path names.
    pub org_roles: Vec<String>,
    pub email_verified: bool,
    pub not_impersonated: bool,
    /// The sign-in (`session.createdAt`) no older than this.
    pub max_age: Option<Duration>,
    /// Ask Better Auth past its cookie cache and ours.
    pub revalidate: bool,
}

/// Literal segments and placeholders, matched as a whole-segment prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    UserId,
    OrgId,
    OrgSlug,
}

/// An organization as the path names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrgRef {
    Id(String),
    Slug(String),
}

/// The route a proxy named for this request (Envoy `context_extensions`, nginx
/// `AUTHZ_ROUTE_HEADER`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum NamedRoute<'a> {
    #[default]
    None,
    Named(&'a str),
    /// The header came more than once.
    Repeated,
}

/// What the routes of a request demand, owned, for the core to judge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// The route of the path as the proxy routes it (`;` parameters kept), or
    /// [`DEFAULT_ROUTE`]: the `route` label of the per-route metrics.
    pub route: Option<Arc<str>>,
    /// Decided without a session: a deny.
    pub deny: Option<(Reason, Detail)>,
    /// Every route is anonymous: no session needed.
    pub anonymous: bool,
    /// Path segments that must be the caller's id.
    pub users: Vec<String>,
    /// Each entry: the user must have one of these roles.
    pub roles: Vec<Vec<String>>,
    /// Each entry: the user must be a member of the organization with one of these roles.
    pub orgs: Vec<(OrgRef, Vec<String>)>,
    pub email_verified: bool,
    pub not_impersonated: bool,
    pub max_age: Option<Duration>,
    pub revalidate: bool,
    /// Send a browser denied for want of a session to the sign-in page.
    pub login: bool,
}

/// A node of the segment trie: routes whose pattern ends here, routes whose pattern continues
/// past here with a placeholder (a path that ends here lacks it), and children.
#[derive(Clone, Debug, Default)]
struct Node {
    ends: Vec<usize>,
    short: Vec<usize>,
    literal: HashMap<String, Node>,
    placeholder: Option<Box<Node>>,
}

/// How a candidate route matched one reading.
enum Fit<'p> {
    Full(Bindings<'p>),
    /// The path ends before one of the route's placeholders.
    Short,
}

#[derive(Default)]
struct Bindings<'p> {
    user: Option<&'p str>,
    org: Option<OrgRef>,
}

/// The first route that fits one reading.
enum Selected<'t, 'p> {
    Route(&'t Route, Bindings<'p>),
    Short(&'t Route),
    /// A route's path matched, its methods or hosts did not, and no later route fit.
    Narrowed(&'t Route),
    Default,
}

// === impl RouteTable ===

impl RouteTable {
    /// Build the table; names must be unique (the file loader reports duplicates first).
    pub fn new(routes: Vec<Route>, login: Option<Login>) -> Self {
        let mut trie = Node::default();
        let mut by_name = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            by_name.entry(route.name.clone()).or_insert(i);
            trie.insert(&route.pattern.segments, i, route.short_denies);
        }
        RouteTable {
            routes,
            by_name,
            trie,
            login,
        }
    }

    /// The shorthand of `AUTHZ_PUBLIC_PATHS` and `AUTHZ_USER_PATH_PATTERN`: one anonymous
    /// route per prefix (`public-1`, …), then `own` with the user placeholder.
    pub fn from_variables(public: &[RoutePattern], own: Option<RoutePattern>) -> Self {
        let mut routes: Vec<Route> = public
            .iter()
            .enumerate()
            .map(|(i, pattern)| Route::new(&format!("public-{}", i + 1), pattern.clone()))
            .map(|r| Route {
                access: Access::Anonymous,
                ..r
            })
            .collect();
        routes.extend(own.map(|pattern| Route::new("own", pattern)));
        RouteTable::new(routes, None)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.by_name.get(name).map(|&i| &self.routes[i])
    }

    /// What the routes demand of a request to `path` with this method and host.
    pub fn demand(
        &self,
        path: &NormalPath,
        method: &str,
        host: Option<&str>,
        named: NamedRoute<'_>,
    ) -> Demand {
        let host = host.map(host_key);
        let mut demand = Demand {
            anonymous: true,
            ..Demand::default()
        };
        for (i, reading) in path.readings().enumerate() {
            let selected = self.select(reading, method, host.as_deref());
            if i == 0 {
                demand.route = Some(match &selected {
                    Selected::Route(r, _) | Selected::Short(r) | Selected::Narrowed(r) => {
                        r.name.clone()
                    }
                    Selected::Default => Arc::from(DEFAULT_ROUTE),
                });
            }
            match selected {
                Selected::Route(route, bindings) => demand.add(route, bindings),
                Selected::Default => demand.anonymous = false,
                Selected::Short(_) => {
                    demand.deny_with(Reason::NoRoute, Detail::RouteSegmentMissing);
                }
                Selected::Narrowed(_) => {
                    demand.deny_with(Reason::NoRoute, Detail::MethodNotRouted);
                }
            }
        }
        match named {
            NamedRoute::None => {}
            NamedRoute::Repeated => demand.deny_with(Reason::NoRoute, Detail::RepeatedRoute),
            NamedRoute::Named(name) => match self.route(name) {
                None => demand.deny_with(Reason::NoRoute, Detail::UnknownRoute),
                // Naming an anonymous route adds nothing, so it weakens nothing.
                Some(route) if route.access == Access::Anonymous => {}
                Some(route) => {
                    let fits: Vec<Fit<'_>> = path.readings().filter_map(|r| route.fit(r)).collect();
                    if fits.is_empty() && route.pattern.has_placeholder() {
                        // Its requirements need a segment this path does not have.
                        demand.deny_with(Reason::NoRoute, Detail::RouteSegmentMissing);
                    } else if fits.is_empty() {
                        demand.add(route, Bindings::default());
                    }
                    for fit in fits {
                        match fit {
                            Fit::Full(bindings) => demand.add(route, bindings),
                            Fit::Short => {
                                demand.deny_with(Reason::NoRoute, Detail::RouteSegmentMissing);
                            }
                        }
                    }
                }
            },
        }
        demand
    }

    /// The first route that fits `reading`, method and host, in order.
    fn select<'t, 'p>(
        &'t self,
        reading: &'p [String],
        method: &str,
        host: Option<&str>,
    ) -> Selected<'t, 'p> {
        let mut candidates = Vec::new();
        self.trie.collect(reading, &mut candidates);
        candidates.sort_unstable();
        candidates.dedup();
        let mut narrowed = None;
        for i in candidates {
            let route = &self.routes[i];
            let Some(fit) = route.fit(reading) else {
                continue;
            };
            if !route.admits(method, host) {
                narrowed.get_or_insert(route);
                continue;
            }
            return match fit {
                Fit::Full(bindings) => Selected::Route(route, bindings),
                Fit::Short => Selected::Short(route),
            };
        }
        narrowed.map_or(Selected::Default, Selected::Narrowed)
    }
}

// === impl Login ===

/// What a callback segment keeps unencoded: RFC 3986 unreserved characters only.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Login {
    /// `login_url?callbackURL=…`, the callback being `app_origin` + the normalised path (each
    /// segment re-encoded) + the query: never built from `Host`, never absolute to anywhere but
    /// `app_origin`.
    pub fn redirect_for(&self, path: &NormalPath, target: &str) -> String {
        use percent_encoding::utf8_percent_encode;
        let target = target.split('#').next().unwrap_or_default();
        let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut callback = self.app_origin.clone();
        for segment in path.segments() {
            callback.push('/');
            callback.extend(utf8_percent_encode(segment, UNRESERVED));
        }
        if path.segments().is_empty() || raw_path.ends_with('/') {
            callback.push('/');
        }
        if !query.is_empty() {
            callback.push('?');
            callback.push_str(query);
        }
        let separator = if self.login_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{separator}callbackURL={}",
            self.login_url,
            utf8_percent_encode(&callback, UNRESERVED)
        )
    }
}

// === impl Route ===

impl Route {
    /// A session route with no requirements, every method and host.
    pub fn new(name: &str, pattern: RoutePattern) -> Self {
        Route {
            name: Arc::from(name),
            pattern,
            methods: None,
            hosts: None,
            access: Access::Session(Requirements::default()),
            login: false,
            line: 0,
            short_denies: false,
        }
    }

    /// How this route's pattern matches one reading, with its own case and placeholder rules.
    fn fit<'p>(&self, reading: &'p [String]) -> Option<Fit<'p>> {
        self.pattern
            .fit(reading, self.case_sensitive(), self.short_denies)
    }

    /// Anonymous routes match exactly; routes with requirements, case-insensitively.
    fn case_sensitive(&self) -> bool {
        self.access == Access::Anonymous
    }

    fn admits(&self, method: &str, host: Option<&str>) -> bool {
        let exact = self.case_sensitive();
        let same = |a: &str, b: &str| {
            if exact {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let methods = self.methods.as_ref().is_none_or(|ms| {
            ms.iter()
                .any(|m| same(m, method) || (m == "GET" && same("HEAD", method)))
        });
        let hosts = self
            .hosts
            .as_ref()
            .is_none_or(|hs| host.is_some_and(|h| hs.iter().any(|x| x == h)));
        methods && hosts
    }
}

// === impl RoutePattern ===

impl RoutePattern {
    /// `/admin/`, `/api/{user_id}/`, `/orgs/{org_id}/`, `/orgs/{org_slug}/`: whole segments,
    /// no query, fragment, percent-encoding or dot segments; at most one `{user_id}` and one
    /// organization placeholder.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("{raw:?} must start with '/'"));
        }
        if raw.contains(['?', '#', '%', ';', '\\']) || raw.chars().any(char::is_control) {
            return Err(format!(
                "{raw:?} must be a plain path: no query, fragment, percent-encoding, ';' or '\\'"
            ));
        }
        let mut segments = Vec::new();
        for part in raw.split('/').filter(|s| !s.is_empty()) {
            let segment = match part {
                "{user_id}" => Segment::UserId,
                "{org_id}" => Segment::OrgId,
                "{org_slug}" => Segment::OrgSlug,
                "." | ".." => return Err(format!("{raw:?} must not contain dot segments")),
                _ if part.contains(['{', '}']) => {
                    return Err(format!(
                        "{raw:?}: {part:?} is not a placeholder (whole segments only: \
                         {{user_id}}, {{org_id}}, {{org_slug}})"
                    ));
                }
                _ => Segment::Literal(part.to_owned()),
            };
            if !matches!(segment, Segment::Literal(_)) {
                let org = |s: &Segment| matches!(s, Segment::OrgId | Segment::OrgSlug);
                let twice = segments
                    .iter()
                    .any(|s| *s == segment || (org(s) && org(&segment)));
                if twice {
                    return Err(format!(
                        "{raw:?} names the {} placeholder more than once",
                        if org(&segment) {
                            "organization"
                        } else {
                            "user"
                        }
                    ));
                }
            }
            segments.push(segment);
        }
        Ok(RoutePattern { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn has_placeholder(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    pub fn has_org(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::OrgId | Segment::OrgSlug))
    }

    /// How this pattern matches one reading, if at all.
    fn fit<'p>(&self, reading: &'p [String], exact: bool, short_denies: bool) -> Option<Fit<'p>> {
        let mut bindings = Bindings::default();
        for (i, pattern) in self.segments.iter().enumerate() {
            let Some(segment) = reading.get(i) else {
                // The path ended: a miss, unless it reached the first placeholder and a
                // placeholder is still to come (`/orgs` for `/orgs/{org_id}/`). A path that
                // ends within the literal prefix (`/`) is not under the route.
                return (short_denies && lacks_placeholder(&self.segments, i))
                    .then_some(Fit::Short);
            };
            match pattern {
                Segment::Literal(lit) if exact && lit != segment => return None,
                Segment::Literal(lit) if !lit.eq_ignore_ascii_case(segment) => return None,
                Segment::Literal(_) => {}
                Segment::UserId => bindings.user = Some(segment),
                Segment::OrgId => bindings.org = Some(OrgRef::Id(segment.clone())),
                Segment::OrgSlug => bindings.org = Some(OrgRef::Slug(segment.clone())),
            }
        }
        Some(Fit::Full(bindings))
    }
}

impl std::fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => write!(f, "/{lit}")?,
                Segment::UserId => f.write_str("/{user_id}")?,
                Segment::OrgId => f.write_str("/{org_id}")?,
                Segment::OrgSlug => f.write_str("/{org_slug}")?,
            }
        }
        f.write_str("/")
    }
}

/// Whether a path that ends after `len` segments of a pattern lacks one of its placeholders:
/// it reached the first placeholder (`segments[len]` or an earlier one) and one is still to
/// come.
fn lacks_placeholder(segments: &[Segment], len: usize) -> bool {
    let placeholder = |s: &Segment| !matches!(s, Segment::Literal(_));
    segments[..=len].iter().any(placeholder) && segments[len..].iter().any(placeholder)
}

// === impl Node ===

impl Node {
    fn insert(&mut self, segments: &[Segment], route: usize, short_denies: bool) {
        let mut node = self;
        for (depth, segment) in segments.iter().enumerate() {
            if short_denies && lacks_placeholder(segments, depth) {
                node.short.push(route);
            }
            node = match segment {
                Segment::Literal(lit) => node.literal.entry(lit.to_ascii_lowercase()).or_default(),
                _ => node.placeholder.get_or_insert_with(Box::default),
            };
        }
        node.ends.push(route);
    }

    /// Every route whose pattern may fit `reading`: a superset, checked by [`RoutePattern::fit`].
    fn collect(&self, reading: &[String], out: &mut Vec<usize>) {
        out.extend_from_slice(&self.ends);
        let Some((first, rest)) = reading.split_first() else {
            out.extend_from_slice(&self.short);
            return;
        };
        let child = if first.bytes().any(|b| b.is_ascii_uppercase()) {
            self.literal.get(&first.to_ascii_lowercase())
        } else {
            self.literal.get(first.as_str())
        };
        if let Some(child) = child {
            child.collect(rest, out);
        }
        if let Some(child) = &self.placeholder {
            child.collect(rest, out);
        }
    }
}

// === impl Demand ===

impl Demand {
    /// A deny decided by the routes; the first one found stands.
    fn deny_with(&mut self, reason: Reason, detail: Detail) {
        self.anonymous = false;
        self.deny.get_or_insert((reason, detail));
    }

    /// Add a route's requirements, with the segments its placeholders bound.
    fn add(&mut self, route: &Route, bindings: Bindings<'_>) {
        self.login |= route.login;
        let Access::Session(req) = &route.access else {
            return;
        };
        self.anonymous = false;
        if let Some(user) = bindings.user {
            self.users.push(user.to_owned());
        }
        if !req.roles.is_empty() {
            self.roles.push(req.roles.clone());
        }
        if !req.org_roles.is_empty() {
            match bindings.org {
                Some(org) => self.orgs.push((org, req.org_roles.clone())),
                None => self.deny_with(Reason::NoRoute, Detail::RouteSegmentMissing),
            }
        }
        self.email_verified |= req.email_verified;
        self.not_impersonated |= req.not_impersonated;
        self.revalidate |= req.revalidate;
        self.max_age = match (self.max_age, req.max_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl std::fmt::Display for Route {
    /// One line: `name  match  access`, as `better-authz policy check` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<16} {}", self.name, self.pattern)?;
        if let Some(methods) = &self.methods {
            write!(f, " methods={}", methods.join(","))?;
        }
        if let Some(hosts) = &self.hosts {
            write!(f, " hosts={}", hosts.join(","))?;
        }
        match &self.access {
            Access::Anonymous => f.write_str("  -> anonymous")?,
            Access::Session(req) => write!(f, "  -> {req}")?,
        }
        if self.login {
            f.write_str(", on_deny=login")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Requirements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("session")?;
        if !self.roles.is_empty() {
            write!(f, ", role in [{}]", self.roles.join(", "))?;
        }
        if !self.org_roles.is_empty() {
            write!(f, ", org role in [{}]", self.org_roles.join(", "))?;
        }
        if self.email_verified {
            f.write_str(", email verified")?;
        }
        if self.not_impersonated {
            f.write_str(", not impersonated")?;
        }
        if let Some(age) = self.max_age {
            write!(f, ", signed in within {}s", age.as_secs())?;
        }
        if self.revalidate {
            f.write_str(", revalidated")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Demand {
    /// What a request must meet, as `better-authz policy explain` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "route: {}",
            self.route.as_deref().unwrap_or(DEFAULT_ROUTE)
        )?;
        if let Some((reason, detail)) = self.deny {
            return writeln!(
                f,
                "denied: {} {} ({})",
                reason.http_status(),
                reason.code(),
                detail.text()
            );
        }
        if self.anonymous {
            return writeln!(f, "allowed without a session (identity headers removed)");
        }
        writeln!(f, "requires: a valid session")?;
        for user in &self.users {
            writeln!(f, "  the caller's id is {user:?}")?;
        }
        for roles in &self.roles {
            writeln!(f, "  a role in [{}] (user.role)", roles.join(", "))?;
        }
        for (org, roles) in &self.orgs {
            let (kind, value) = match org {
                OrgRef::Id(id) => ("id", id),
                OrgRef::Slug(slug) => ("slug", slug),
            };
            writeln!(
                f,
                "  membership of organization {kind} {value:?} with a role in [{}]",
                roles.join(", ")
            )?;
        }
        if self.email_verified {
            writeln!(f, "  a verified email address")?;
        }
        if self.not_impersonated {
            writeln!(f, "  a session that is not impersonated")?;
        }
        if let Some(age) = self.max_age {
            writeln!(f, "  a sign-in within the last {}s", age.as_secs())?;
        }
        if self.revalidate {
            writeln!(f, "  asked past every cache (revalidate)")?;
        }
        if self.login {
            writeln!(
                f,
                "  browsers without a session are sent to the sign-in page"
            )?;
        }
        Ok(())
    }
}

/// A host for comparison: lower case, without port or trailing dot.
pub fn host_key(host: &str) -> String {
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
