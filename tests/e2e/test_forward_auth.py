"""Forged forwarded-request headers on /auth (AUTHZ_FORWARD_AUTH).

better-authz's HTTP /auth learns which request to judge from headers the proxy sets: the URI (X-Original-URI,
X-Original-URL, X-Forwarded-Uri), the method (X-Original-Method, X-Forwarded-Method) and the host
(X-Original-URL's authority, X-Forwarded-Host, Host). The shipped nginx sends /auth only the headers it sets,
but ingress-nginx (without the `auth-method` annotation it sets only X-Original-URL) and Traefik ForwardAuth
(it sets only X-Forwarded-*) pass every client header on: a client adding the header the OTHER proxy would use
chose the request being judged. Before this change `X-Original-URI: /api/auth/x` behind ingress-nginx made any
protected path public, and `X-Original-URI: /api/<own id>/…` let Alice read Bob's path.

AUTHZ_FORWARD_AUTH fixes the trusted headers: `nginx` (X-Original-URI, X-Original-Method, Host),
`ingress-nginx` (X-Original-URL for URI and host, X-Original-Method), `traefik` (X-Forwarded-Uri, -Method,
-Host); the others are ignored, and a trusted header repeated with another value is 400. `auto` (the default)
reads them all and answers 400 BAD_REQUEST when two candidates of a kind (or two copies of one) disagree.

ingress-nginx and Traefik are emulated with plain nginx (tests/e2e/fixtures/ingress-nginx.conf, traefik.conf)
forwarding client headers the way their templates do, in front of better-authz instances in each mode that
share the session stack's Better Auth and todo back end.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from adversary import Outcome, assert_allowed, assert_denied, send
from conftest import Authz, ExtraProcs, Stack, User, free_ports, raw_bytes_request

# Emulated proxy -> the client headers it overwrites on the way to /auth (the others pass through as sent).
SET_BY_PROXY = {
    "ingress": {"x-original-url", "x-original-method"},
    "ingress-am": {"x-original-url", "x-original-method", "x-original-uri"},   # auth-method annotation
    "traefik": {"x-forwarded-uri", "x-forwarded-method", "x-forwarded-host"},
}
# Front names registered in stack.ports by the fixture: "<proxy>:own" asks the instance in the proxy's own
# mode, "<proxy>:auto" the instance in auto mode.
EMULATED = [f"{proxy}:{mode}" for proxy in SET_BY_PROXY for mode in ("own", "auto")]
CANDIDATES = {"x-original-uri", "x-original-url", "x-forwarded-uri", "x-original-method", "x-forwarded-method",
              "x-forwarded-host"}


@dataclass
class ForwardAuth:
    modes: dict[str, Authz]     # AUTHZ_FORWARD_AUTH value -> instance


@pytest.fixture(scope="module")
def fa(stack: Stack):
    with ExtraProcs(stack) as extra:
        modes = {mode: extra.authz(f"better-authz-{mode}", {"AUTHZ_FORWARD_AUTH": mode})
                 for mode in ("nginx", "ingress-nginx", "traefik", "auto")}
        ingress = free_ports(4)
        extra.nginx("ingress-nginx-emulation", "tests/e2e/fixtures/ingress-nginx.conf", {
            18201: ingress[0], 18202: ingress[1], 18203: ingress[2], 18204: ingress[3],
            19201: modes["ingress-nginx"].ports["http"], 19203: modes["auto"].ports["http"],
            18000: stack.ports["todo"],
        }, listen={"ingress:own": ingress[0], "ingress:auto": ingress[1],
                   "ingress-am:own": ingress[2], "ingress-am:auto": ingress[3]})
        traefik = free_ports(2)
        extra.nginx("traefik-emulation", "tests/e2e/fixtures/traefik.conf", {
            18205: traefik[0], 18206: traefik[1],
            19202: modes["traefik"].ports["http"], 19203: modes["auto"].ports["http"],
            18000: stack.ports["todo"],
        }, listen={"traefik:own": traefik[0], "traefik:auto": traefik[1]})
        yield ForwardAuth(modes)


@pytest.fixture(scope="module")
def alice(stack: Stack) -> User:
    return stack.sign_up("envoy", name="Alice Forwarder")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> User:
    return stack.sign_up("nginx", name="Bob Forwarded")


# ================================================================ through emulated ingress-nginx and Traefik

@dataclass
class Forgery:
    id: str
    session: bool                  # send Alice's session cookie
    path: str                      # the request's real target ({A}, {B}: Alice's, Bob's id)
    lines: list[str]               # client headers
    honest: object                 # what the real request deserves: 401, 403 or "be200"
    agrees: bool = False           # the forged values equal what the proxy sets: no conflict even in auto


PREFLIGHT = ["Origin: https://app.example.com", "Access-Control-Request-Method: DELETE"]
FORGERIES = [
    Forgery("x-original-uri-makes-public", False, "/api/{A}/tasks", ["X-Original-URI: /api/auth/x"], 401),
    Forgery("x-original-uri-names-own-path", True, "/api/{B}/tasks", ["X-Original-URI: /api/{A}/tasks"], 403),
    Forgery("x-original-url-makes-public", False, "/api/{A}/tasks",
            ["X-Original-URL: http://app.example/api/auth/x"], 401),
    Forgery("x-forwarded-uri-makes-public", False, "/api/{A}/tasks", ["X-Forwarded-Uri: /api/auth/x"], 401),
    Forgery("x-forwarded-uri-names-own-path", True, "/api/{B}/tasks", ["X-Forwarded-Uri: /api/{A}/tasks"], 403),
    Forgery("x-original-method-fakes-preflight", False, "/api/{A}/tasks",
            [*PREFLIGHT, "X-Original-Method: OPTIONS"], 401),
    Forgery("x-forwarded-method-fakes-preflight", False, "/api/{A}/tasks",
            [*PREFLIGHT, "X-Forwarded-Method: OPTIONS"], 401),
    Forgery("x-forwarded-host-other", True, "/api/{A}/tasks", ["X-Forwarded-Host: evil.example"], "be200"),
    Forgery("x-original-url-other-host", True, "/api/{A}/tasks",
            ["X-Original-URL: http://evil.example/api/{A}/tasks"], "be200"),
    Forgery("everything-at-once", False, "/api/{A}/tasks",
            [*PREFLIGHT, "X-Original-URI: /api/auth/x", "X-Original-URL: http://app.example/api/auth/x",
             "X-Forwarded-Uri: /api/auth/x", "X-Original-Method: OPTIONS", "X-Forwarded-Method: OPTIONS",
             "X-Forwarded-Host: evil.example"], 401),
    # Equal values are not a conflict.
    Forgery("x-original-uri-equal", True, "/api/{A}/tasks", ["X-Original-URI: /api/{A}/tasks"], "be200", True),
    Forgery("x-forwarded-host-equal", True, "/api/{A}/tasks", ["X-Forwarded-Host: app.example"], "be200", True),
    Forgery("x-forwarded-uri-equal", True, "/api/{A}/tasks", ["X-Forwarded-Uri: /api/{A}/tasks"], "be200", True),
]


def expected_through(front: str, case: Forgery):
    """The proxy's own mode judges on the proxy's headers (the honest answer). auto sees the client's forged
    header next to the proxy's unless the proxy overwrote it: a disagreement is 400 BAD_REQUEST, which
    ingress-nginx's auth_request turns into 500 (the Traefik emulation passes 400 on, as Traefik does)."""
    proxy, mode = front.split(":")
    forged = {line.split(":", 1)[0].lower() for line in case.lines} & CANDIDATES
    survives = forged - SET_BY_PROXY[proxy]
    if mode == "own" or case.agrees or not survives:
        return case.honest
    return 500 if proxy.startswith("ingress") else 400


