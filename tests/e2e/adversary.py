"""Shared helpers of the adversarial end-to-end tests (test_adversarial.py, test_path_params.py,
test_forward_auth.py, test_service_hardening.py): send a request byte for byte through a front (a proxy, or
better-authz's HTTP /auth asked directly the way a proxy asks it), record what the back end and Better Auth
received meanwhile, and check the outcome.

Fronts ("transports"):
- "envoy", "nginx": the session stack's shipped proxies; any other name registered in `stack.ports` (the
  forwarded-header emulations of test_forward_auth.py) works the same way;
- "direct": GET /auth with X-Original-URI + X-Original-Method, as the shipped nginx asks;
- "direct-url": GET /auth with X-Original-URL (a full URL) + X-Original-Method, as ingress-nginx asks;
- "direct-fwd": GET /auth with X-Forwarded-Uri + X-Forwarded-Method + X-Forwarded-Host, as Traefik asks.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from conftest import PROXIES, Response, Stack, User, raw_bytes_request
from launcher import STACK_HEADER_JWT, STACK_SESSION_HEADERS

IDENTITY = ("x-user-id", "x-user-email", "x-user-name")
# The stack's better-authz also sets the JWT and mapped headers (scripts/launcher.py: x-user-jwt, x-user-role,
# x-org-id, x-impersonated-by) on an allow with a session; never on any other allow.
SESSION_HEADERS = STACK_SESSION_HEADERS
TRANSPORTS = (*PROXIES, "direct")  # "direct": better-authz's HTTP /auth, as nginx would ask it
# /auth asked with each forwarded-URI header a proxy may use.
DIRECT = ("direct", "direct-url", "direct-fwd")
FRONTS = (*PROXIES, *DIRECT)

# Latin letters and a Cyrillic look-alike of each (same glyph in most fonts).
CYRILLIC = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "A": "А", "B": "В",
            "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О", "P": "Р", "T": "Т", "X": "Х"}


# ------------------------------------------------------------------------------------------ helpers

def header_values(recorded: dict, name: str) -> list[str]:
    return [v for k, v in recorded["headers"] if k.lower() == name.lower()]


def pct(text: str) -> str:
    """Percent-encode every byte of the UTF-8 form."""
    return "".join(f"%{b:02X}" for b in text.encode())


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their fullwidth forms (U+FF01..), which NFKC folds back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def cyrillic_lookalike(text: str) -> str:
    """`text` with its first letter that has a Cyrillic look-alike replaced by it."""
    for i, c in enumerate(text):
        if c in CYRILLIC:
            return text[:i] + CYRILLIC[c] + text[i + 1:]
    raise AssertionError(f"no letter with a Cyrillic look-alike in {text!r}")


@dataclass
class Outcome:
    transport: str
    resp: Response
    backend: list[dict]          # what the back end recorded
    lookups: list[dict]          # get-session requests Better Auth received

    @property
    def status(self) -> int:
        return self.resp.status

    def error_code(self) -> str | None:
        ctype = self.resp.header("content-type") or ""
        if not ctype.startswith("application/json") or self.resp.from_backend:
            return None
        try:
            return self.resp.json().get("error_code")
        except ValueError:
            return None

    def __repr__(self) -> str:
        return (f"Outcome({self.transport}: {self.resp!r}, backend={[(r['method'], r['path']) for r in self.backend]}, "
                f"lookups={len(self.lookups)})")


def is_direct(transport: str) -> bool:
    return transport.startswith("direct")


def build(transport: str, target: bytes, lines: list[bytes], method: bytes = b"GET") -> bytes:
    """The request as bytes: to a proxy as-is, to /auth the way nginx's /_authz subrequest (or ingress-nginx,
    or Traefik) asks."""
    forwarded = {
        "direct": [b"X-Original-URI: " + target, b"X-Original-Method: " + method],
        "direct-url": [b"X-Original-URL: http://app.example" + target, b"X-Original-Method: " + method],
        "direct-fwd": [b"X-Forwarded-Uri: " + target, b"X-Forwarded-Method: " + method,
                       b"X-Forwarded-Host: app.example", b"X-Forwarded-Proto: http"],
    }
    if is_direct(transport):
        head = [b"GET /auth HTTP/1.1", b"Host: authz", *forwarded[transport], b"X-Forwarded-For: 127.0.0.1"]
    else:
        head = [method + b" " + target + b" HTTP/1.1", b"Host: app.example"]
    return b"\r\n".join(head + lines) + b"\r\n\r\n"


def send(stack: Stack, transport: str, target: str | bytes, lines: list[bytes | str] = (),
         method: str = "GET", authz_port: int | None = None) -> Outcome:
    """Send the request through `transport` (direct ones: to the stack's better-authz, or the one listening on
    `authz_port`) and record what the back end and Better Auth received meanwhile."""
    target_b = target if isinstance(target, bytes) else target.encode()
    lines_b = [line if isinstance(line, bytes) else line.encode() for line in lines]
    data = build(transport, target_b, lines_b, method.encode())
    with stack.backend_delta() as seen, stack.better_auth_lookups() as lookups:
        if is_direct(transport):
            resp = raw_bytes_request(authz_port or stack.ports["authz_http"], data)
        else:
            resp = stack.request_bytes(transport, data, label=f"{method} {target_b[:80]!r}")
    return Outcome(transport, resp, seen, lookups)


def cookie_line(value: str | bytes) -> bytes:
    return b"Cookie: " + (value if isinstance(value, bytes) else value.encode())


def assert_no_store(resp: Response) -> None:
    """Every /auth answer, allow or deny, forbids caching: a shared cache (ingress-nginx auth-cache-key, a CDN,
    nginx proxy_cache) must never replay one user's decision or identity headers to another."""
    values = [v.lower() for v in resp.header_values("cache-control")]
    assert any("no-store" in [d.strip() for d in v.split(",")] for v in values), resp


