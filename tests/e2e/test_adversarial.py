"""Adversarial requests end to end (issue 7): no request without a valid session reaches the back end,
identity cannot be forged, and faults fail closed.

Every case runs through real Envoy (ext_authz gRPC) and real nginx (auth_request), and where the
transport matters also directly against better-authz's HTTP `/auth` (the gRPC adapter is covered directly
by the Rust tests). Each case asserts the status, that the back end saw nothing it should not (for allowed
requests: exactly one true `x-user-id`/`x-user-email`/`x-user-name`), and, where our answer needs no
session lookup, that Better Auth was not called (its request recorder).

Requests are sent byte for byte (`raw_bytes_request`): CR, LF, NUL, non-UTF-8 bytes, folded and repeated
header lines all arrive as written. What each trick becomes on the way is in docs/security-normalisation.md;
the expectation tables below are the source of its status columns.
"""

from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass

import pytest

from adversary import (TRANSPORTS, Outcome, assert_allowed, assert_denied, assert_no_identity, check, cookie_line,
                       fill, header_values, send, value_of)
from conftest import PROXIES, Stack, User, raw_bytes_request

# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def alice(stack: Stack) -> User:
    return stack.sign_up("envoy", name="Alice Adversary")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> User:
    return stack.sign_up("nginx", name="Bob Bystander")


# ================================================================================ 1. identity spoofing

SPOOF_FORMS = {
    # name: (header lines, expected through envoy, through nginx)
    "repeated-other-case": ([b"X-User-Id: {B}", b"x-user-id: {B}-2", b"X-USER-ID: {B}-3", b"x-User-Email: evil@example.com",
                             b"X-USER-EMAIL: evil2@example.com", b"X-User-Name: Mallory", b"x-user-name: Mallory 2"],
                            "be200", "be200"),
    "empty-values": ([b"X-User-Id:", b"X-User-Email: ", b"X-User-Name:\t"], "be200", "be200"),
    # Hop-by-hop trick: ask the proxy to drop the identity headers (the ones it sets) on the way out.
    "connection-nominates-identity": ([b"Connection: keep-alive, X-User-Id, x-user-email, X-User-Name",
                                       b"X-User-Id: {B}"], "be200", "be200"),
    "connection-nominates-only": ([b"Connection: x-user-id"], "be200", "be200"),
    "underscore-alias": ([b"X_User_Id: {B}", b"x_user_email: evil@example.com", b"X-User_Name: Mallory"],
                         "be200", "be200"),
    # Folded continuation line (obsolete line folding): Envoy folds it into X-Note's value, nginx refuses.
    "obs-fold": ([b"X-Note: a", b" X-User-Id: {B}"], "be200", 400),
    "space-before-colon": ([b"X-User-Id : {B}"], 400, 400),
}


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("form", list(SPOOF_FORMS))
def test_spoofed_identity_never_reaches_backend(stack, proxy, form, alice, bob):
    """Alice's valid session on her own path, plus forged identity headers in every form: the back end sees
    exactly Alice's identity once (or the proxy refuses the request); without a session it is 401; on Bob's
    path it is 403."""
    lines, exp_envoy, exp_nginx = SPOOF_FORMS[form]
    lines = [line.replace(b"{B}", bob.id.encode()) for line in lines]
    expected = exp_envoy if proxy == "envoy" else exp_nginx

    own = send(stack, proxy, f"/api/{alice.id}/tasks", [cookie_line(alice.cookie), *lines])
    check(own, expected, alice)
    if own.resp.from_backend:
        assert own.resp.json()["user"]["id"] == alice.id, own

    anonymous = send(stack, proxy, f"/api/{alice.id}/tasks", lines)
    assert_denied(anonymous, 401 if expected != 400 else 400, {"SESSION_REQUIRED"}, lookups=0)

    others = send(stack, proxy, f"/api/{bob.id}/tasks", [cookie_line(alice.cookie), *lines])
    assert_denied(others, 403 if expected != 400 else 400, {"USER_MISMATCH"})


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("form", list(SPOOF_FORMS))
def test_spoofed_identity_stripped_on_public_routes_and_preflights(stack, proxy, form, alice, bob):
    """Where no session is needed (Better Auth's /api/auth/ routes, CORS preflights) nobody vouches for an
    identity: Better Auth and the back end receive no x-user-* header in any spelling."""
    lines, exp_envoy, exp_nginx = SPOOF_FORMS[form]
    lines = [line.replace(b"{B}", bob.id.encode()) for line in lines]
    refused = (exp_envoy if proxy == "envoy" else exp_nginx) == 400

    tag = uuid.uuid4().hex
    before = len(stack.better_auth_requests())
    public = send(stack, proxy, f"/api/auth/ok?probe={tag}", lines)
    at_better_auth = [r for r in stack.better_auth_requests()[before:] if tag in r["path"]]
    assert public.backend == [], public
    if refused:
        assert public.status == 400 and at_better_auth == [], public
    else:
        assert public.status == 200 and not public.resp.from_backend, public
        assert len(at_better_auth) == 1, at_better_auth
        assert_no_identity(at_better_auth[0])

    preflight = send(stack, proxy, f"/api/{alice.id}/tasks",
                     [b"Origin: https://app.example.com", b"Access-Control-Request-Method: POST", *lines],
                     method="OPTIONS")
    if refused:
        assert_denied(preflight, 400)
    else:
        assert_allowed(preflight, None, 204)
        assert preflight.lookups == [], preflight