def fill_ids(text: str, alice: User, bob: User) -> str:
    return text.replace("{A}", alice.id).replace("{B}", bob.id)


@pytest.mark.parametrize("front", EMULATED)
@pytest.mark.parametrize("case", FORGERIES, ids=[c.id for c in FORGERIES])
def test_forged_forwarded_headers_through_emulated_proxies(stack, fa, front, case, alice, bob):
    """A client's own forwarded-request headers never buy an allow it should not get: behind the proxy's own
    mode they are ignored (honest answer), behind auto they are a 400 BAD_REQUEST conflict, never a public
    path, someone else's path or a preflight."""
    lines = [fill_ids(line, alice, bob) for line in case.lines]
    if case.session:
        lines.append("Cookie: " + alice.cookie)
    auto = fa.modes["auto"]
    bad_before = auto.decisions("BAD_REQUEST")
    o = send(stack, front, fill_ids(case.path, alice, bob), lines)
    exp = expected_through(front, case)
    if exp == "be200":
        assert_allowed(o, alice)
        assert o.resp.json()["user"]["id"] == alice.id, o
    else:
        assert_denied(o, exp)
        assert o.error_code() in (None, {401: "SESSION_REQUIRED", 403: "USER_MISMATCH"}.get(exp, "BAD_REQUEST")), o
    if exp in (400, 500):
        # The 500 through ingress-nginx is better-authz's BAD_REQUEST, decided without a session lookup.
        assert auto.decisions("BAD_REQUEST") == bad_before + 1, o
        assert o.lookups == [], o


