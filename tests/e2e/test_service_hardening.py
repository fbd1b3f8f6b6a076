"""The service's own hardening, end to end: answers never cacheable, the opt-in cache bounded, cookies split the
way Better Auth splits them, listeners that can be switched off.

- Every /auth answer, allow or deny, any status, carries `Cache-Control: no-store`, so no shared cache between
  the proxy and better-authz (ingress-nginx auth-cache-key, nginx proxy_cache) can replay one user's decision
  or identity to another.
- The cache (AUTHZ_CACHE_TTL_MS > 0) is keyed on the session cookies only (session_token, session_data), not on
  other `better-auth.*` cookies a client can vary at will, and identity header values over 1 KiB are dropped:
  before this change a client could fill the cache with one entry per junk cookie, each holding a copy of
  a 60 KB user name.
- Cookies are split on `;` only, as Better Auth's parser does: `theme=x,better-auth.session_token=<valid>` is
  one cookie named `theme` to Better Auth, so it must not be a session to better-authz either.
- AUTHZ_HTTP_ADDR=off / AUTHZ_GRPC_ADDR=off: a deployment that uses one proxy does not expose the other port.
"""

from __future__ import annotations

import http.client
import socket
import time
import uuid

import pytest

from adversary import (FRONTS, assert_allowed, assert_auth_deny, assert_denied, assert_no_store, cookie_line,
                       send)
from conftest import (PASSWORD, ExtraProcs, Response, Stack, User, _source_ips, free_ports, listening_ports,
                      process_rss_kib, raw_request, session_cookie)


@pytest.fixture(scope="module")
def alice(stack: Stack) -> User:
    return stack.sign_up("envoy", name="Alice Hardened")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> User:
    return stack.sign_up("nginx", name="Bob Hardened")


def auth(port: int, uri: str, lines: list[tuple[str, str]] = (), method: str = "GET") -> Response:
    """/auth asked the way the shipped nginx asks."""
    return raw_request(port, "GET", "/auth", [("X-Original-URI", uri), ("X-Original-Method", method),
                                              ("X-Forwarded-For", "127.0.0.1"), *lines])


# ================================================================ 1. Cache-Control: no-store on every answer

def test_every_auth_answer_is_no_store(stack, alice, bob):
    """Allows (session, public path, preflight) and every deny status better-authz produces: 400, 401 (both
    codes), 403, 431, 500, 503, each with `Cache-Control: no-store` and, for denies, the JSON body and
    x-authz-error-code."""
    port = stack.ports["authz_http"]
    session = [("Cookie", alice.cookie)]
    preflight = [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "PUT")]
    allows = {
        "SESSION_VALID": auth(port, f"/api/{alice.id}/tasks", session),
        "PUBLIC_PATH": auth(port, "/api/auth/ok"),
        "PREFLIGHT": auth(port, f"/api/{alice.id}/tasks", preflight, method="OPTIONS"),
    }
    for reason, resp in allows.items():
        assert resp.status == 200, (reason, resp)
        assert_no_store(resp)
    denies = {
        "BAD_REQUEST": (400, raw_request(port, "GET", "/auth", session)),             # no forwarded URI
        "SESSION_REQUIRED": (401, auth(port, f"/api/{alice.id}/tasks")),
        "SESSION_INVALID": (401, auth(port, f"/api/{alice.id}/tasks",
                                      [("Cookie", "better-auth.session_token=forged.sig")])),
        "USER_MISMATCH": (403, auth(port, f"/api/{bob.id}/tasks", session)),
        "HEADERS_TOO_LARGE": (431, auth(port, f"/api/{alice.id}/tasks",
                                        [("Cookie", f"better-auth.pad{i}=" + "P" * 6000) for i in range(3)])),
    }
    with ExtraProcs(stack) as extra:
        # Better Auth unreachable (nothing listens there): 503. Something that is not Better Auth: 500.
        dead = extra.authz("better-authz-dead-upstream",
                           {"BETTER_AUTH_URL": f"http://127.0.0.1:{free_ports(1)[0]}"}, ready="/healthz")
        wrong = extra.authz("better-authz-wrong-upstream",
                            {"BETTER_AUTH_URL": f"http://127.0.0.1:{stack.ports['todo_admin']}"}, ready="/healthz")
        denies["AUTH_UNAVAILABLE"] = (503, auth(dead.ports["http"], f"/api/{alice.id}/tasks", session))
        denies["AUTH_ERROR"] = (500, auth(wrong.ports["http"], f"/api/{alice.id}/tasks", session))
    for reason, (status, resp) in denies.items():
        assert resp.status == status, (reason, resp)
        assert resp.json()["error_code"] == reason, (reason, resp)
        assert_auth_deny(resp)


# ================================================================ 2. the cache: keyed on the session, bounded