@pytest.mark.parametrize("proxy", PROXIES)
def test_preflight_cannot_be_faked_on_other_methods(stack, proxy, alice):
    """Only a real OPTIONS preflight skips the session: a GET/POST with the preflight headers, or with a
    method-override header claiming OPTIONS, is 401 and never reaches the back end."""
    preflight_headers = [b"Origin: https://app.example.com", b"Access-Control-Request-Method: GET"]
    for method, extra in (("GET", []), ("POST", [b"Content-Length: 0"]),
                          ("GET", [b"X-HTTP-Method-Override: OPTIONS", b"X-Original-Method: OPTIONS",
                                   b"X-Forwarded-Method: OPTIONS"])):
        o = send(stack, proxy, f"/api/{alice.id}/tasks", [*preflight_headers, *extra], method=method)
        assert_denied(o, 401, {"SESSION_REQUIRED"}, lookups=0)


def test_direct_auth_answer_carries_only_the_session_identity(stack, alice, bob):
    """/auth ignores identity headers sent to it: the answer carries the session's identity (which the proxy
    copies upstream) or none at all."""
    spoof = [f"X-User-Id: {bob.id}".encode(), b"X-User-Email: evil@example.com", b"x_user_id: evil"]
    own = send(stack, "direct", f"/api/{alice.id}/tasks", [cookie_line(alice.cookie), *spoof])
    assert_allowed(own, alice)
    public = send(stack, "direct", "/api/auth/ok", spoof)
    assert_allowed(public, None)
    assert public.lookups == []
    denied = send(stack, "direct", f"/api/{alice.id}/tasks", spoof)
    assert_denied(denied, 401, {"SESSION_REQUIRED"}, lookups=0)


# ================================================================================ 2. path tricks

