#!/usr/bin/env python3
"""A tiny todo back end that sits behind better-authz (Python standard library only).

It never looks at sessions or cookies: it trusts the identity headers that the front proxy
(Envoy or nginx) sets from better-authz's decision, exactly like a real service behind an
external-authorization proxy would.

Main port (PORT, default 8000; HOST, default 127.0.0.1):
  GET  /api/{user_id}/tasks          list the caller's tasks
  POST /api/{user_id}/tasks          {"title": "..."} -> 201 with the new task
  GET|HEAD|POST /admin/..., /reports/..., /orgs/{org_id}/..., /account/...
                                     the demo policy's areas (demo/policy.yaml): 200 with the path and
                                     who asked; better-authz decides who may
  GET  /sign-in                      the sign-in page the demo policy sends browsers to (no identity)
  OPTIONS <anything>                 204 with permissive CORS headers (so a preflight can be seen)
  - no x-user-id header              -> 401 JSON
  - more than one x-user-id header   -> 400 JSON (the proxy must overwrite, never append)
  - path user_id != x-user-id        -> 403 JSON (defence in depth; better-authz already checks)

Admin port (ADMIN_PORT, default 8001; same HOST), never exposed through the proxies:
  GET    /requests   JSON list of every request the main port received:
                     {"method", "path", "headers": [[name, value], ...]} with raw header pairs in
                     order, duplicates included
  DELETE /requests   clear that list
  GET    /healthz    {"ok": true}
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TASKS_PATH = re.compile(r"^/api/([^/]+)/tasks/?$")
# The areas of the demo policy: they only say who asked.
PAGE_PATH = re.compile(r"^/(admin|reports|account|orgs/[^/]+)(/.*)?$")
SIGN_IN_PAGE = (b"<!doctype html><title>Sign in</title><p>Sign in with POST /api/auth/sign-in/email, "
                b"then go back to the page named in callbackURL.</p>\n")
MAX_BODY = 64 * 1024
MAX_TITLE = 500

_lock = threading.Lock()
_tasks: dict[str, list[dict]] = {}
_requests: list[dict] = []


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        sys.exit(f"todo-backend: invalid {name}={raw!r}: expected a port number")
    if not 0 <= port <= 65535:
        sys.exit(f"todo-backend: invalid {name}={raw!r}: expected 0-65535")
    return port


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the proxies; every answer has Content-Length
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms
    # to every other response on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "todo-backend/1"

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code="-", size="-") -> None:
        # The path without its query: one-time tokens travel in queries, and logs are read by many.
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        self.log_message('"%s %s" %s %s', self.command, path, code, size)

    def log_message(self, fmt: str, *args) -> None:  # one line per request on stderr
        sys.stderr.write(
            "%s %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), self.__class__.__name__, fmt % args)
        )

    def _send(self, status: int, body: bytes | None, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        # Lets clients (the e2e tests) tell an answer of this back end from one made by a proxy.
        self.send_header("X-Served-By", "todo-backend")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is None:
            self.send_header("Content-Length", "0")
        else:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _read_body(self) -> bytes | None:
        """Read the request body (Content-Length or chunked). None when it is too large or malformed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    self.close_connection = True
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(n)


class AppHandler(_Base):
    def _record(self) -> None:
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "client": self.client_address[0],
            "time": time.time(),
        }
        with _lock:
            _requests.append(entry)

    def _handle(self) -> None:
        self._record()
        body = self._read_body()
        if body is None:
            return self._json(413, {"error": "request body too large or malformed"})

        if self.command == "OPTIONS":
            origin = self.headers.get("Origin", "*")
            return self._send(HTTPStatus.NO_CONTENT, None, {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers":
                    self.headers.get("Access-Control-Request-Headers", "content-type"),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            })

        path = self.path.split("?", 1)[0]
        if path == "/sign-in" and self.command in ("GET", "HEAD"):
            return self._send(200, SIGN_IN_PAGE, content_type="text/html; charset=utf-8")
        page = PAGE_PATH.match(path)
        match = TASKS_PATH.match(path)
        if not match and not page:
            return self._json(404, {"error": "not found", "path": path})
        if self.command not in ("GET", "HEAD", "POST"):
            return self._json(405, {"error": "method not allowed"}, {"Allow": "GET, POST, OPTIONS"})

        ids = self.headers.get_all("x-user-id") or []
        if not ids:
            return self._json(401, {"error": "missing x-user-id: this service must sit behind better-authz"})
        if len(ids) != 1:
            return self._json(400, {"error": "more than one x-user-id header"})
        user_id = ids[0]
        if page:
            return self._json(200, {"page": path, "user": {"id": user_id, "role": self.headers.get("x-user-role")}})
        path_user = match.group(1)
        if path_user != user_id:
            return self._json(403, {"error": "path user does not match the authenticated user"})

        if self.command in ("GET", "HEAD"):
            with _lock:
                tasks = list(_tasks.get(user_id, []))
            return self._json(200, {
                "user": {
                    "id": user_id,
                    "email": self.headers.get("x-user-email"),
                    "name": self.headers.get("x-user-name"),
                },
                "tasks": tasks,
            })

        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return self._json(400, {"error": "body must be JSON"})
        title = payload.get("title") if isinstance(payload, dict) else None
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            return self._json(400, {"error": f"title must be a non-empty string of at most {MAX_TITLE} characters"})
        task = {"id": uuid.uuid4().hex, "title": title.strip(), "done": False, "created_at": time.time()}
        with _lock:
            _tasks.setdefault(user_id, []).append(task)
        return self._json(201, task)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


class AdminHandler(_Base):
    def _handle(self) -> None:
        self._read_body()
        path = self.path.split("?", 1)[0]
        if path == "/healthz" and self.command == "GET":
            return self._json(200, {"ok": True})
        if path == "/requests":
            if self.command == "GET":
                with _lock:
                    snapshot = list(_requests)
                return self._json(200, snapshot)
            if self.command == "DELETE":
                with _lock:
                    count = len(_requests)
                    _requests.clear()
                return self._json(200, {"cleared": count})
            return self._json(405, {"error": "method not allowed"}, {"Allow": "GET, DELETE"})
        return self._json(404, {"error": "not found"})

    do_GET = do_POST = do_DELETE = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a proxy opening many upstream connections at once (Envoy at a
    # few thousand requests/s in the benchmark's cached and ceiling rows) had some refused (503 UF).
    request_queue_size = 128


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = _env_port("PORT", 8000)
    admin_port = _env_port("ADMIN_PORT", 8001)
    try:
        app = _Server((host, port), AppHandler)
        admin = _Server((host, admin_port), AdminHandler)
    except OSError as exc:
        sys.exit(f"todo-backend: cannot listen on {host}:{port} / {host}:{admin_port}: {exc}")

    threading.Thread(target=admin.serve_forever, name="admin", daemon=True).start()

    def stop(signum, _frame):
        print(f"todo-backend: signal {signum}, shutting down", flush=True)
        threading.Thread(target=app.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"todo-backend listening on http://{host}:{app.server_address[1]} "
          f"(admin http://{host}:{admin.server_address[1]})", flush=True)
    app.serve_forever()
    admin.shutdown()


if __name__ == "__main__":
    main()