@pytest.mark.parametrize("front", EMULATED)
def test_emulated_proxies_judge_the_real_request(stack, fa, front, alice, bob):
    """Without forged headers every emulation asks about the real request: Alice's own path reaches the back
    end with exactly her identity, Bob's is 403, no session is 401, a public path reaches it without identity
    (client X-User-* dropped), and a real CORS preflight is recognised from the method header the proxy sets
    (its auth subrequest itself is a GET)."""
    own = send(stack, front, f"/api/{alice.id}/tasks", [f"X-User-Id: {bob.id}", "Cookie: " + alice.cookie])
    assert_allowed(own, alice)
    assert_denied(send(stack, front, f"/api/{bob.id}/tasks", ["Cookie: " + alice.cookie]), 403)
    assert_denied(send(stack, front, f"/api/{alice.id}/tasks"), 401, lookups=0)
    public = send(stack, front, "/api/auth/ok", [f"X-User-Id: {bob.id}", "X-User-Email: evil@example.com"])
    assert public.resp.from_backend and len(public.backend) == 1 and public.lookups == [], public
    assert not [k for k, _ in public.backend[0]["headers"] if k.lower().startswith("x-user")], public
    preflight = send(stack, front, f"/api/{alice.id}/tasks", PREFLIGHT, method="OPTIONS")
    assert_allowed(preflight, None, 204)
    assert preflight.lookups == [], preflight


# ================================================================ /auth asked directly, per mode

def ask(stack: Stack, authz_port: int, lines: list[str]) -> Outcome:
    """GET /auth with exactly these header lines (no forwarded header added), recording what the back end and
    Better Auth received meanwhile."""
    data = b"\r\n".join([b"GET /auth HTTP/1.1", b"Host: authz", *(line.encode() for line in lines)]) + b"\r\n\r\n"
    with stack.backend_delta() as seen, stack.better_auth_lookups() as lookups:
        resp = raw_bytes_request(authz_port, data)
    return Outcome("direct", resp, seen, lookups)