BIG_NAME_BYTES = 60_000
FLOOD_CHECKS = 3000
FLOOD_SECONDS = 90


def sign_up_direct(stack: Stack, name: str) -> tuple[int, User | None]:
    """Sign up straight at Better Auth (its own origin is trusted): (status, user or None)."""
    email = f"big-{uuid.uuid4().hex[:10]}@example.com"
    ip = next(_source_ips)
    body = ('{"name":"%s","email":"%s","password":"%s"}' % (name, email, PASSWORD)).encode()
    origin = f"http://127.0.0.1:{stack.ports['better_auth']}"
    resp = raw_request(stack.ports["better_auth"], "POST", "/api/auth/sign-up/email",
                       [("Content-Type", "application/json"), ("Origin", origin)], body, source_ip=ip)
    cookie = session_cookie(resp) if resp.status == 200 else None
    if not cookie:
        return resp.status, None
    return resp.status, User(id=resp.json()["user"]["id"], email=email, name=name, cookie=cookie, source_ip=ip)


@pytest.fixture(scope="module")
def cached(stack: Stack):
    """A better-authz with the cache on, and the shipped nginx config in front of it."""
    with ExtraProcs(stack) as extra:
        # A TTL far longer than the flood below, so no entry expires during it.
        authz = extra.authz("better-authz-cache", {"AUTHZ_CACHE_TTL_MS": "600000"})
        port = free_ports(1)[0]
        extra.nginx("nginx-cache", "nginx/nginx.conf", {
            8081: port, 9002: authz.ports["http"], 3000: stack.ports["better_auth"], 8000: stack.ports["todo"],
        }, listen={"nginx-cache": port})
        yield authz


@pytest.fixture(scope="module")
def big_user(stack: Stack) -> User:
    """A user whose name is 60 KB (Better Auth has no length limit on it; its get-session answer stays under
    better-authz's 64 KiB limit)."""
    status, user = sign_up_direct(stack, "N" * BIG_NAME_BYTES)
    assert user is not None, f"Better Auth refused a {BIG_NAME_BYTES}-byte name: {status}"
    return user


def test_identity_values_over_1kib_are_dropped_not_fatal(stack, cached, big_user):
    """A 60 KB name: the identity header carrying it is removed (the back end gets x-user-id and
    x-user-email, no x-user-name), the request is not failed; a short name still arrives."""
    via_nginx = send(stack, "nginx-cache", f"/api/{big_user.id}/tasks", [cookie_line(big_user.cookie)])
    assert via_nginx.resp.from_backend and via_nginx.status == 200, via_nginx
    headers = [(k.lower(), v) for k, v in via_nginx.backend[0]["headers"]]
    assert [v for k, v in headers if k == "x-user-id"] == [big_user.id], headers[:20]
    assert [v for k, v in headers if k == "x-user-email"] == [big_user.email], headers[:20]
    assert not [k for k, _ in headers if k == "x-user-name"], [(k, len(v)) for k, v in headers]

    direct = auth(cached.ports["http"], f"/api/{big_user.id}/tasks", [("Cookie", big_user.cookie)])
    assert direct.status == 200, direct
    assert direct.header_values("x-user-id") == [big_user.id], direct
    assert direct.header_values("x-user-name") == [], direct
    assert_no_store(direct)

    status, normal = sign_up_direct(stack, "M" * 1000)
    assert normal is not None, status
    resp = auth(cached.ports["http"], f"/api/{normal.id}/tasks", [("Cookie", normal.cookie)])
    assert resp.status == 200 and resp.header_values("x-user-name") == [normal.name], resp


