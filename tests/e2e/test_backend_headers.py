"""What the back end receives besides x-user-id/-email/-name, end to end against the real Better Auth with its
jwt, admin, organization, bearer and API-key plugins.

The stack's better-authz runs with AUTHZ_HEADER_JWT=x-user-jwt and AUTHZ_HEADER_MAP=x-user-role=user.role,
x-org-id=session.activeOrganizationId,x-impersonated-by=session.impersonatedBy (scripts/launcher.py). Envoy applies
the Check's header edits; nginx/nginx.conf copies the four headers from the /auth answer (auth_request_set +
proxy_set_header, an empty value drops the header) and never to the client; both remove client copies on the
unchecked route to Better Auth. Cases run through Envoy and nginx (the back end's recorder shows what arrived),
some also against /auth directly ("direct": the answer nginx reads):

- the JWT (Better Auth's `set-auth-jwt`) reaches the back end for cookie and bearer sessions (a JWS whose `sub` is
  the user id; a 3 000-byte name makes it > 4 KiB, which nginx's default auth buffer would fail), never the
  client, also not on a deny; an API-key session gets none (Better Auth sends none for keys);
- the mapped headers arrive: the admin plugin's role (set with POST /__debug/role), the organization plugin's
  active organization (created with POST /__debug/organization, made active with the user's own session through
  POST /api/auth/organization/set-active), the impersonating admin (POST /api/auth/admin/impersonate-user);
  absent fields remove the header;
- a client's own x-user-jwt / x-user-role / x-org-id / x-impersonated-by is overwritten or removed on every
  allow: session, public path, CORS preflight, and never reaches Better Auth through the unchecked /api/auth route;
- the cache never serves a JWT past its `exp`: a second Better Auth whose jwt plugin issues 3-second tokens
  (JWT_EXPIRATION_TIME, demo/better-auth/server.mjs) behind a caching better-authz: a hit within the JWT's life
  carries the same JWT without asking, the first check after `exp` asks Better Auth again and carries a new one;
- AUTHZ_STRIP_CREDENTIALS=true (extra better-authz instances behind their own Envoy and nginx rendered from the
  shipped configs): on an allow with a session the back end gets no session cookie (other cookies kept), no
  bearer token, no API key; a public path keeps them (it may be Better Auth's own route); with
  AUTHZ_HEADER_JWT=authorization the bearer is replaced by `Bearer <jwt>`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

import pytest

from adversary import assert_allowed, assert_denied, jwt_claims, send
from conftest import (LOG_DIR, PASSWORD, PROXIES, ExtraProcs, Stack, User, _source_ips, free_ports, raw_request,
                      session_cookie)
from launcher import STACK_CREDENTIALS, STACK_HEADER_JWT, STACK_HEADER_MAP, STACK_SESSION_HEADERS

JWT = STACK_HEADER_JWT                                  # x-user-jwt
SESSION_HEADERS = STACK_SESSION_HEADERS                 # x-user-jwt, x-user-role, x-org-id, x-impersonated-by
TRANSPORTS = (*PROXIES, "direct")
# A client's own copies of every header better-authz sets from the session (the JWT one twice, in other case).
FORGED_JWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5Iiwicm9sZSI6ImFkbWluIn0."
FORGED = [f"X-User-Jwt: {FORGED_JWT}", "x-user-jwt: second-copy", "X-User-Role: superadmin",
          "X-Org-Id: org-of-mallory", "X-Impersonated-By: mallory"]
FORGED_VALUES = {FORGED_JWT, "second-copy", "superadmin", "org-of-mallory", "mallory"}
# Every JWT seen at a back end or in an /auth answer: none may appear in a log (test_no_jwt_in_any_log, last).
JWTS: set[str] = set()
# The 3-second tokens of the expiry test (the jwt plugin's expirationTime).
SHORT_JWT_SECONDS = 3


# ------------------------------------------------------------------------------------------ helpers

@dataclass
class Holder(User):
    """A user with a bearer token (sign-up's `set-auth-token`)."""
    token: str = ""


def sign_up(stack: Stack, proxy: str = "envoy", name: str | None = None) -> Holder:
    tag = uuid.uuid4().hex[:10]
    email, name, ip = f"hdr-{tag}@example.com", name or f"Hdr {tag}", next(_source_ips)
    resp = stack.request(proxy, "POST", "/api/auth/sign-up/email",
                         [("Content-Type", "application/json"), ("Origin", stack.origin(proxy))],
                         json.dumps({"name": name, "email": email, "password": PASSWORD}).encode(), source_ip=ip)
    assert resp.status == 200, resp
    assert resp.header("set-auth-token") and session_cookie(resp), resp
    return Holder(id=resp.json()["user"]["id"], email=email, name=name, cookie=session_cookie(resp), source_ip=ip,
                  token=resp.header("set-auth-token"))


def debug(stack: Stack, endpoint: str, body: dict) -> dict:
    """A test-only endpoint of the stack's Better Auth (direct port; demo/better-auth/server.mjs)."""
    resp = raw_request(stack.ports["better_auth"], "POST", f"/__debug/{endpoint}",
                       [("Content-Type", "application/json")], json.dumps(body).encode())
    assert resp.status == 200, resp
    return resp.json()


def credential(user: Holder, kind: str) -> str:
    return f"Cookie: {user.cookie}" if kind == "cookie" else f"Authorization: Bearer {user.token}"


def tasks(user: User) -> str:
    return f"/api/{user.id}/tasks"


def received(o) -> dict[str, list[str]]:
    """The headers of what reached the back end (proxies: its one recorded request) or of /auth's answer (direct),
    lower-case name -> values."""
    pairs = o.resp.headers if o.transport.startswith("direct") else o.backend[0]["headers"]
    got: dict[str, list[str]] = {}
    for name, value in pairs:
        got.setdefault(name.lower(), []).append(value)
    return got


def the_jwt(headers: dict[str, list[str]], user: User, name: str = JWT) -> dict:
    """Exactly one JWT in `name` (a compact JWS: three base64url parts), this user's; its claims."""
    values = headers.get(name, [])
    assert len(values) == 1, headers
    jwt = values[0].removeprefix("Bearer ") if name == "authorization" else values[0]
    assert jwt not in FORGED_VALUES and len(jwt.split(".")) == 3 and all(jwt.split(".")), jwt
    head = json.loads(base64.urlsafe_b64decode(jwt.split(".")[0] + "=" * (-len(jwt.split(".")[0]) % 4)))
    assert head["alg"] == "EdDSA", head                 # Better Auth's default key (Ed25519)
    claims = jwt_claims(jwt)
    assert claims["sub"] == user.id and claims["exp"] > time.time(), claims
    JWTS.add(jwt)
    return claims


def assert_no_session_headers(headers: dict[str, list[str]]) -> None:
    assert not set(headers) & set(SESSION_HEADERS), headers


def assert_nothing_for_the_client(o, *values: str) -> None:
    """The client's answer carries none of the session headers, no set-auth-jwt, and none of `values`."""
    names = {k.lower() for k, _ in o.resp.headers}
    assert not names & {*SESSION_HEADERS, "set-auth-jwt"}, o
    for value in values:
        assert not [k for k, v in o.resp.headers if value in v] and value.encode() not in o.resp.body, o


@pytest.fixture(scope="module")
def alice(stack: Stack) -> Holder:
    return sign_up(stack, "envoy", name="Alice Headers")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> Holder:
    return sign_up(stack, "nginx", name="Bob Headers")


# ================================================================ the JWT

@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("kind", ["cookie", "bearer"])
def test_jwt_reaches_backend_and_never_the_client(stack, alice, proxy, kind):
    o = send(stack, proxy, tasks(alice), [credential(alice, kind), *FORGED])
    assert_allowed(o, alice)
    got = received(o)
    claims = the_jwt(got, alice)
    # The jwt plugin's payload is the user (with the admin plugin's role), issued by Better Auth.
    assert claims["email"] == alice.email and claims["name"] == alice.name and claims["role"] == "user", claims
    assert claims["iss"] == f"http://127.0.0.1:{stack.ports['better_auth']}", claims
    # Mapped: the role; no active organization, no impersonation, so the client's copies are removed.
    assert got.get("x-user-role") == ["user"], got
    assert "x-org-id" not in got and "x-impersonated-by" not in got, got
    assert not FORGED_VALUES & {v for values in got.values() for v in values}, got
    assert_nothing_for_the_client(o, got[JWT][0])


@pytest.mark.parametrize("kind", ["cookie", "bearer"])
def test_direct_auth_answer_carries_the_jwt_and_mapped_headers(stack, alice, kind):
    """/auth answers what nginx copies onto the upstream request: the JWT and the role, nothing for absent fields
    (nginx then drops the client's copies)."""
    o = send(stack, "direct", tasks(alice), [credential(alice, kind), *FORGED])
    assert_allowed(o, alice)
    got = received(o)
    the_jwt(got, alice)
    assert got.get("x-user-role") == ["user"] and "x-org-id" not in got and "x-impersonated-by" not in got, got


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_denied_answers_carry_no_jwt(stack, alice, bob, transport):
    for target, lines, status in ((tasks(bob), [credential(alice, "cookie")], 403),
                                  (tasks(bob), [credential(alice, "bearer")], 403),
                                  (tasks(alice), ["Cookie: better-auth.session_token=forged.sig", *FORGED], 401)):
        o = send(stack, transport, target, lines)
        assert_denied(o, status)
        assert_nothing_for_the_client(o)


@pytest.mark.parametrize("proxy", PROXIES)
def test_large_jwt_reaches_backend(stack, proxy):
    """A 3 000-byte name: x-user-name is dropped (over 1 KiB) but the JWT, which carries the name, is about
    4.7 KiB and still arrives: nginx's auth location needs `proxy_buffer_size 16k` (with its 4k default the
    subrequest fails, "upstream sent too big header", and the client gets 503)."""
    user = sign_up(stack, proxy, name="J" * 3000)
    o = send(stack, proxy, tasks(user), [credential(user, "cookie")])
    assert o.status == 200 and o.resp.from_backend, o
    got = received(o)
    assert got["x-user-id"] == [user.id] and "x-user-name" not in got, {k: len(v[0]) for k, v in got.items()}
    assert len(got[JWT][0]) > 4096 and the_jwt(got, user)["name"] == user.name
    assert_nothing_for_the_client(o, got[JWT][0])


# ================================================================ client copies on allows without a session

@pytest.mark.parametrize("proxy", PROXIES)
def test_client_session_headers_never_reach_backend_on_a_preflight(stack, alice, proxy):
    o = send(stack, proxy, tasks(alice), ["Origin: https://app.example.com", "Access-Control-Request-Method: PUT",
                                          *FORGED], method="OPTIONS")
    assert o.status == 204 and o.resp.from_backend, o
    assert_allowed(o, None, 204)
    assert_no_session_headers(received(o))


@pytest.mark.parametrize("target,lines", [
    ("/api/auth/ok", []),
    ("/api/x/tasks", ["Origin: https://app.example.com", "Access-Control-Request-Method: PUT"]),
], ids=["public-path", "preflight"])
def test_direct_anonymous_allows_carry_no_session_headers(stack, alice, target, lines):
    """/auth's PUBLIC_PATH and PREFLIGHT answers set none of the four (nginx then drops the client's copies), also
    when the request carries a valid session."""
    method = "OPTIONS" if lines else "GET"
    o = send(stack, "direct", target, [credential(alice, "cookie"), *lines, *FORGED], method=method)
    assert o.status == 200 and o.lookups == [], o
    assert_no_session_headers(received(o))


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_session_headers_never_reach_better_auth(stack, alice, proxy):
    """The unchecked route to Better Auth (Envoy request_headers_to_remove, nginx proxy_set_header "") removes a
    client's x-user-jwt and the mapped headers: Better Auth's recorder shows none."""
    before = len(stack.better_auth_requests())
    forged = [tuple(line.split(": ", 1)) for line in FORGED]
    session = stack.request(proxy, "GET", "/api/auth/get-session", [("Cookie", alice.cookie), *forged])
    assert session.status == 200 and session.json()["user"]["id"] == alice.id, session
    signed_in = stack.sign_in(proxy, alice, extra_headers=forged)
    assert signed_in.status == 200, signed_in
    recorded = [r for r in stack.better_auth_requests()[before:] if r["path"].startswith("/api/auth/")]
    assert {r["path"].split("?")[0] for r in recorded} >= {"/api/auth/get-session", "/api/auth/sign-in/email"}
    for r in recorded:
        names = {k.lower() for k, _ in r["headers"]}
        assert not names & set(SESSION_HEADERS), r
    # Better Auth's own answer carries the JWT; the client may read it there (its own session), not from us.
    assert session.header("set-auth-jwt"), session


# ================================================================ API keys: no JWT

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_session_gets_no_jwt(stack, alice, transport):
    key = debug(stack, "api-key", {"userId": alice.id})["key"]
    o = send(stack, transport, tasks(alice), [f"x-api-key: {key}", *FORGED])
    assert_allowed(o, alice)
    got = received(o)
    assert JWT not in got, got                      # Better Auth answers a key's session without set-auth-jwt
    assert got.get("x-user-role") == ["user"] and "x-org-id" not in got, got
    if transport != "direct":
        assert_nothing_for_the_client(o)


# ================================================================ mapped fields

@pytest.mark.parametrize("proxy", PROXIES)
def test_role_and_active_organization_arrive(stack, proxy):
    user = sign_up(stack, proxy)
    debug(stack, "role", {"userId": user.id, "role": ["admin", "user"]})
    org = debug(stack, "organization", {"userId": user.id})
    # The user makes it active with their own session, through the proxy's unchecked route (a cookie POST needs a
    # trusted Origin).
    resp = stack.request(proxy, "POST", "/api/auth/organization/set-active",
                         [("Content-Type", "application/json"), ("Origin", stack.origin(proxy)),
                          ("Cookie", user.cookie)], json.dumps({"organizationId": org["id"]}).encode())
    assert resp.status == 200 and resp.json()["id"] == org["id"], resp
    assert resp.header("set-auth-token") in (None, user.token), resp      # the same session
    for transport in TRANSPORTS:
        for kind in ("cookie", "bearer"):
            o = send(stack, transport, tasks(user), [credential(user, kind), *FORGED])
            assert_allowed(o, user)
            got = received(o)
            assert got.get("x-user-role") == ["admin,user"], got          # the admin plugin's roles, as stored
            assert got.get("x-org-id") == [org["id"]], got
            assert "x-impersonated-by" not in got, got
            assert the_jwt(got, user)["role"] == "admin,user"
            if transport != "direct":
                assert_nothing_for_the_client(o, org["id"])


@pytest.mark.parametrize("proxy", PROXIES)
def test_impersonation_is_mapped(stack, proxy):
    admin, carol = sign_up(stack, proxy, name="Admin Imp"), sign_up(stack, proxy, name="Carol Imp")
    debug(stack, "role", {"userId": admin.id, "role": "admin"})
    resp = stack.request(proxy, "POST", "/api/auth/admin/impersonate-user",
                         [("Content-Type", "application/json"), ("Origin", stack.origin(proxy)),
                          ("Authorization", f"Bearer {admin.token}")], json.dumps({"userId": carol.id}).encode())
    assert resp.status == 200 and resp.header("set-auth-token"), resp
    as_carol = Holder(**{**carol.__dict__, "token": resp.header("set-auth-token")})
    for transport in TRANSPORTS:
        o = send(stack, transport, tasks(carol), [credential(as_carol, "bearer"), *FORGED])
        assert_allowed(o, carol)
        got = received(o)
        assert got.get("x-impersonated-by") == [admin.id], got
        assert got.get("x-user-role") == ["user"] and "x-org-id" not in got, got
        the_jwt(got, carol)
        # Admin's own session: no impersonation.
        o = send(stack, transport, tasks(admin), [credential(admin, "bearer"), *FORGED])
        assert_allowed(o, admin)
        assert "x-impersonated-by" not in received(o) and received(o).get("x-user-role") == ["admin"], o


# ================================================================ the cache and the JWT's exp

def test_cached_session_never_serves_an_expired_jwt(stack):
    """A second Better Auth issuing 3-second JWTs behind a better-authz caching sessions for 10 minutes: within
    the JWT's life a check is a cache hit with the same JWT and no get-session; after its `exp` the entry is gone,
    Better Auth is asked again and the back end gets a new, unexpired JWT."""
    with ExtraProcs(stack) as extra:
        ba = extra.better_auth("better-auth-short-jwt", {"JWT_EXPIRATION_TIME": f"{SHORT_JWT_SECONDS}s"})
        authz = extra.authz("better-authz-jwt-cache", {
            "BETTER_AUTH_URL": f"http://127.0.0.1:{ba}", "AUTHZ_CACHE_TTL_MS": "600000",
            "AUTHZ_HEADER_JWT": JWT, "AUTHZ_HEADER_MAP": STACK_HEADER_MAP})
        email, ip = f"short-{uuid.uuid4().hex[:8]}@example.com", next(_source_ips)
        resp = raw_request(ba, "POST", "/api/auth/sign-up/email",
                           [("Content-Type", "application/json"), ("Origin", f"http://127.0.0.1:{ba}")],
                           json.dumps({"name": "Short", "email": email, "password": PASSWORD}).encode(), source_ip=ip)
        assert resp.status == 200, resp
        user = User(id=resp.json()["user"]["id"], email=email, name="Short", cookie=session_cookie(resp), source_ip=ip)

        def lookups() -> int:
            recorded = raw_request(ba, "GET", "/__debug/requests").json()
            return len([r for r in recorded if r["path"].startswith("/api/auth/get-session")])

        def check() -> tuple[dict, str, int, float]:
            """(claims, JWT, get-session calls it caused, cache hits so far)."""
            before = lookups()
            o = send(stack, "direct", tasks(user), [f"Cookie: {user.cookie}"], authz_port=authz.ports["http"])
            assert_allowed(o, user)
            got = received(o)
            claims = the_jwt(got, user)            # also: exp still ahead
            return claims, got[JWT][0], lookups() - before, authz.metric("better_authz_cache_requests_total",
                                                                           result="hit")

        first, jwt1, asked, hits = check()
        assert asked == 1 and first["exp"] - first["iat"] == SHORT_JWT_SECONDS, first
        second, jwt2, asked, hits2 = check()
        assert (asked, jwt2, hits2) == (0, jwt1, hits + 1), "a hit within the JWT's life, with that JWT"
        time.sleep(max(0.0, first["exp"] - time.time()) + 0.3)
        third, jwt3, asked, hits3 = check()
        assert asked == 1 and hits3 == hits2, "after exp the cached entry is not served: Better Auth is asked"
        assert jwt3 != jwt1 and third["exp"] > first["exp"], third
        fourth, jwt4, asked, hits4 = check()
        assert (asked, jwt4, hits4) == (0, jwt3, hits3 + 1), "the new JWT is cached again"


# ================================================================ stripped credentials

@dataclass
class Fronts:
    strip: str          # Envoy in front of a better-authz with AUTHZ_STRIP_CREDENTIALS=true
    strip_http: int     # that better-authz's /auth
    strip_nginx: str    # the shipped nginx in front of it
    jwt_auth: str       # Envoy in front of one that also has AUTHZ_HEADER_JWT=authorization


@pytest.fixture(scope="module")
def fronts(stack: Stack):
    common = {"AUTHZ_CREDENTIALS": STACK_CREDENTIALS, "AUTHZ_HEADER_MAP": STACK_HEADER_MAP,
              "AUTHZ_STRIP_CREDENTIALS": "true", "AUTHZ_PUBLIC_PATHS": "/api/auth/,/public/"}
    with ExtraProcs(stack) as extra:
        strip = extra.authz("better-authz-strip", {**common, "AUTHZ_HEADER_JWT": JWT})
        jwt_auth = extra.authz("better-authz-jwt-authorization", {**common, "AUTHZ_HEADER_JWT": "authorization"})
        extra.envoy("envoy-strip", strip)
        extra.envoy("envoy-jwt-authorization", jwt_auth)
        port = free_ports(1)[0]
        extra.nginx("nginx-strip", "nginx/nginx.conf", {
            8081: port, 9002: strip.ports["http"], 3000: stack.ports["better_auth"], 8000: stack.ports["todo"],
        }, listen={"nginx-strip": port})
        yield Fronts("envoy-strip", strip.ports["http"], "nginx-strip", "envoy-jwt-authorization")


def assert_no_secret(got: dict[str, list[str]], *secrets: str) -> None:
    leaked = [(k, v[:40]) for k, values in got.items() for v in values for s in secrets if s and s in v]
    assert not leaked, leaked


@pytest.mark.parametrize("front", ["strip", "strip_nginx"])
def test_stripped_credentials_never_reach_backend(stack, alice, fronts, front):
    user, key = alice, debug(stack, "api-key", {"userId": alice.id})["key"]
    session_value = user.cookie.split("=", 1)[1]
    cases = {
        "cookie": ([f"Cookie: {user.cookie}"], None),
        "cookie among others": ([f"Cookie: theme=dark; {user.cookie}; lang=fr"], ["theme=dark; lang=fr"]),
        "bearer": ([f"Authorization: Bearer {user.token}", "Cookie: theme=dark"], ["theme=dark"]),
        "api key": ([f"x-api-key: {key}"], None),
    }
    for label, (lines, cookie) in cases.items():
        o = send(stack, getattr(fronts, front), tasks(user), [*lines, *FORGED])
        assert_allowed(o, user)
        got = received(o)
        assert got.get("cookie") == cookie, (label, got)
        assert "authorization" not in got and "x-api-key" not in got, (label, got)
        assert_no_secret(got, session_value, user.token, user.token.split(".")[0], key)
        if label == "api key":
            assert JWT not in got, got
        else:
            the_jwt(got, user)                      # the back end's credential instead
        assert got.get("x-user-role") == ["user"], got


@pytest.mark.parametrize("front", ["strip", "strip_nginx"])
def test_public_path_through_other_fronts_carries_no_session_headers(stack, alice, fronts, front):
    """A public path served by the back end (/public/ is public for these instances): no identity, no JWT, no
    mapped header although the client sent copies and a valid session. Credentials are not stripped there: a
    public route may be Better Auth's own, which needs them."""
    key = debug(stack, "api-key", {"userId": alice.id})["key"]
    o = send(stack, getattr(fronts, front), "/public/page",
             [f"Cookie: theme=dark; {alice.cookie}", f"Authorization: Bearer {alice.token}", f"x-api-key: {key}",
              *FORGED])
    assert o.resp.from_backend and len(o.backend) == 1 and o.lookups == [], o
    got = received(o)
    assert_no_session_headers(got)
    assert not [n for n in got if n.startswith("x-user")], got
    assert got.get("cookie") == [f"theme=dark; {alice.cookie}"], got
    assert got.get("authorization") == [f"Bearer {alice.token}"] and got.get("x-api-key") == [key], got


def test_direct_auth_answer_when_stripping(stack, alice, fronts):
    """/auth cannot make nginx remove a header; it answers the cookies that remain (`cookie`), nothing when none
    do, and never a credential."""
    def answer(lines):
        o = send(stack, "direct", tasks(alice), lines, authz_port=fronts.strip_http)
        assert_allowed(o, alice)
        return received(o)

    got = answer([f"Cookie: theme=dark; {alice.cookie}; lang=fr"])
    assert got.get("cookie") == ["theme=dark; lang=fr"], got
    the_jwt(got, alice)
    got = answer([f"Cookie: {alice.cookie}"])
    assert "cookie" not in got, got
    got = answer([f"Authorization: Bearer {alice.token}"])
    assert "authorization" not in got and "cookie" not in got, got
    assert_no_secret(got, alice.token.split(".")[0])


def test_jwt_as_authorization_replaces_the_credential(stack, alice, fronts):
    """AUTHZ_HEADER_JWT=authorization with stripping: the back end's Authorization is `Bearer <jwt>` (exactly one,
    whatever the client sent), never the client's token; an API key's request has no Authorization at all."""
    key = debug(stack, "api-key", {"userId": alice.id})["key"]
    for lines in ([f"Authorization: Bearer {alice.token}"], [f"Cookie: {alice.cookie}", "Authorization: Bearer x.y"],
                  [f"Cookie: {alice.cookie}"]):
        o = send(stack, fronts.jwt_auth, tasks(alice), lines)
        assert_allowed(o, alice)
        got = received(o)
        the_jwt(got, alice, name="authorization")
        assert got["authorization"][0].startswith("Bearer ey") and "cookie" not in got, got
        assert_no_secret(got, alice.token.split(".")[0], alice.cookie.split("=", 1)[1])
        assert JWT not in got, got
    o = send(stack, fronts.jwt_auth, tasks(alice), [f"x-api-key: {key}", "Authorization: Basic eDp5"])
    assert_allowed(o, alice)
    got = received(o)
    assert "x-api-key" not in got and "authorization" not in got, got


# ================================================================ logs

def test_no_jwt_in_any_log(stack):
    """Runs last in this module: no JWT handed to a back end in this module appears in the logs of better-authz
    (every instance), the proxies or the back end."""
    assert len(JWTS) > 10, "the tests above should have seen many JWTs"
    logs = {p: p.read_text(errors="replace") for p in sorted(LOG_DIR.rglob("*.log"))
            if p.is_file() and not p.name.startswith("better-auth.") and not p.name.startswith("better-auth-")}
    names = {p.name for p in logs}
    assert {"better-authz.log", "better-authz-strip.log", "envoy.log", "envoy-strip.log", "access.log",
            "todo-backend.log"} <= names, sorted(names)
    signatures = {jwt.rsplit(".", 1)[1] for jwt in JWTS}
    leaks = [f"{path.relative_to(LOG_DIR)}:{n}: {line[:160]}" for path, text in logs.items()
             for n, line in enumerate(text.splitlines(), 1) if any(s in line for s in signatures)]
    assert not leaks, "JWTs in logs:\n" + "\n".join(leaks)
