"""The design better-authz replaces (benchmark row 4): the session check as a FastAPI dependency.

Every protected route depends on `current_user`, which forwards the request's Cookie header to
Better Auth's `GET /api/auth/get-session` with one shared `httpx.AsyncClient` (kept-alive
connections) and returns the user, or answers 401 / 503 itself. The route is the todo back end's
`GET /api/{user_id}/tasks` (same JSON shape), so the work after the check is comparable.

Run (bench/run.sh does this, from .tools/bench-venv):
    BETTER_AUTH_URL=http://127.0.0.1:3000 uvicorn fastapi_app:app --app-dir bench \
        --host 127.0.0.1 --port 8100 --loop uvloop --http httptools

Environment:
    BETTER_AUTH_URL          Better Auth base URL (required)
    SESSION_TIMEOUT_MS       deadline for one get-session call (default 1000, like the benchmark's better-authz)
    SESSION_POOL_SIZE        kept-alive connections to Better Auth (default 64, like better-authz's pool)
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request

BETTER_AUTH_URL = os.environ["BETTER_AUTH_URL"].rstrip("/")
SESSION_URL = f"{BETTER_AUTH_URL}/api/auth/get-session"
TIMEOUT = int(os.environ.get("SESSION_TIMEOUT_MS", "1000")) / 1000
POOL = int(os.environ.get("SESSION_POOL_SIZE", "64"))

_client: httpx.AsyncClient | None = None
_tasks: dict[str, list[dict]] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI):
    global _client
    _client = httpx.AsyncClient(
        timeout=TIMEOUT,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
    )
    try:
        yield
    finally:
        await _client.aclose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


async def current_user(request: Request) -> dict:
    """The user of the request's Better Auth session, or 401/503."""
    cookie = request.headers.get("cookie")
    if not cookie:
        raise HTTPException(status_code=401, detail="sign in to get a valid session")
    # What better-authz sends too: the browser's User-Agent and the client address (Better Auth's
    # session records and rate limiter use them).
    headers = {"cookie": cookie, "accept": "application/json"}
    if "user-agent" in request.headers:
        headers["user-agent"] = request.headers["user-agent"]
    if request.client is not None:
        headers["x-forwarded-for"] = request.client.host
    try:
        response = await _client.get(SESSION_URL, headers=headers)
    except httpx.HTTPError:
        raise HTTPException(status_code=503, detail="authentication service unavailable") from None
    if response.status_code in (429,) or response.status_code >= 500:
        raise HTTPException(status_code=503, detail="authentication service unavailable")
    if response.status_code == 401:
        raise HTTPException(status_code=401, detail="sign in to get a valid session")
    if response.status_code != 200:
        raise HTTPException(status_code=500, detail="unexpected answer from the authentication service")
    try:
        data = response.json()
    except ValueError:
        raise HTTPException(status_code=500, detail="unexpected answer from the authentication service") from None
    if not data or not isinstance(data.get("user"), dict) or not data["user"].get("id"):
        raise HTTPException(status_code=401, detail="sign in to get a valid session")
    return data["user"]


@app.get("/api/{user_id}/tasks")
async def list_tasks(user_id: str, user: dict = Depends(current_user)) -> dict:
    if user["id"] != user_id:
        raise HTTPException(status_code=403, detail="the session does not grant access to this resource")
    return {
        "user": {"id": user["id"], "email": user.get("email"), "name": user.get("name")},
        "tasks": list(_tasks.get(user_id, [])),
    }


@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}
