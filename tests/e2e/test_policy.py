"""The per-route policy (AUTHZ_POLICY_FILE) end to end, against the real Better Auth (admin and organization
plugins) through the shipped Envoy and nginx configs.

A better-authz of its own reads POLICY below (a file under .e2e-logs/) with AUTHZ_ROUTE_HEADER=x-authz-route, behind
envoy/envoy.yaml and nginx/nginx.conf rendered onto free ports, sharing the session stack's Better Auth and back end.
Both configs keep their shipped example (`/reports/` names the `admin` route); the tests add two more proxy routes
of the same shape: `/named-open/` names the anonymous `open` route, `/named-unknown/` a name the policy lacks.
Users get their role, organizations and verified email from Better Auth's test-only endpoints
(demo/better-auth/server.mjs) and impersonation from the admin plugin's own POST /admin/impersonate-user.

Every case runs through both proxies: roles, organization roles (and the organization segment's abuse), a verified
email, sign-in redirects for browsers (never built from Host), impersonation, the sign-in age, methods a route does
not list, routes named by the proxy (and not by the client), reload while serving, bad files at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import LOG_DIR, PROXIES, Authz, ExtraProcs, Response, Stack, User, free_ports, raw_request
from conftest import authz_env
from launcher import ROOT, ROUTE_HEADER, STACK_CREDENTIALS, with_extra

APP_ORIGIN = "https://app.example.com"
LOGIN_URL = "https://login.example.com/sign-in?app=todo"
POLICY = f"""\
app_origin: {APP_ORIGIN}
login_url: {LOGIN_URL}
routes:
  - name: auth
    match: {{ path: /api/auth/ }}
    allow: anonymous
  - name: open
    match: {{ path: /open/ }}
    allow: anonymous
  - name: admin
    match: {{ path: /admin/ }}
    require: {{ roles: [admin] }}
  - name: org
    match: {{ path: "/orgs/{{org_id}}/" }}
    require: {{ org_roles: [owner, admin] }}
  - name: own
    match: {{ path: "/api/{{user_id}}/", methods: [GET, POST] }}
  - name: account
    match: {{ path: /account/ }}
    require: {{ email_verified: true, not_impersonated: true, revalidate: true }}
    on_deny: login
  - name: internal
    match: {{ path: /internal/, hosts: [internal.example] }}
    require: {{ roles: [admin] }}
  - name: recent
    match: {{ path: /recent/ }}
    require: {{ max_age: 2s }}
    on_deny: login
"""
# Added and broken while serving (test_reload_while_serving).
FROZEN = """\
  - name: frozen
    match: { path: /frozen/ }
    require: { roles: [nobody] }
"""
BROKEN = """\
  - name: Broken
    match: { path: frozen }
