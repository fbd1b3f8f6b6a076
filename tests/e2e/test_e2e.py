"""End-to-end tests: every case runs through Envoy (ext_authz gRPC) and nginx (auth_request).

Order matters at the end of this module: the outage tests stop and restart Better Auth and better-authz,
and the accounting test last compares what the back end received with what the tests were allowed.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import SESSION_UPDATE_AGE, PROXIES, Response, Stack, session_cookie

IDENTITY = ("x-user-id", "x-user-email", "x-user-name")


def header_values(recorded: dict, name: str) -> list[str]:
    return [v for k, v in recorded["headers"] if k.lower() == name.lower()]


def assert_json_error(resp: Response, status: int, codes: set[str]) -> dict:
    assert resp.status == status, resp
    assert not resp.from_backend, resp
    ctype = resp.header("content-type") or ""
    assert ctype.startswith("application/json"), resp
    body = resp.json()
    assert body.get("error_code") in codes, resp
    assert isinstance(body.get("message"), str) and body["message"], resp
    return body


@pytest.fixture(scope="module")
def alice(stack: Stack):
    return stack.sign_up("envoy", name="Alice Example")


@pytest.fixture(scope="module")
def bob(stack: Stack):
    return stack.sign_up("nginx", name="Bob Example")


# ------------------------------------------------------------------------------------------ denials

@pytest.mark.parametrize("proxy", PROXIES)
def test_no_cookie_is_401_and_never_reaches_backend(stack, proxy, alice):
    with stack.backend_delta() as seen:
        resp = stack.tasks(proxy, alice.id)
        # Unrelated cookies are not a session either.
        resp2 = stack.tasks(proxy, alice.id, cookie="theme=dark; other-app.session_token=abc")
    assert_json_error(resp, 401, {"SESSION_REQUIRED"})
    assert_json_error(resp2, 401, {"SESSION_REQUIRED"})
    assert seen == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_forged_and_tampered_cookies_are_401(stack, proxy, alice):
    name, value = alice.cookie.split("=", 1)
    token, _, signature = value.partition(".")
    tampered_token = ("A" if token[0] != "A" else "B") + token[1:]
    cookies = [
        "better-auth.session_token=forged-token.forged-signature",
        f"{name}={tampered_token}.{signature}",        # someone else's token guess with Alice's signature
        f"{name}={token}.AAAA{signature[4:]}",          # right token, wrong signature
        f"{name}={token}",                              # unsigned token
    ]
    with stack.backend_delta() as seen:
        responses = [stack.tasks(proxy, alice.id, cookie=c) for c in cookies]
    for resp in responses:
        assert_json_error(resp, 401, {"SESSION_INVALID", "SESSION_REQUIRED"})
    if proxy == "envoy":  # the service's own code arrives as-is through Envoy
        assert responses[0].json()["error_code"] == "SESSION_INVALID", responses[0]
    assert seen == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_signed_out_session_is_401(stack, proxy):
    user = stack.sign_up(proxy)
    assert stack.tasks(proxy, user.id, cookie=user.cookie).status == 200
    out = stack.sign_out(proxy, user)
    assert out.status == 200, out
    with stack.backend_delta() as seen:
        resp = stack.tasks(proxy, user.id, cookie=user.cookie)
    assert_json_error(resp, 401, {"SESSION_INVALID"})
    assert seen == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_other_users_path_is_403_and_never_reaches_backend(stack, proxy, alice, bob):
    with stack.backend_delta() as seen:
        resp = stack.tasks(proxy, bob.id, cookie=alice.cookie)
        # Claiming to be Bob in a header changes nothing.
        spoofed = stack.tasks(proxy, bob.id, cookie=alice.cookie,
                              headers=[("X-User-Id", bob.id), ("X-User-Email", bob.email)])
        write = stack.tasks(proxy, bob.id, cookie=alice.cookie, method="POST",
                            body=json.dumps({"title": "not yours"}).encode())
    for r in (resp, spoofed, write):
        assert_json_error(r, 403, {"USER_MISMATCH"})
    assert seen == []
    # And Bob's list is untouched.
    assert stack.tasks(proxy, bob.id, cookie=bob.cookie).json()["tasks"] == []


# ------------------------------------------------------------------------------------------ allowed

@pytest.mark.parametrize("proxy", PROXIES)
def test_valid_session_reaches_backend_with_true_identity_only(stack, proxy, alice):
    spoofed = [
        ("X-User-Id", "attacker"), ("x-user-id", "attacker-2"),            # repeated, different case
        ("X-USER-EMAIL", "evil@example.com"), ("x-user-email", "evil2@example.com"),
        ("x-User-Name", "Mallory"),
        ("x_user_id", "underscore-attacker"),                               # CGI-style alias
    ]
    with stack.backend_delta() as seen:
        created = stack.tasks(proxy, alice.id, cookie=alice.cookie, headers=spoofed, method="POST",
                              body=json.dumps({"title": f"via {proxy}"}).encode())
        listed = stack.tasks(proxy, alice.id, cookie=alice.cookie, headers=spoofed)
    assert created.status == 201 and created.from_backend, created
    assert listed.status == 200 and listed.from_backend, listed
    assert f"via {proxy}" in [t["title"] for t in listed.json()["tasks"]]
    assert listed.json()["user"] == {"id": alice.id, "email": alice.email, "name": alice.name}

    assert [r["method"] for r in seen] == ["POST", "GET"]
    for recorded in seen:
        assert recorded["path"] == f"/api/{alice.id}/tasks"
        assert header_values(recorded, "x-user-id") == [alice.id], recorded
        assert header_values(recorded, "x-user-email") == [alice.email], recorded
        assert header_values(recorded, "x-user-name") == [alice.name], recorded
        assert not [k for k, _ in recorded["headers"] if "_" in k], recorded


@pytest.mark.parametrize("proxy", PROXIES)
def test_session_cookie_among_other_cookies_and_cookie_lines(stack, proxy, alice):
    """Browsers send one Cookie line; HTTP/1.1 clients may send several (Envoy joins them with ',',
    nginx with '; '). The session cookie is found either way, next to unrelated cookies."""
    one_line = stack.tasks(proxy, alice.id, cookie=f"theme=dark; {alice.cookie}; lang=en")
    two_lines = stack.tasks(proxy, alice.id, headers=[("Cookie", "theme=dark"), ("Cookie", alice.cookie)])
    assert one_line.status == 200 and one_line.from_backend, one_line
    assert two_lines.status == 200 and two_lines.from_backend, two_lines


@pytest.mark.parametrize("proxy", PROXIES)
def test_auth_routes_are_public_and_strip_client_identity(stack, proxy):
    spoof = [("X-User-Id", "attacker"), ("x-user-id", "attacker-2"), ("X-User-Email", "evil@example.com"),
             ("X-User-Name", "Mallory")]
    before = len(stack.better_auth_requests())
    with stack.backend_delta() as seen:
        user = stack.sign_up(proxy, extra_headers=spoof)               # asserts 200 + session cookie
        signed_in = stack.sign_in(proxy, user, extra_headers=spoof)
        session = stack.request(proxy, "GET", "/api/auth/get-session", [("Cookie", user.cookie), *spoof])
    assert signed_in.status == 200 and session_cookie(signed_in), signed_in
    assert session.status == 200, session
    assert session.json()["user"]["id"] == user.id
    assert seen == [], "Better Auth routes must not reach the todo back end"

    # Only proxied public calls happen in this window (no protected request, so better-authz made none).
    at_better_auth = [r for r in stack.better_auth_requests()[before:]
                      if r["path"].startswith(("/api/auth/sign-up", "/api/auth/sign-in", "/api/auth/get-session"))]
    paths = [r["path"].split("?")[0] for r in at_better_auth]
    assert "/api/auth/sign-up/email" in paths and "/api/auth/sign-in/email" in paths, paths
    for recorded in at_better_auth:
        for name in IDENTITY:
            assert header_values(recorded, name) == [], recorded


@pytest.mark.parametrize("proxy", PROXIES)
def test_cors_preflight_reaches_backend_without_session(stack, proxy, alice):
    origin = "https://app.example.com"
    with stack.backend_delta() as seen:
        resp = stack.request(proxy, "OPTIONS", f"/api/{alice.id}/tasks", [
            ("Origin", origin), ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
            ("X-User-Id", alice.id),  # a preflight never carries an identity
        ])
    assert resp.status == 204 and resp.from_backend, resp
    assert resp.header("access-control-allow-origin") == origin
    assert len(seen) == 1 and seen[0]["method"] == "OPTIONS", seen
    for name in IDENTITY:
        assert header_values(seen[0], name) == [], seen[0]


@pytest.mark.parametrize("proxy", PROXIES)
def test_plain_options_is_not_a_preflight(stack, proxy, alice):
    with stack.backend_delta() as seen:
        resp = stack.request(proxy, "OPTIONS", f"/api/{alice.id}/tasks")
    assert_json_error(resp, 401, {"SESSION_REQUIRED"})
    assert seen == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_refreshed_session_cookie_reaches_client(stack, proxy):
    user = stack.sign_up(proxy)
    time.sleep(SESSION_UPDATE_AGE + 0.7)   # past Better Auth's updateAge: the next get-session refreshes
    resp = stack.tasks(proxy, user.id, cookie=user.cookie)
    assert resp.status == 200 and resp.from_backend, resp
    refreshed = [c for c in resp.header_values("set-cookie") if c.startswith("better-auth.session_token=")]
    assert refreshed, f"no refreshed session cookie reached the client: {resp!r}"
    assert refreshed[0].split(";", 1)[0] == user.cookie, "the refresh keeps the token, it slides the expiry"
    assert "max-age=" in refreshed[0].lower() and "httponly" in refreshed[0].lower(), refreshed
    # Right after a refresh there is nothing to refresh.
    again = stack.tasks(proxy, user.id, cookie=user.cookie)
    assert again.status == 200
    assert not [c for c in again.header_values("set-cookie") if c.startswith("better-auth.session_token=")], again


@pytest.mark.parametrize("proxy", PROXIES)
def test_burst_is_not_rate_limited(stack, proxy, alice):
    """150 authorized requests in a few seconds from one client: all pass (Better Auth exempts get-session
    from its 100-per-10-s limiter in demo/better-auth/server.mjs; without that this turns into 503s)."""
    statuses = [stack.tasks(proxy, alice.id, cookie=alice.cookie).status for _ in range(150)]
    assert statuses == [200] * 150, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("template", [
    "/api/auth/../api/{uid}/tasks",
    "/api/auth/%2e%2e/api/{uid}/tasks",
    "/api/auth/..%2Fapi%2F{uid}%2Ftasks",
    "/api/auth/..%2f..%2fapi/{uid}/tasks",
    "//api/{uid}/tasks",
    "/api/auth/./../{uid}/tasks",
])
def test_path_tricks_do_not_skip_authorization(stack, proxy, template, alice):
    """A path that only *looks* like the public /api/auth/ prefix is never served without a session."""
    with stack.backend_delta() as seen:
        resp = stack.request(proxy, "GET", template.format(uid=alice.id))
    assert resp.status in (400, 401, 404), resp
    assert not resp.from_backend, resp
    assert seen == []


# ------------------------------------------------------------------------------------------ outages

def test_better_auth_outage_fails_closed_then_recovers(stack):
    users = {proxy: stack.sign_up(proxy) for proxy in PROXIES}
    others = {name: stack.procs[name].pid for name in ("todo", "authz", "envoy", "nginx")}

    stack.procs["better_auth"].stop()
    try:
        with stack.backend_delta() as seen:
            for proxy in PROXIES:
                resp = stack.tasks(proxy, users[proxy].id, cookie=users[proxy].cookie)
                assert_json_error(resp, 503, {"AUTH_UNAVAILABLE"})
        assert seen == []
    finally:
        stack.procs["better_auth"].start()
        stack.wait_ready("better_auth")

    # The memory adapter forgot every user: old sessions are invalid, new sign-ups work, and nothing but
    # Better Auth was restarted.
    for proxy in PROXIES:
        assert_json_error(stack.tasks(proxy, users[proxy].id, cookie=users[proxy].cookie), 401,
                          {"SESSION_INVALID"})
        user = stack.sign_up(proxy)
        resp = stack.tasks(proxy, user.id, cookie=user.cookie)
        assert resp.status == 200 and resp.from_backend, resp
    assert {name: stack.procs[name].pid for name in others} == others


def test_authz_outage_fails_closed_then_recovers(stack):
    users = {proxy: stack.sign_up(proxy) for proxy in PROXIES}
    stack.procs["authz"].stop()
    try:
        with stack.backend_delta() as seen:
            envoy = stack.tasks("envoy", users["envoy"].id, cookie=users["envoy"].cookie)
            nginx = stack.tasks("nginx", users["nginx"].id, cookie=users["nginx"].cookie)
        assert seen == []
        # Envoy: failure_mode_allow false + status_on_error 503 (its own empty body).
        assert envoy.status == 503 and not envoy.from_backend, envoy
        # nginx: the subrequest cannot connect (502), mapped to 503 AUTH_UNAVAILABLE by @authz_error.
        assert nginx.status >= 500 and not nginx.from_backend, nginx
        assert_json_error(nginx, 503, {"AUTH_UNAVAILABLE"})
        # Public routes do not depend on better-authz.
        assert stack.request("envoy", "GET", "/api/auth/ok").status == 200
        assert stack.request("nginx", "GET", "/api/auth/ok").status == 200
    finally:
        stack.procs["authz"].start()
        stack.wait_ready("authz")

    # Envoy and nginx reconnect on their own.
    for proxy in PROXIES:
        deadline = time.monotonic() + 15
        while True:
            resp = stack.tasks(proxy, users[proxy].id, cookie=users[proxy].cookie)
            if resp.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resp.status == 200 and resp.from_backend, resp


# ------------------------------------------------------------------------------------------ accounting

def test_backend_saw_exactly_the_allowed_requests(stack):
    """Across the whole run: the back end received one request per answer it gave, i.e. nothing denied
    ever reached it and nothing was duplicated."""
    received = stack.backend_requests()
    assert stack.proxied_count > 0
    assert len(received) == stack.allowed_count, (len(received), stack.allowed_count)