# (id, mode, header lines, session?, expected): expected 200 = allowed (identity = Alice's when session, none
# otherwise), "preflight" = allowed without identity, else the deny status. {A}/{B}: Alice's/Bob's id.
PROTECTED, PUBLIC = "/api/{A}/tasks", "/api/auth/ok"
OTHERS = "/api/{B}/tasks"
FIXED_MODE_CASES = [
    # nginx: X-Original-URI, X-Original-Method, Host.
    ("nginx-ignores-other-uri-headers", "nginx",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: GET", f"X-Original-URL: http://app.example{PUBLIC}",
      f"X-Forwarded-Uri: {PUBLIC}", "X-Forwarded-Method: OPTIONS", "X-Forwarded-Host: evil.example", *PREFLIGHT],
     False, 401),
    ("nginx-ignores-other-uri-headers-for-own-path", "nginx",
     [f"X-Original-URI: {OTHERS}", f"X-Original-URL: http://app.example{PROTECTED}", f"X-Forwarded-Uri: {PROTECTED}"],
     True, 403),
    ("nginx-public", "nginx", [f"X-Original-URI: {PUBLIC}", f"X-Forwarded-Uri: {PROTECTED}"], False, 200),
    ("nginx-without-x-original-uri", "nginx",
     [f"X-Original-URL: http://app.example{PUBLIC}", f"X-Forwarded-Uri: {PUBLIC}"], False, 400),
    # Repeated with the same value: the same request (here public); with another value: 400.
    ("nginx-repeated-uri", "nginx", [f"X-Original-URI: {PUBLIC}", f"X-Original-URI: {PUBLIC}"], False, 200),
    ("nginx-repeated-uri-differing", "nginx", [f"X-Original-URI: {PROTECTED}", f"X-Original-URI: {PUBLIC}"],
     True, 400),
    ("nginx-repeated-method", "nginx",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: OPTIONS", "X-Original-Method: GET", *PREFLIGHT],
     False, 400),
    ("nginx-real-preflight", "nginx",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: OPTIONS", "X-Forwarded-Method: GET", *PREFLIGHT],
     False, "preflight"),
    # ingress-nginx: X-Original-URL (URI and host), X-Original-Method.
    ("ingress-ignores-other-uri-headers", "ingress-nginx",
     [f"X-Original-URL: http://app.example{PROTECTED}", "X-Original-Method: GET", f"X-Original-URI: {PUBLIC}",
      f"X-Forwarded-Uri: {PUBLIC}", "X-Forwarded-Method: OPTIONS", "X-Forwarded-Host: evil.example", *PREFLIGHT],
     False, 401),
    ("ingress-ignores-other-uri-headers-for-own-path", "ingress-nginx",
     [f"X-Original-URL: http://app.example{OTHERS}", f"X-Original-URI: {PROTECTED}", f"X-Forwarded-Uri: {PROTECTED}"],
     True, 403),
    ("ingress-public-with-query", "ingress-nginx", [f"X-Original-URL: http://app.example{PUBLIC}?x=1"], False, 200),
    ("ingress-without-x-original-url", "ingress-nginx",
     [f"X-Original-URI: {PUBLIC}", f"X-Forwarded-Uri: {PUBLIC}"], False, 400),
    ("ingress-repeated-url", "ingress-nginx",
     [f"X-Original-URL: http://app.example{PROTECTED}", f"X-Original-URL: http://app.example{PUBLIC}"], True, 400),
    ("ingress-real-preflight", "ingress-nginx",
     [f"X-Original-URL: http://app.example{PROTECTED}", "X-Original-Method: OPTIONS", "X-Forwarded-Method: GET",
      *PREFLIGHT], False, "preflight"),
    # traefik: X-Forwarded-Uri, X-Forwarded-Method, X-Forwarded-Host.
    ("traefik-ignores-other-uri-headers", "traefik",
     [f"X-Forwarded-Uri: {PROTECTED}", "X-Forwarded-Method: GET", "X-Forwarded-Host: app.example",
      f"X-Original-URI: {PUBLIC}", f"X-Original-URL: http://evil.example{PUBLIC}", "X-Original-Method: OPTIONS",
      *PREFLIGHT], False, 401),
    ("traefik-ignores-other-uri-headers-for-own-path", "traefik",
     [f"X-Forwarded-Uri: {OTHERS}", f"X-Original-URI: {PROTECTED}", f"X-Original-URL: http://app.example{PROTECTED}"],
     True, 403),
    ("traefik-public", "traefik", [f"X-Forwarded-Uri: {PUBLIC}", f"X-Original-URI: {PROTECTED}"], False, 200),
    ("traefik-without-x-forwarded-uri", "traefik", [f"X-Original-URI: {PUBLIC}"], False, 400),
    ("traefik-repeated-uri", "traefik", [f"X-Forwarded-Uri: {PUBLIC}", f"X-Forwarded-Uri: {PUBLIC}"], False, 200),
    ("traefik-repeated-uri-differing", "traefik", [f"X-Forwarded-Uri: {PUBLIC}", f"X-Forwarded-Uri: {PROTECTED}"],
     False, 400),
    ("traefik-repeated-method", "traefik",
     [f"X-Forwarded-Uri: {PROTECTED}", "X-Forwarded-Method: GET", "X-Forwarded-Method: OPTIONS", *PREFLIGHT],
     False, 400),
    ("traefik-repeated-host", "traefik",
     [f"X-Forwarded-Uri: {PROTECTED}", "X-Forwarded-Host: app.example", "X-Forwarded-Host: evil.example"], True, 400),
    ("traefik-real-preflight", "traefik",
     [f"X-Forwarded-Uri: {PROTECTED}", "X-Forwarded-Method: OPTIONS", "X-Original-Method: GET", *PREFLIGHT],
     False, "preflight"),
]