"""
ROUTES = POLICY.count("- name:")
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


def envoy_route(prefix: str, name: str) -> str:
    """An Envoy route to the back end naming policy route `name` in the Check (as the shipped /reports/ does)."""
    return (f'              - match: {{path_separated_prefix: "{prefix}"}}\n'
            f"                route: {{cluster: todo_backend}}\n"
            f"                typed_per_filter_config:\n"
            f"                  envoy.filters.http.ext_authz:\n"
            f'                    "@type": {PER_ROUTE}\n'
            f"                    check_settings: {{context_extensions: {{route: {name}}}}}\n")


def nginx_location(prefix: str, name: str) -> str:
    """An nginx location naming policy route `name` (as the shipped /reports/ location does)."""
    return f"location {prefix}/ {{ set $authz_route {name}; proxy_pass http://todo_backend; }}\n            "


ENVOY_PROTECTED = "              - name: protected\n"
NGINX_REPORTS = '            location ~* "^/reports(/|;|$)" {'
NAMED = {"/named-open": "open", "/named-unknown": "nope"}


# ------------------------------------------------------------------------------------------ the fronts

@dataclass
class Fronts:
    stack: Stack
    authz: Authz
    file: Path
    names: dict[str, str]       # "envoy" / "nginx" -> the name of that front in stack.ports

    def ask(self, proxy: str, method: str, target: str, cookie: str | None = None, accept: str | None = None,
            lines: list[str] = (), host: str = "app.example") -> Response:
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        head += [f"Cookie: {cookie}"] if cookie else []
        head += [f"Accept: {accept}"] if accept else []
        data = "\r\n".join([*head, *lines]) + "\r\n\r\n"
        return self.stack.request_bytes(self.names[proxy], data.encode(), label=f"{method} {target}")

    def detail_count(self, detail: str) -> float:
        return self.authz.metric("better_authz_deny_details_total", detail=detail)


@pytest.fixture(scope="module")
def fronts(stack: Stack):
    path = LOG_DIR / "policy-e2e.yaml"
    write(path, POLICY)
    with ExtraProcs(stack) as extra:
        authz = extra.authz("better-authz-policy", {
            "AUTHZ_POLICY_FILE": str(path), "AUTHZ_ROUTE_HEADER": ROUTE_HEADER,
            "AUTHZ_CREDENTIALS": STACK_CREDENTIALS, "AUTHZ_FORWARD_AUTH": "nginx"})
        routes = "".join(envoy_route(prefix, name) for prefix, name in NAMED.items())
        extra.envoy("envoy-policy", authz, replace=[f"{ENVOY_PROTECTED}={routes}{ENVOY_PROTECTED}"])
        locations = "".join(nginx_location(prefix, name) for prefix, name in NAMED.items())
        port = free_ports(1)[0]
        extra.nginx("nginx-policy", "nginx/nginx.conf", {
            8081: port, 9002: authz.ports["http"], 3000: stack.ports["better_auth"], 8000: stack.ports["todo"],
        }, listen={"nginx-policy": port}, replace=[f"{NGINX_REPORTS}={locations}{NGINX_REPORTS}"])
        yield Fronts(stack, authz, path, {"envoy": "envoy-policy", "nginx": "nginx-policy"})
    write(path, POLICY)


def write(path: Path, text: str) -> None:
    """Replace the file at once (the reloader never reads half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def debug(stack: Stack, endpoint: str, body: dict) -> dict:
    """A test-only endpoint of the stack's Better Auth (direct port; demo/better-auth/server.mjs)."""
    resp = raw_request(stack.ports["better_auth"], "POST", f"/__debug/{endpoint}",
                       [("Content-Type", "application/json")], json.dumps(body).encode())
    assert resp.status == 200, resp
    return resp.json()


def error_code(resp: Response) -> str | None:
    if resp.from_backend or not (resp.header("content-type") or "").startswith("application/json"):
        return None
    return resp.json().get("error_code")


def assert_allowed(resp: Response) -> None:
    """better-authz allowed it: the back end answered (its own 200 or 404)."""
    assert resp.from_backend, resp


def assert_denied(resp: Response, status: int, code: str) -> None:
    assert (resp.status, error_code(resp), resp.from_backend) == (status, code, False), resp


@pytest.fixture(scope="module")
def users(stack: Stack) -> dict[str, User]:
    """user (plain), admin (role admin), owner / org_admin / member of `org`, outsider (owns `other`)."""
    made = {name: stack.sign_up("envoy", name=f"Policy {name}")
            for name in ("user", "admin", "owner", "org_admin", "member", "outsider")}
    debug(stack, "role", {"userId": made["admin"].id, "role": ["user", "admin"]})
    return made


@pytest.fixture(scope="module")
def orgs(stack: Stack, users) -> dict[str, str]:
    org = debug(stack, "organization", {"userId": users["owner"].id, "members": [
        {"userId": users["org_admin"].id, "role": "admin"}, {"userId": users["member"].id, "role": "member"}]})
    other = debug(stack, "organization", {"userId": users["outsider"].id})
    return {"org": org["id"], "other": other["id"]}


# ------------------------------------------------------------------------------------------ roles

@pytest.mark.parametrize("proxy", PROXIES)
def test_admin_role(fronts, users, proxy):
    before = fronts.authz.metric("better_authz_route_decisions_total", route="admin", decision="deny")
    assert_denied(fronts.ask(proxy, "GET", "/admin/stats", users["user"].cookie), 403, "ROLE_REQUIRED")
    assert_denied(fronts.ask(proxy, "GET", "/ADMIN/stats", users["user"].cookie), 403, "ROLE_REQUIRED")
    assert_denied(fronts.ask(proxy, "GET", "/admin/stats"), 401, "SESSION_REQUIRED")
    resp = fronts.ask(proxy, "GET", "/admin/stats", users["admin"].cookie)
    assert resp.status == 200 and resp.json()["user"]["id"] == users["admin"].id, resp
    after = fronts.authz.metric("better_authz_route_decisions_total", route="admin", decision="deny")
    assert after - before == 3


# ------------------------------------------------------------------------------------------ organizations

@pytest.mark.parametrize("proxy", PROXIES)
def test_organization_roles(fronts, users, orgs, proxy):
    for name in ("owner", "org_admin"):
        resp = fronts.ask(proxy, "GET", f"/orgs/{orgs['org']}/tasks", users[name].cookie)
        assert resp.status == 200 and resp.json()["user"]["id"] == users[name].id, (name, resp)
    for name, detail in (("member", "org_role_missing"), ("outsider", "not_org_member"), ("user", "not_org_member")):
        before = fronts.detail_count(detail)
        assert_denied(fronts.ask(proxy, "GET", f"/orgs/{orgs['org']}/tasks", users[name].cookie), 403, "ORG_FORBIDDEN")
        assert fronts.detail_count(detail) == before + 1, (name, detail)
    assert_denied(fronts.ask(proxy, "GET", f"/orgs/{orgs['org']}/tasks"), 401, "SESSION_REQUIRED")


@pytest.mark.parametrize("proxy", PROXIES)
def test_organization_roles_with_every_credential(fronts, stack, users, orgs, proxy):
    """The membership is asked with the caller's own credential: a bearer token and an API key too."""
    for name, allowed in (("owner", True), ("member", False)):
        user = users[name]
        signed_in = stack.sign_in("envoy", user)
        assert signed_in.status == 200 and signed_in.header("set-auth-token"), signed_in
        key = debug(stack, "api-key", {"userId": user.id})["key"]
        for line in (f"Authorization: Bearer {signed_in.header('set-auth-token')}", f"x-api-key: {key}"):
            resp = fronts.ask(proxy, "GET", f"/orgs/{orgs['org']}/tasks", lines=[line])
            if allowed:
                assert resp.status == 200 and resp.json()["user"]["id"] == user.id, (line[:14], resp)
            else:
                assert_denied(resp, 403, "ORG_FORBIDDEN")


@pytest.mark.parametrize("proxy", PROXIES)
def test_organization_segment_cannot_be_abused(fronts, users, orgs, proxy):
    """The outsider owns `other`, not `org`: whatever the spelling, `org` stays closed to them. A user id in the
    organization's place names no organization (Better Auth is asked, and says no)."""
    outsider, mine, theirs = users["outsider"], orgs["other"], orgs["org"]
    assert_allowed(fronts.ask(proxy, "GET", f"/orgs/{mine}/tasks", outsider.cookie))
    for user in (outsider, users["owner"]):
        assert_denied(fronts.ask(proxy, "GET", f"/orgs/{user.id}/tasks", user.cookie), 403, "ORG_FORBIDDEN")
    tricks = [f"/orgs/{theirs};{mine}/tasks", f"/orgs/{mine};{theirs}/tasks", f"/orgs/{theirs};x={mine}/tasks",
              f"/orgs/{mine}%2F..%2F{theirs}/tasks", f"/orgs/{mine}%2f{theirs}/tasks",
              f"/orgs/{mine};/../{theirs}/tasks", f"/orgs/{mine}/..;/{theirs}/tasks", f"/orgs/{mine}%3B/{theirs}",
              f"/ORGS/{theirs}/tasks", f"/orgs//{theirs}/tasks", f"/orgs/{quote(theirs, safe='')}%20/tasks"]
    for target in tricks:
        resp = fronts.ask(proxy, "GET", target, outsider.cookie)
        assert resp.status in (400, 403) and not resp.from_backend, (target, resp)


# ------------------------------------------------------------------------------------------ email, sign-in pages

@pytest.mark.parametrize("proxy", PROXIES)
def test_unverified_email_and_sign_in_redirects(fronts, stack, proxy):
    user = stack.sign_up("envoy")
    # An API call and a browser alike: 403 (a 403 never redirects: signing in again would not verify the email).
    for accept in (None, "application/json", BROWSER):
        assert_denied(fronts.ask(proxy, "GET", "/account/profile", user.cookie, accept), 403, "EMAIL_UNVERIFIED")
    # A browser without a session: 302 to the sign-in page, the callback on app_origin whatever Host and
    # X-Forwarded-Host say; the query is kept.
    expected = f"{LOGIN_URL}&callbackURL={quote(APP_ORIGIN + '/account/profile?tab=1', safe='')}"
    hostile = ["X-Forwarded-Host: evil.example", "X-Forwarded-Proto: https", "X-Original-URI: /elsewhere"]
    for method in ("GET", "HEAD"):
        for cookie in (None, "better-auth.session_token=forged.c2lnbmF0dXJl"):
            resp = fronts.ask(proxy, method, "/account/profile?tab=1", cookie, BROWSER, hostile, host="evil.example")
            assert resp.status == 302 and not resp.from_backend, resp
            assert resp.header_values("location") == [expected], resp
            assert resp.header("location").split("callbackURL=", 1)[1].startswith(quote(APP_ORIGIN + "/", safe=""))
    # API calls and non-navigations keep the 401.
    assert_denied(fronts.ask(proxy, "GET", "/account/profile", None, "application/json"), 401, "SESSION_REQUIRED")
    assert_denied(fronts.ask(proxy, "POST", "/account/profile", None, BROWSER, ["Content-Length: 0"]), 401,
                  "SESSION_REQUIRED")
    debug(stack, "verify-email", {"userId": user.id})
    # `revalidate`: asked past Better Auth's cookie cache; a route without it is not.
    with stack.better_auth_lookups() as lookups:
        assert_allowed(fronts.ask(proxy, "GET", "/account/profile", user.cookie, BROWSER))
        assert_allowed(fronts.ask(proxy, "GET", f"/api/{user.id}/tasks", user.cookie))
    assert [("disableCookieCache=true" in r["path"]) for r in lookups] == [True, False], lookups


@pytest.mark.parametrize("proxy", PROXIES)
def test_impersonated_session_refused_where_not_impersonated(fronts, stack, users, proxy):
    target = stack.sign_up("envoy")
    debug(stack, "verify-email", {"userId": target.id})
    resp = stack.request("envoy", "POST", "/api/auth/admin/impersonate-user",
                         [("Content-Type", "application/json"), ("Origin", stack.origin("envoy")),
                          ("Cookie", users["admin"].cookie)], json.dumps({"userId": target.id}).encode())
    assert resp.status == 200, resp
    impersonated = session_cookie_last(resp)
    assert impersonated and impersonated != target.cookie, resp
    assert_denied(fronts.ask(proxy, "GET", "/account/", impersonated), 403, "IMPERSONATION_FORBIDDEN")
    # The same session where the route does not care, and the user's own session on the account page.
    own = fronts.ask(proxy, "GET", f"/api/{target.id}/tasks", impersonated)
    assert own.status == 200 and own.json()["user"]["id"] == target.id, own
    assert_allowed(fronts.ask(proxy, "GET", "/account/", target.cookie))


def session_cookie_last(resp: Response) -> str | None:
    """The session cookie an answer sets last: impersonation first clears the admin's, then sets the new one."""
    values = [v.split(";", 1)[0] for v in resp.header_values("set-cookie")]
    return next((v for v in reversed(values) if v.startswith("better-auth.session_token=")
                 and v != "better-auth.session_token="), None)


def test_sign_in_too_old(fronts, stack):
    """`max_age: 2s`: allowed right after sign-up, then 401 SESSION_TOO_OLD (302 for a browser) through both."""
    user = stack.sign_up("envoy")
    signed_up = time.monotonic()
    for proxy in PROXIES:
        assert_allowed(fronts.ask(proxy, "GET", "/recent/x", user.cookie))
    time.sleep(max(0.0, signed_up + 2.3 - time.monotonic()))
    for proxy in PROXIES:
        assert_denied(fronts.ask(proxy, "GET", "/recent/x", user.cookie), 401, "SESSION_TOO_OLD")
        resp = fronts.ask(proxy, "GET", "/recent/x", user.cookie, BROWSER)
        assert resp.status == 302 and resp.header("location") == (
            f"{LOGIN_URL}&callbackURL={quote(APP_ORIGIN + '/recent/x', safe='')}"), resp
        # Not a route with max_age: the same session is fine.
        assert fronts.ask(proxy, "GET", f"/api/{user.id}/tasks", user.cookie).status == 200


# ------------------------------------------------------------------------------------------ methods and short paths

@pytest.mark.parametrize("proxy", PROXIES)
def test_methods_not_listed_are_refused(fronts, users, proxy):
    user = users["user"]
    for method in ("DELETE", "PUT", "PATCH"):
        before = fronts.detail_count("method_not_routed")
        assert_denied(fronts.ask(proxy, method, f"/api/{user.id}/tasks", user.cookie), 403, "NO_ROUTE")
        assert fronts.detail_count("method_not_routed") == before + 1, method
    head = fronts.ask(proxy, "HEAD", f"/api/{user.id}/tasks", user.cookie)
    assert head.status == 200 and head.from_backend, head          # HEAD follows GET
    for target in ("/orgs", "/orgs/"):
        assert_denied(fronts.ask(proxy, "GET", target, user.cookie), 403, "NO_ROUTE")


@pytest.mark.parametrize("proxy", PROXIES)
def test_hosts(fronts, users, proxy):
    """`hosts: [internal.example]` as each proxy names the host (Envoy the :authority, nginx $host): any case,
    a port, a trailing dot; another host on the same path is 403 NO_ROUTE, never the default."""
    user, admin = users["user"], users["admin"]
    for host in ("internal.example", "INTERNAL.Example:8443", "internal.example."):
        assert_denied(fronts.ask(proxy, "GET", "/internal/x", user.cookie, host=host), 403, "ROLE_REQUIRED")
        assert_allowed(fronts.ask(proxy, "GET", "/internal/x", admin.cookie, host=host))
    for host in ("app.example", "internal.example.evil", "evil-internal.example"):
        assert_denied(fronts.ask(proxy, "GET", "/internal/x", admin.cookie, host=host), 403, "NO_ROUTE")


# ------------------------------------------------------------------------------------------ routes named by the proxy

@pytest.mark.parametrize("proxy", PROXIES)
def test_named_route_adds_requirements(fronts, users, proxy):
    """Envoy's context_extensions and nginx's $authz_route: /reports/ (no path route: any session) names
    `admin`, whose role is then required; naming the anonymous `open` grants nothing; an unknown name denies."""
    user, admin = users["user"], users["admin"]
    assert_denied(fronts.ask(proxy, "GET", "/reports/q3", user.cookie), 403, "ROLE_REQUIRED")
    for spelling in ("/REPORTS/q3", "/reports;x=1/q3", "/Reports;/q3", "/reports", "/reports?x=/admin/"):
        assert_denied(fronts.ask(proxy, "GET", spelling, user.cookie), 403, "ROLE_REQUIRED")
    assert_denied(fronts.ask(proxy, "GET", "/reports/q3"), 401, "SESSION_REQUIRED")
    assert fronts.ask(proxy, "GET", "/reports/q3", admin.cookie).status == 200
    assert_denied(fronts.ask(proxy, "GET", "/named-open/x"), 401, "SESSION_REQUIRED")
    assert_allowed(fronts.ask(proxy, "GET", "/named-open/x", user.cookie))
    before = fronts.detail_count("unknown_route")
    assert_denied(fronts.ask(proxy, "GET", "/named-unknown/x", user.cookie), 403, "NO_ROUTE")
    assert fronts.detail_count("unknown_route") == before + 1


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_cannot_name_a_route(fronts, users, proxy):
    """X-Authz-Route from the client never reaches better-authz: it neither opens, adds nor breaks anything."""
    user = users["user"]
    for names in (["open"], ["auth"], ["open", "open"]):
        lines = [f"X-Authz-Route: {n}" for n in names]
        assert_denied(fronts.ask(proxy, "GET", "/admin/stats", user.cookie, lines=lines), 403, "ROLE_REQUIRED")
        assert_denied(fronts.ask(proxy, "GET", f"/api/{user.id}/tasks", lines=lines), 401, "SESSION_REQUIRED")
    for names in (["admin"], ["nope"], ["admin", "nope"]):
        lines = [f"X-Authz-Route: {n}" for n in names]
        assert fronts.ask(proxy, "GET", f"/api/{user.id}/tasks", user.cookie, lines=lines).status == 200, names
    # On a location that names a route, the client's copy does not replace it.
    lines = ["X-Authz-Route: open"]
    assert_denied(fronts.ask(proxy, "GET", "/reports/q3", user.cookie, lines=lines), 403, "ROLE_REQUIRED")


# ------------------------------------------------------------------------------------------ the file

def test_reload_while_serving(fronts, users):
    """A good edit serves within ~3 s without failing a request; a broken one keeps the last good policy and is
    counted as an error."""
    user = users["user"]
    stop, statuses = threading.Event(), []

    def steady(proxy: str) -> None:
        while not stop.is_set():
            resp = fronts.ask(proxy, "GET", f"/api/{user.id}/tasks", user.cookie)
            statuses.append((proxy, resp.status))

    def metric(name: str, **labels) -> float:
        return fronts.authz.metric(name, **labels)

    def wait_for(what: str, check) -> None:
        deadline = time.monotonic() + 3.5
        while not check():
            assert time.monotonic() < deadline, f"not within 3.5 s: {what}"
            time.sleep(0.1)

    threads = [threading.Thread(target=steady, args=(proxy,)) for proxy in PROXIES]
    for t in threads:
        t.start()
    try:
        for proxy in PROXIES:
            assert_allowed(fronts.ask(proxy, "GET", "/frozen/x", user.cookie))
        ok, errors = metric("better_authz_policy_reloads_total", result="ok"), \
            metric("better_authz_policy_reloads_total", result="error")
        write(fronts.file, POLICY + FROZEN)
        wait_for("the new route", lambda: all(fronts.ask(p, "GET", "/frozen/x", user.cookie).status == 403
                                              for p in PROXIES))
        assert metric("better_authz_policy_reloads_total", result="ok") == ok + 1
        assert metric("better_authz_policy_routes") == ROUTES + 1
        for proxy in PROXIES:
            assert_denied(fronts.ask(proxy, "GET", "/frozen/x", user.cookie), 403, "ROLE_REQUIRED")

        write(fronts.file, POLICY + BROKEN)
        wait_for("the error counted", lambda: metric("better_authz_policy_reloads_total", result="error") == errors + 1)
        time.sleep(0.3)
        for proxy in PROXIES:
            assert_denied(fronts.ask(proxy, "GET", "/frozen/x", user.cookie), 403, "ROLE_REQUIRED")
        assert metric("better_authz_policy_routes") == ROUTES + 1
        log = fronts.authz.proc.log_path.read_text(errors="replace")
        assert "policy problem" in log and "the last good policy stays" in log, fronts.authz.proc.tail()

        write(fronts.file, POLICY)
        wait_for("the original policy", lambda: all(is_allowed(fronts.ask(p, "GET", "/frozen/x", user.cookie))
                                                    for p in PROXIES))
        assert metric("better_authz_policy_reloads_total", result="ok") == ok + 2
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    failed = [s for s in statuses if s[1] != 200]
    assert len(statuses) > 20 and not failed, (len(statuses), failed[:10])


def is_allowed(resp: Response) -> bool:
    return resp.from_backend


def test_bad_policy_at_start_up_exits_2(stack, tmp_path):
    binary = stack.bins["authz"]
    grpc, http, admin = free_ports(3)
    env = authz_env(stack.ports["better_auth"], grpc, http, admin)
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY + BROKEN)
    line = POLICY.count("\n") + 1
    run = subprocess.run([binary], env={**os.environ, **with_extra(env, {"AUTHZ_POLICY_FILE": str(bad)})},
                         capture_output=True, text=True, timeout=20)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert f'line {line}: route "Broken"' in out and "[a-z0-9-]+" in out and "match.path" in out, out
    # With the shorthand variables too: refused, naming both.
    run = subprocess.run([binary], env={**os.environ, **env, "AUTHZ_POLICY_FILE": str(ROOT / "demo" / "policy.yaml")},
                         capture_output=True, text=True, timeout=20)
    out = run.stdout + run.stderr
    assert run.returncode == 2 and "AUTHZ_POLICY_FILE" in out and "AUTHZ_PUBLIC_PATHS" in out, out


def test_policy_check(stack, tmp_path):
    binary = stack.bins["authz"]
    run = subprocess.run([binary, "policy", "check", str(ROOT / "demo" / "policy.yaml")], capture_output=True,
                         text=True, timeout=20)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("auth", "admin", "org", "own", "account"):
        assert f" {name} " in run.stdout, run.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY + BROKEN)
    run = subprocess.run([binary, "policy", "check", str(bad)], capture_output=True, text=True, timeout=20)
    assert run.returncode == 2 and f'line {POLICY.count(chr(10)) + 1}: route "Broken"' in run.stderr, run