# (id, template, {"envoy": exp, "nginx": exp, "direct": exp}) with Alice's session cookie.
# exp: status of a denial (never the back end); "be<N>": reached the back end with Alice's true identity,
# the back end answered N (the todo back end routes the raw path and 403s a segment that is not literally
# the x-user-id it got); "direct" 200 = /auth allowed with Alice's identity. A tuple: any of these.
USER_PATH_TRICKS = [
    ("own", "/api/{A}/tasks", {"envoy": "be200", "nginx": "be200", "direct": 200}),
    ("other", "/api/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    # percent-encoding of the id segment: decoded once
    ("own-one-char-encoded", "/api/{A_pct1}/tasks", {"envoy": "be200", "nginx": "be403", "direct": 200}),
    ("own-all-encoded", "/api/{A_pct}/tasks", {"envoy": "be200", "nginx": "be403", "direct": 200}),
    ("other-all-encoded", "/api/{B_pct}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("own-double-encoded", "/api/{A_dbl}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("double-encoded-slash", "/api/{A}%252F..%252F{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    # separators hidden in a segment
    ("encoded-slash", "/api/{A}%2F..%2F{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("encoded-slash-lower", "/api/{B}%2ftasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("encoded-backslash", "/api/{A}%5C..%5C{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("raw-backslash", "/api/{A}\\..\\{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 400}),
    ("overlong-utf8-slash", "/api/{A}%C0%AF..%C0%AF{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("fullwidth-slash", "/api/{A}%EF%BC%8F..%EF%BC%8F{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    # dot segments
    ("dot-dot-to-other", "/api/{A}/../{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 403}),
    ("dot-dot-to-own", "/api/{B}/../{A}/tasks", {"envoy": "be200", "nginx": 400, "direct": 200}),
    ("encoded-dot-dot-to-other", "/api/{A}/%2e%2e/{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 403}),
    ("half-encoded-dot-dot", "/api/{A}/.%2E/{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 403}),
    ("single-dot", "/api/./{A}/tasks", {"envoy": "be200", "nginx": 400, "direct": 200}),
    ("trailing-dot-segment", "/api/{A}/tasks/.", {"envoy": "be200", "nginx": 400, "direct": 200}),
    ("public-prefix-then-dot-dot", "/api/auth/../{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 403}),
    # doubled slashes
    ("doubled-slashes-own", "/api//{A}//tasks", {"envoy": "be200", "nginx": 400, "direct": 200}),
    ("leading-double-slash-other", "//api/{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 403}),
    # ;parameters (Tomcat/Jetty/Spring strip them per segment; `..;` is `..` to them and to Envoy)
    ("param-on-own-id", "/api/{A};jsessionid=x/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-on-other-id", "/api/{B};jsessionid=x/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-on-last-segment", "/api/{A}/tasks;jsessionid=x", {"envoy": "be404", "nginx": "be404", "direct": 200}),
    ("dot-dot-param-to-other", "/api/{A}/..;/{B}/tasks", {"envoy": 403, "nginx": 400, "direct": 400}),
    ("dot-dot-param-to-own", "/api/{B}/..;x=1/{A}/tasks", {"envoy": "be200", "nginx": 400, "direct": 400}),
    ("encoded-dot-dot-param-to-other", "/api/{A}/%2e%2e;/{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("dot-dot-encoded-param-to-other", "/api/{A}/..%3B/{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("dot-param", "/api/{A}/.;/tasks", {"envoy": "be200", "nginx": 400, "direct": 400}),
    # ...but only in the path: the same bytes in the query are nobody's business.
    ("dot-dot-param-only-in-query", "/api/{A}/tasks?next=/..;/{B}/tasks",
     {"envoy": "be200", "nginx": "be200", "direct": 200}),
    # look-alikes
    ("trailing-dot-own-id", "/api/{A}./tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("trailing-dot-other-id", "/api/{B}./tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("upper-case-literal-own", "/API/{A}/tasks", {"envoy": "be404", "nginx": "be404", "direct": 200}),
    ("upper-case-literal-other", "/API/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("own-id-other-case", "/api/{A_swapcase}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("cyrillic-lookalike-own", "/api/{A_cyr}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("cyrillic-lookalike-raw-utf8", "/api/{A_cyr_raw}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("fullwidth-own", "/api/{A_fw}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("fullwidth-other", "/api/{B_fw}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    # the id only outside the path
    ("own-id-only-in-query", "/api/{B}/tasks?user={A}", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("own-path-in-query", "/api/{B}/tasks?/api/{A}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("own-path-in-fragment", "/api/{B}/tasks#/api/{A}/tasks", {"envoy": 400, "nginx": 403, "direct": 403}),
    ("own-with-fragment", "/api/{A}/tasks#x", {"envoy": 400, "nginx": "be404", "direct": 200}),
    ("absolute-form-to-other", "http://app.example/api/auth/../{B}/tasks",
     {"envoy": 403, "nginx": 400, "direct": 400}),
    # bytes no segment may hold
    ("nul", "/api/{A}%00/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("control-byte", "/api/{A}%01/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("invalid-utf8", "/api/{A}%FF/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
]

# Without a session: spellings of the public /api/auth/ prefix. Denials and Better Auth's/nginx's own
# answers (404, 301, 200 from /api/auth/ok) are all fine as long as the back end never sees the request.
PUBLIC_PREFIX_TRICKS = [
    ("prefix-without-slash", "/api/auth", {"envoy": 404, "nginx": 301, "direct": 200}),
    ("prefix-without-slash-query", "/api/auth?x=1", {"envoy": 404, "nginx": 301, "direct": 200}),
    ("prefix-encoded-letter", "/api/%61uth", {"envoy": 404, "nginx": 301, "direct": 200}),
    ("prefix-doubled-slash", "/api//auth/ok", {"envoy": 200, "nginx": 400, "direct": 200}),
    ("prefix-dot-dot-escape", "/api/auth/../{A}/tasks", {"envoy": 401, "nginx": 400, "direct": 401}),
    ("prefix-encoded-dot-dot-escape", "/api/auth/%2e%2e/{A}/tasks", {"envoy": 401, "nginx": 400, "direct": 401}),
    ("prefix-dot-dot-param-escape", "/api/auth/..;/{A}/tasks", {"envoy": 401, "nginx": 400, "direct": 400}),
    ("prefix-encoded-slash-escape", "/api/auth%2F..%2F{A}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("prefix-upper-case", "/API/auth/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("prefix-longer-segment", "/api/authz", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("prefix-param", "/api/auth;x/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", USER_PATH_TRICKS, ids=[c[0] for c in USER_PATH_TRICKS])
def test_user_id_rule_holds_on_the_routed_path(stack, transport, case, alice, bob):
    """Alice's session against paths that spell (or hide) her id or Bob's: never Bob's data, never the
    back end with an identity other than Alice's, and a refused path costs no session lookup."""
    _, template, expected = case
    o = send(stack, transport, fill(template, alice, bob), [cookie_line(alice.cookie)])
    check(o, expected[transport], alice)
    if o.resp.from_backend and o.status == 200:
        assert o.resp.json()["user"]["id"] == alice.id, o


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", USER_PATH_TRICKS, ids=[c[0] for c in USER_PATH_TRICKS])
def test_path_tricks_without_session_never_reach_backend(stack, transport, case, alice, bob):
    """The same paths without a session: 401 (or the proxy's 400), never the back end."""
    _, template, expected = case
    o = send(stack, transport, fill(template, alice, bob))
    exp = expected[transport]
    refused = exp == 400 or (isinstance(exp, tuple) and 400 in exp and 200 not in exp and 403 not in exp)
    assert_denied(o, (400,) if refused else (400, 401), {"SESSION_REQUIRED", "BAD_REQUEST"}, lookups=0)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", PUBLIC_PREFIX_TRICKS, ids=[c[0] for c in PUBLIC_PREFIX_TRICKS])
def test_public_prefix_tricks_never_reach_backend(stack, transport, case, alice, bob):
    """Spellings of the public /api/auth/ prefix: what the proxy routes past better-authz goes to Better
    Auth, what it sends to the back end needs a session. No anonymous request reaches the back end."""
    _, template, expected = case
    o = send(stack, transport, fill(template, alice, bob),
             [b"X-User-Id: " + bob.id.encode(), b"X-User-Email: evil@example.com"])
    exp = expected[transport]
    if transport == "direct" and exp == 200:
        assert_allowed(o, None)                # PUBLIC_PATH, no identity in the answer
        assert o.lookups == [], o
        return
    statuses = (exp,) if isinstance(exp, int) else exp
    assert o.status in statuses, o
    assert not o.resp.from_backend, o
    assert o.backend == [], o
    assert o.lookups == [], o


# ================================================================================ 3. cookie abuse

def _many_cookies(count: int, start: int = 0) -> str:
    return "; ".join(f"{i:x}=1" for i in range(start, start + count))


@dataclass
class CookieCase:
    id: str
    lines: object                  # (alice, bob) -> header lines after the request line
    expected: dict                 # transport -> status or "be200"
    lookups: int | None            # get-session calls Better Auth must receive (None: not asserted)
    codes: set[str] | None = None  # acceptable error codes where the service's JSON arrives


def _c(user: User) -> str:
    return user.cookie


COOKIE_CASES = [
    # -- volume
    CookieCase("thousands-of-cookies-no-session",
               lambda a, b: [cookie_line(_many_cookies(3000))],
               {"envoy": 431, "nginx": 400, "direct": 431}, 0, {"HEADERS_TOO_LARGE"}),
    CookieCase("thousands-of-cookies-with-session",
               lambda a, b: [cookie_line(_many_cookies(1000)), cookie_line(_many_cookies(1000, 1000) + "; " + _c(a))],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("one-giant-session-cookie",
               lambda a, b: [cookie_line("better-auth.session_token=" + "A" * 20_000 + ".sig")],
               {"envoy": 431, "nginx": 400, "direct": 431}, 0, {"HEADERS_TOO_LARGE"}),
    CookieCase("session-cookie-too-long-to-be-a-token",
               lambda a, b: [cookie_line("better-auth.session_token=" + "A" * 6_000 + ".sig")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 0, {"SESSION_INVALID"}),
    CookieCase("cookie-lines-over-16k-with-session",
               lambda a, b: [cookie_line(f"better-auth.pad{i}=" + "B" * 6_000) for i in range(3)] + [cookie_line(_c(a))],
               {"envoy": 431, "nginx": 431, "direct": 431}, 0, {"HEADERS_TOO_LARGE"}),
    CookieCase("two-hundred-cookie-lines",
               lambda a, b: [cookie_line(f"c{i}=v") for i in range(200)],
               {"envoy": 431, "nginx": 401, "direct": 431}, 0, {"SESSION_REQUIRED", "HEADERS_TOO_LARGE"}),
    # -- bytes that cannot be in a header value
    CookieCase("nul-in-session-value",
               lambda a, b: [b"Cookie: better-auth.session_token=abc\x00def.sig"],
               {"envoy": 400, "nginx": 400, "direct": 400}, 0),
    CookieCase("nul-inside-valid-session-value",
               lambda a, b: [cookie_line(a.cookie[:40].encode() + b"\x00" + a.cookie[40:].encode())],
               {"envoy": 400, "nginx": 400, "direct": 400}, 0),
    # Envoy's HTTP/1 codec drops a bare CR inside a value; the rest is a forged token Better Auth refuses.
    CookieCase("bare-cr-in-session-value",
               lambda a, b: [b"Cookie: better-auth.session_token=abc\rdef.sig"],
               {"envoy": 401, "nginx": 400, "direct": 400}, None, {"SESSION_INVALID"}),
    # A bare LF ends the line: the cookie is `abc` (not a signed token) and X-User-Id a separate header.
    CookieCase("bare-lf-injects-header-line",
               lambda a, b: [b"Cookie: better-auth.session_token=abc\nX-User-Id: " + b.id.encode()],
               {"envoy": 401, "nginx": 401, "direct": 401}, 0, {"SESSION_INVALID"}),
    CookieCase("percent-encoded-crlf-nul-in-value",
               lambda a, b: [cookie_line("better-auth.session_token=abc%0D%0AX-User-Id:%20x%00.sig")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("non-utf8-in-session-value",
               lambda a, b: [b"Cookie: better-auth.session_token=abc\xff\xfe.sig"],
               {"envoy": 401, "nginx": 401, "direct": 401}, 0, {"SESSION_INVALID"}),
    # A sibling Better Auth cookie with unsendable bytes is left out, not fatal: a sibling subdomain
    # able to set one must not lock users out. The session itself is still checked.
    CookieCase("non-utf8-in-other-better-auth-cookie-with-session",
               lambda a, b: [cookie_line(a.cookie.encode() + b"; better-auth.pref=caf\xe9")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("non-utf8-in-unrelated-cookie-with-session",
               lambda a, b: [cookie_line(b"theme=\xff\xfe; " + a.cookie.encode())],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    # -- duplicates: Better Auth (1.7) reads the FIRST cookie of a name; we forward all, in order.
    CookieCase("duplicate-valid-then-forged",
               lambda a, b: [cookie_line(f"{_c(a)}; better-auth.session_token=forged.sig")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("duplicate-forged-then-valid",
               lambda a, b: [cookie_line(f"better-auth.session_token=forged.sig; {_c(a)}")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("duplicate-forged-then-valid-two-lines",
               lambda a, b: [cookie_line("better-auth.session_token=forged.sig"), cookie_line(_c(a))],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("duplicate-empty-then-valid",
               lambda a, b: [cookie_line(f"better-auth.session_token=; {_c(a)}")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("duplicate-valid-then-empty",
               lambda a, b: [cookie_line(f"{_c(a)}; better-auth.session_token=")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    # Alice's path with Bob's cookie first: Better Auth says Bob, so 403; with Alice's first: Alice.
    CookieCase("duplicate-own-then-other-user",
               lambda a, b: [cookie_line(f"{_c(a)}; {_c(b)}")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("duplicate-other-user-then-own",
               lambda a, b: [cookie_line(f"{_c(b)}; {_c(a)}")],
               {"envoy": 403, "nginx": 403, "direct": 403}, 1, {"USER_MISMATCH"}),
    # -- quoting and names
    CookieCase("quoted-valid-value",
               lambda a, b: [cookie_line(f'better-auth.session_token="{value_of(a)}"')],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("quoted-forged-value",
               lambda a, b: [cookie_line('better-auth.session_token="forged.sig"')],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("percent-decoded-valid-value",
               lambda a, b: [cookie_line("better-auth.session_token=" + urllib.parse.unquote(value_of(a)))],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("name-in-other-case",
               lambda a, b: [cookie_line("Better-Auth.Session_Token=" + value_of(a))],
               {"envoy": 401, "nginx": 401, "direct": 401}, 0, {"SESSION_REQUIRED"}),
    # -- __Secure- and plain together. This Better Auth has an http:// base URL, so it reads the plain name
    # only (with https:// it reads only __Secure-); whichever it reads decides.
    CookieCase("secure-forged-and-plain-valid",
               lambda a, b: [cookie_line(f"__Secure-better-auth.session_token=forged.sig; {_c(a)}")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("secure-valid-and-plain-forged",
               lambda a, b: [cookie_line(f"__Secure-better-auth.session_token={value_of(a)}; better-auth.session_token=forged.sig")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
    CookieCase("secure-other-user-and-plain-own",
               lambda a, b: [cookie_line(f"__Secure-better-auth.session_token={value_of(b)}; {_c(a)}")],
               {"envoy": "be200", "nginx": "be200", "direct": 200}, 1),
    CookieCase("secure-valid-only",
               lambda a, b: [cookie_line(f"__Secure-better-auth.session_token={value_of(a)}")],
               {"envoy": 401, "nginx": 401, "direct": 401}, 1, {"SESSION_INVALID"}),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", COOKIE_CASES, ids=[c.id for c in COOKIE_CASES])
def test_cookie_abuse(stack, transport, case, alice, bob):
    o = send(stack, transport, f"/api/{alice.id}/tasks", case.lines(alice, bob))
    exp = case.expected[transport]
    if isinstance(exp, str) or (transport == "direct" and exp == 200):
        check(o, exp, alice)
    else:
        assert_denied(o, exp, case.codes)
    if case.lookups is not None:
        assert len(o.lookups) == case.lookups, o
    # Whatever Better Auth was asked, it only ever saw Better Auth cookies, and never an identity header.
    for lookup in o.lookups:
        assert_no_identity(lookup)
        for line in header_values(lookup, "cookie"):
            for pair in line.split("; "):
                name = pair.split("=", 1)[0]
                assert name.startswith(("better-auth.", "__Secure-better-auth.")), lookup


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_only_better_auth_cookies_are_forwarded(stack, transport, alice):
    """Better Auth receives exactly the `better-auth.*` / `__Secure-better-auth.*` cookies, in order, byte
    for byte: not other apps' cookies, not look-alike names."""
    sent = ("theme=dark; other-app.session_token=x.y; " + alice.cookie + "; better-auth.pref=a%20b; "
            "__Host-better-auth.session_token=h.s; xbetter-auth.session_token=x.s; better-auth.=empty-name; "
            "__Secure-better-auth.pref=s")
    o = send(stack, transport, f"/api/{alice.id}/tasks", [cookie_line(sent)])
    check(o, "be200" if transport != "direct" else 200, alice)
    assert len(o.lookups) == 1, o
    assert header_values(o.lookups[0], "cookie") == [
        f"{alice.cookie}; better-auth.pref=a%20b; __Secure-better-auth.pref=s"], o.lookups[0]


# ================================================================================ 4. forwarded-URI headers

FORWARDED_URI_HEADERS = [b"X-Original-URI: {uri}", b"X-Original-URL: http://app.example{uri}",
                         b"X-Forwarded-Uri: {uri}", b"X-Envoy-Original-Path: {uri}", b"X-Original-Method: OPTIONS",
                         b"X-Forwarded-Method: OPTIONS"]


def _forwarded(uri: str) -> list[bytes]:
    return [line.replace(b"{uri}", uri.encode()) for line in FORWARDED_URI_HEADERS]


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_sent_forwarded_uri_headers_are_ignored(stack, proxy, alice, bob):
    """Through a proxy, a client's X-Original-URI / X-Original-URL / X-Forwarded-Uri (and -Method) never
    change what is authorized: Envoy sends the real :path over gRPC, nginx overwrites them on /_authz."""
    public = _forwarded("/api/auth/ok")
    anonymous = send(stack, proxy, f"/api/{alice.id}/tasks", public)
    assert_denied(anonymous, 401, {"SESSION_REQUIRED"}, lookups=0)

    others = send(stack, proxy, f"/api/{bob.id}/tasks", [cookie_line(alice.cookie), *_forwarded(f"/api/{alice.id}/tasks")])
    assert_denied(others, 403, {"USER_MISMATCH"}, lookups=1)

    own = send(stack, proxy, f"/api/{alice.id}/tasks", [cookie_line(alice.cookie), *_forwarded(f"/api/{bob.id}/tasks")])
    assert_allowed(own, alice)


def test_direct_http_transport_trusts_forwarded_uri_headers(stack, alice, bob):
    """The HTTP /auth transport decides on the URI the caller names (that is its job for nginx, ingress-nginx
    and Traefik): whoever can reach it can ask about any path. Hence AUTHZ_HTTP_ADDR must be reachable by the
    proxy only. In the default AUTHZ_FORWARD_AUTH=auto any of X-Original-URI, X-Original-URL, X-Forwarded-Uri
    names it, and where several (or a repeated one) disagree the check is 400 BAD_REQUEST; /auth's own URL and
    query are ignored; no usable header is 400 and fails closed. (Fixed modes: test_forward_auth.py.)"""
    port = stack.ports["authz_http"]

    def ask(lines: list[bytes], target: bytes = b"/auth") -> Outcome:
        data = b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: authz", *lines]) + b"\r\n\r\n"
        with stack.backend_delta() as seen, stack.better_auth_lookups() as lookups:
            resp = raw_bytes_request(port, data)
        return Outcome("direct", resp, seen, lookups)

    protected, public = f"/api/{alice.id}/tasks", "/api/auth/ok"
    missing = ask([cookie_line(alice.cookie)])
    assert_denied(missing, 400, {"BAD_REQUEST"}, lookups=0)
    for header in (b"X-Original-URI: " + public.encode(), b"X-Original-URL: http://app.example" + public.encode(),
                   b"X-Forwarded-Uri: " + public.encode()):
        o = ask([header])
        assert_allowed(o, None)                          # trusted: anonymous PUBLIC_PATH
        assert o.lookups == []
    # Disagreeing candidates, or a repeated one, are ambiguous: 400 whichever comes first, no session lookup.
    for lines in ([b"X-Original-URI: " + protected.encode(), b"X-Forwarded-Uri: " + public.encode(),
                   b"X-Original-URL: http://app.example" + public.encode()],
                  [b"X-Original-URI: " + protected.encode(), b"X-Original-URI: " + public.encode()],
                  [b"X-Original-URI: " + public.encode(), b"X-Original-URI: " + protected.encode()],
                  [b"X-Forwarded-Uri: " + public.encode(), b"X-Original-URI: " + protected.encode()]):
        o = ask([*lines, cookie_line(alice.cookie)])
        assert_denied(o, 400, {"BAD_REQUEST"}, lookups=0)
    # Agreeing candidates are one answer.
    o = ask([b"X-Original-URI: " + protected.encode(), b"X-Forwarded-Uri: " + protected.encode(),
             b"X-Original-URL: http://app.example" + protected.encode()])
    assert_denied(o, 401, {"SESSION_REQUIRED"}, lookups=0)
    # /auth's own path/query mean nothing.
    o = ask([b"X-Original-URI: " + protected.encode()], target=b"/auth?uri=/api/auth/ok")
    assert_denied(o, 401, {"SESSION_REQUIRED"}, lookups=0)
    # Unusable values fail closed.
    for value in (b"", b"*", b"http://app.example/api/auth/ok", b"api/auth/ok"):
        o = ask([b"X-Original-URI: " + value])
        assert_denied(o, 400, {"BAD_REQUEST"}, lookups=0)
    o = ask([b"X-Original-URL: not a url", cookie_line(alice.cookie)])
    assert_denied(o, 400, {"BAD_REQUEST"}, lookups=0)
    # The user-id rule uses the named URI: Bob's path with Alice's session is 403 whatever /auth's URL.
    o = ask([b"X-Original-URI: /api/" + bob.id.encode() + b"/tasks", cookie_line(alice.cookie)],
            target=f"/auth?/api/{alice.id}/tasks".encode())
    assert_denied(o, 403, {"USER_MISMATCH"}, lookups=1)