# auto (the session stack's instance, default settings, and the explicit AUTHZ_FORWARD_AUTH=auto one).
AUTO_CASES = [
    # URI candidates
    ("uri-original-vs-forwarded", [f"X-Original-URI: {PROTECTED}", f"X-Forwarded-Uri: {PUBLIC}"], True, 400),
    ("uri-forwarded-vs-original", [f"X-Forwarded-Uri: {PUBLIC}", f"X-Original-URI: {PROTECTED}"], True, 400),
    ("uri-original-vs-url", [f"X-Original-URI: {PUBLIC}", f"X-Original-URL: http://app.example{PROTECTED}"], True, 400),
    ("uri-url-vs-forwarded", [f"X-Original-URL: http://app.example{OTHERS}", f"X-Forwarded-Uri: {PROTECTED}"],
     True, 400),
    ("uri-url-query-differs", [f"X-Original-URI: {PUBLIC}", f"X-Original-URL: http://app.example{PUBLIC}?x=1"],
     False, 400),
    ("uri-repeated-differing", [f"X-Original-URI: {OTHERS}", f"X-Original-URI: {PROTECTED}"], True, 400),
    ("uri-forwarded-repeated-differing", [f"X-Forwarded-Uri: {PROTECTED}", f"X-Forwarded-Uri: {PUBLIC}"], True, 400),
    ("uri-all-three-equal", [f"X-Original-URI: {PROTECTED}?x=1", f"X-Original-URL: http://app.example{PROTECTED}?x=1",
                             f"X-Forwarded-Uri: {PROTECTED}?x=1"], True, 200),
    # A header repeated with the same value names the same request: judged (no session, 401).
    ("uri-repeated-equal", [f"X-Original-URI: {PROTECTED}", f"X-Original-URI: {PROTECTED}"], False, 401),
    ("uri-repeated-differing", [f"X-Original-URI: {PROTECTED}", "X-Original-URI: /api/auth/x"], False, 400),
    # method candidates
    ("method-conflict-fakes-preflight",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: GET", "X-Forwarded-Method: OPTIONS", *PREFLIGHT], False, 400),
    ("method-conflict-reversed",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: OPTIONS", "X-Forwarded-Method: GET", *PREFLIGHT], False, 400),
    ("method-repeated-differing",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: OPTIONS", "X-Original-Method: GET", *PREFLIGHT], False, 400),
    ("method-equal-preflight",
     [f"X-Original-URI: {PROTECTED}", "X-Original-Method: OPTIONS", "X-Forwarded-Method: OPTIONS", *PREFLIGHT],
     False, "preflight"),
    # host candidates
    ("host-url-vs-forwarded-host",
     [f"X-Original-URL: http://app.example{PROTECTED}", "X-Forwarded-Host: evil.example"], True, 400),
    ("host-forwarded-host-repeated-differing",
     [f"X-Original-URI: {PROTECTED}", "X-Forwarded-Host: app.example", "X-Forwarded-Host: evil.example"], True, 400),
    ("host-url-equals-forwarded-host",
     [f"X-Original-URL: http://app.example{PROTECTED}", "X-Forwarded-Host: app.example"], True, 200),
    # Host is only the fallback: a forwarded host different from it is not a conflict.
    ("host-forwarded-host-vs-host-header", [f"X-Original-URI: {PROTECTED}", "X-Forwarded-Host: other.example"],
     True, 200),
]


def fill_lines(lines: list[str], alice: User, bob: User, session: bool) -> list[str]:
    out = [fill_ids(line, alice, bob) for line in lines]
    return out + (["Cookie: " + alice.cookie] if session else [])


def check_direct(o: Outcome, exp, session: bool, alice: User) -> None:
    if exp == 200:
        assert_allowed(o, alice if session else None)
    elif exp == "preflight":
        assert_allowed(o, None)
        assert o.lookups == [], o
    else:
        codes = {400: "BAD_REQUEST", 401: "SESSION_REQUIRED", 403: "USER_MISMATCH"}
        assert_denied(o, exp, {codes[s] for s in (exp if isinstance(exp, tuple) else (exp,))})
        assert o.error_code() == codes[o.status], o
        if o.status == 400:
            assert o.lookups == [], f"an ambiguous request needs no session lookup: {o!r}"


@pytest.mark.parametrize("case", FIXED_MODE_CASES, ids=[c[0] for c in FIXED_MODE_CASES])
def test_fixed_mode_trusts_only_its_proxy_headers(stack, fa, case, alice, bob):
    """In a fixed mode only that proxy's headers name the request; the other candidates change nothing, and a
    trusted header repeated with another value is 400 BAD_REQUEST (with the same value, one request)."""
    _, mode, lines, session, exp = case
    o = ask(stack, fa.modes[mode].ports["http"], fill_lines(lines, alice, bob, session))
    check_direct(o, exp, session, alice)


@pytest.mark.parametrize("instance", ["stack-default", "explicit-auto"])
@pytest.mark.parametrize("case", AUTO_CASES, ids=[c[0] for c in AUTO_CASES])
def test_auto_mode_rejects_disagreeing_candidates(stack, fa, instance, case, alice, bob):
    """auto (the default): any candidate header may name the request, but two that disagree, or a repeated
    one that disagrees, are 400 BAD_REQUEST before any session lookup; equal values are one answer."""
    _, lines, session, exp = case
    port = stack.ports["authz_http"] if instance == "stack-default" else fa.modes["auto"].ports["http"]
    o = ask(stack, port, fill_lines(lines, alice, bob, session))
    check_direct(o, exp, session, alice)