def test_cache_is_keyed_on_the_session_and_bounded(stack, cached, big_user):
    """Thousands of checks with the same valid session plus a distinct junk `better-auth.junkN` cookie each: one
    cache entry, nearly every check a hit (no Better Auth call), and the process stays within 20 MiB of where
    it started. Before this change each junk cookie made a new entry holding the 60 KB name."""
    port = cached.ports["http"]
    pid = cached.proc.pid
    path = f"/api/{big_user.id}/tasks"

    def check(conn: http.client.HTTPConnection, i: int) -> int:
        conn.request("GET", "/auth", headers={
            "X-Original-URI": path, "X-Original-Method": "GET", "X-Forwarded-For": "127.0.0.1",
            "Cookie": f"{big_user.cookie}; better-auth.junk{i}={uuid.uuid4().hex}{uuid.uuid4().hex}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(20):  # warm up: allocator, connection pool, first (missing) lookup
            assert check(conn, i) == 200
        baseline_kib = process_rss_kib(pid)
        entries_before = cached.metric("better_authz_cache_entries")   # this session, and any earlier test's
        hits_before = cached.metric("better_authz_cache_requests_total", result="hit")
        misses_before = cached.metric("better_authz_cache_requests_total", result="miss")
        before = len(stack.better_auth_requests())
        deadline = time.monotonic() + FLOOD_SECONDS
        done = 0
        while done < FLOOD_CHECKS and time.monotonic() < deadline:
            status = check(conn, 1000 + done)
            assert status == 200, (done, status)
            done += 1
    finally:
        conn.close()
    assert done == FLOOD_CHECKS, f"only {done} checks in {FLOOD_SECONDS}s"
    grown_kib = process_rss_kib(pid) - baseline_kib
    entries = cached.metric("better_authz_cache_entries")
    hits = cached.metric("better_authz_cache_requests_total", result="hit") - hits_before
    misses = cached.metric("better_authz_cache_requests_total", result="miss") - misses_before
    lookups = [r for r in stack.better_auth_requests()[before:] if r["path"].startswith("/api/auth/get-session")]
    print(f"cache flood: {done} checks, entries {entries_before} -> {entries}, hits {hits}, misses {misses}, "
          f"get-session calls {len(lookups)}, RSS {baseline_kib} KiB + {grown_kib} KiB")
    assert 1 <= entries_before <= 2 and entries == entries_before, (entries_before, entries)
    assert misses == 0 and hits == FLOOD_CHECKS, (hits, misses)
    assert lookups == [], f"{len(lookups)} get-session calls for one session"
    assert grown_kib < 20 * 1024, f"RSS grew {grown_kib} KiB over {FLOOD_CHECKS} checks"


# ================================================================ 3. cookies are split on `;` only

@pytest.mark.parametrize("front", FRONTS)
def test_comma_does_not_separate_cookies(stack, front, alice):
    """`theme=x,better-auth.session_token=<valid>` is one cookie named `theme` to Better Auth: no session
    (401 SESSION_REQUIRED, Better Auth not called, the back end never reached). With `; ` it is a session."""
    target = f"/api/{alice.id}/tasks"
    joined = send(stack, front, target, [cookie_line("theme=x," + alice.cookie)])
    assert_denied(joined, 401, {"SESSION_REQUIRED"}, lookups=0)
    assert joined.error_code() in (None, "SESSION_REQUIRED"), joined
    if front == "envoy":
        assert joined.error_code() == "SESSION_REQUIRED", joined
    trailing = send(stack, front, target, [cookie_line(alice.cookie + ",theme=x")])
    assert_denied(trailing, 401, {"SESSION_INVALID", "SESSION_REQUIRED"})
    split = send(stack, front, target, [cookie_line("theme=x; " + alice.cookie)])
    assert_allowed(split, alice)


# ================================================================ 4. listeners that are off

def grpc_health_status(port: int, timeout: float = 5) -> bytes:
    """grpc.health.v1.Health/Check for service "" over h2c, by hand (no gRPC library in the venv): the
    response message bytes (b"\\x08\\x01" = SERVING)."""
    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    def literal(name: bytes, value: bytes) -> bytes:   # HPACK literal without indexing, new name, no Huffman
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    headers = b"".join(literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/grpc.health.v1.Health/Check"),
        (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 4, 1, headers)
                     + frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))
        buf, data = b"", b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                size = int.from_bytes(buf[:3], "big")
                kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + size], buf[9 + size:]
                if kind == 4 and not flags & 1:
                    sock.sendall(frame(4, 1, 0, b""))                  # SETTINGS ack
                elif kind == 0 and stream == 1:
                    data += payload
                if stream == 1 and kind in (0, 1) and flags & 1 or kind in (3, 7):   # END_STREAM, RST, GOAWAY
                    return data[5:]
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        return data[5:]
    finally:
        sock.close()


def test_http_listener_off(stack):
    """AUTHZ_HTTP_ADDR=off: gRPC (health SERVING) and the admin port (/readyz) only; no HTTP /auth port."""
    with ExtraProcs(stack) as extra:
        authz = extra.authz("better-authz-no-http", {"AUTHZ_HTTP_ADDR": "off"})
        assert "http" not in authz.ports
        assert listening_ports(authz.proc.pid) == {authz.ports["grpc"], authz.ports["admin"]}
        assert grpc_health_status(authz.ports["grpc"]) == b"\x08\x01"


def test_grpc_listener_off(stack, alice):
    """AUTHZ_GRPC_ADDR=off: HTTP /auth and the admin port only; no gRPC port."""
    with ExtraProcs(stack) as extra:
        authz = extra.authz("better-authz-no-grpc", {"AUTHZ_GRPC_ADDR": "off"})
        assert listening_ports(authz.proc.pid) == {authz.ports["http"], authz.ports["admin"]}
        resp = auth(authz.ports["http"], f"/api/{alice.id}/tasks", [("Cookie", alice.cookie)])
        assert resp.status == 200 and resp.header_values("x-user-id") == [alice.id], resp