def assert_auth_deny(resp: Response) -> None:
    """A deny from /auth: JSON {error_code, message, detail}, the same code in x-authz-error-code, no-store."""
    assert (resp.header("content-type") or "").startswith("application/json"), resp
    body = resp.json()
    assert set(body) == {"error_code", "message", "detail"}, resp
    assert resp.header_values("x-authz-error-code") == [body["error_code"]], resp
    assert_no_store(resp)


def assert_denied(o: Outcome, statuses, codes: set[str] | None = None, lookups: int | None = None) -> None:
    """Not served by the back end, which saw nothing; the status is one of `statuses`."""
    statuses = (statuses,) if isinstance(statuses, int) else tuple(statuses)
    assert o.status in statuses, o
    assert not o.resp.from_backend, o
    assert o.backend == [], o
    if is_direct(o.transport):
        assert not [k for k, _ in o.resp.headers if k.lower() in IDENTITY], o
        if o.resp.body or o.resp.header("x-authz-error-code"):
            # better-authz's own deny (an empty-bodied 400/431 is hyper refusing the request before /auth runs)
            assert_auth_deny(o.resp)
    if codes is not None and o.status in (400, 401, 403, 431, 503) and o.error_code() is not None:
        assert o.error_code() in codes, o
    if lookups is not None:
        assert len(o.lookups) == lookups, o


def jwt_claims(jwt: str) -> dict:
    """The payload of a compact JWS (base64url JSON), unverified."""
    parts = jwt.split(".")
    assert len(parts) == 3 and all(parts), jwt
    return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))


def assert_true_identity(recorded: dict, user: User) -> None:
    assert header_values(recorded, "x-user-id") == [user.id], recorded
    assert header_values(recorded, "x-user-email") == [user.email], recorded
    assert header_values(recorded, "x-user-name") == [user.name], recorded
    names = [k.lower() for k, _ in recorded["headers"]]
    # No alias that a CGI/WSGI stack could read as x-user-id, no other spelling of an identity header.
    assert not [n for n in names if "_" in n], recorded
    assert not [n for n in names if n.replace("_", "-").startswith("x-user") and n not in IDENTITY
                and n not in SESSION_HEADERS], recorded
    # The stack's JWT and mapped headers: at most once each (absent from instances that do not set them), and a
    # JWT is this user's.
    for name in SESSION_HEADERS:
        assert len(header_values(recorded, name)) <= 1, recorded
    for jwt in header_values(recorded, STACK_HEADER_JWT):
        assert jwt_claims(jwt)["sub"] == user.id, recorded


def assert_no_identity(recorded: dict) -> None:
    names = [k.lower() for k, _ in recorded["headers"]]
    assert not [n for n in names if n.replace("_", "-").startswith("x-user")], recorded
    assert not [n for n in names if n in SESSION_HEADERS], recorded


def assert_allowed(o: Outcome, user: User | None, backend_status: int | None = 200) -> None:
    """Allowed: through a proxy the back end got exactly this one request with exactly the true identity
    (none for an anonymous allow); directly, /auth answered 200 with exactly that identity."""
    if is_direct(o.transport):
        assert o.status == 200, o
        assert_no_store(o.resp)
        got = {k.lower(): v for k, v in o.resp.headers if k.lower() in IDENTITY}
        assert len([k for k, _ in o.resp.headers if k.lower() in IDENTITY]) == len(got), o
        want = {} if user is None else {"x-user-id": user.id, "x-user-email": user.email, "x-user-name": user.name}
        assert got == want, o
        return
    assert o.resp.from_backend, o
    if backend_status is not None:
        assert o.status == backend_status, o
    assert len(o.backend) == 1, o
    if user is None:
        assert_no_identity(o.backend[0])
    else:
        assert_true_identity(o.backend[0], user)


def check(o: Outcome, expected, user: User | None) -> None:
    """`expected`: an int or tuple of ints = denied with that status (never the back end);
    "be<N>" = reached the back end with the true identity, which answered N (direct: 200 with identity)."""
    if isinstance(expected, str):
        assert expected.startswith("be"), expected
        assert_allowed(o, user, int(expected[2:]))
        return
    statuses = (expected,) if isinstance(expected, int) else tuple(expected)
    if is_direct(o.transport) and 200 in statuses and o.status == 200:
        assert_allowed(o, user)
        return
    assert_denied(o, statuses, {"BAD_REQUEST", "SESSION_REQUIRED", "SESSION_INVALID", "USER_MISMATCH",
                                "HEADERS_TOO_LARGE"})
    if o.status == 403:
        assert o.error_code() in (None, "USER_MISMATCH"), o
    if o.status == 400:
        assert o.lookups == [], f"a path refused as ambiguous needs no session lookup: {o!r}"


def value_of(user: User) -> str:
    return user.cookie.split("=", 1)[1]


def fill(template: str, alice: User, bob: User) -> str:
    a, b = alice.id, bob.id
    assert a.swapcase() != a, "Better Auth ids are mixed-case letters and digits"
    return template.format(
        A=a, B=b,
        A_pct1=f"%{ord(a[0]):02x}{a[1:]}", A_pct=pct(a), B_pct=pct(b),
        A_dbl=f"%25{ord(a[0]):02x}{a[1:]}",
        A_swapcase=a.swapcase(),
        A_cyr=pct(cyrillic_lookalike(a)), A_cyr_raw=cyrillic_lookalike(a),
        A_fw=pct(fullwidth(a)), B_fw=pct(fullwidth(b)),
    )


