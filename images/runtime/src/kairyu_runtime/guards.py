"""What stands between a caller and the model: the API key, the body limit, and error shapes.

These are plain ASGI middlewares rather than FastAPI dependencies so that they act before any
route reads the body: an unauthenticated caller is refused before a byte of its body is read,
and an oversized body is refused (413) after reading at most one byte more than the limit,
whatever Content-Length claims. Every refusal is in the caller's protocol's error shape, the
same one the handlers use (OpenAI's {"error": {...}}, KServe's {"error": "..."}, FastAPI's
{"detail": ...} for KAITO's endpoints).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes and scraping stay open: the kubelet and Prometheus have no key (docs/runtime.md).
OPEN_PATHS = frozenset({"/health", "/metrics", "/v2/health/live", "/v2/health/ready"})
# vLLM's: the deployer's probes use /health, SageMaker's /ping is a health check, /metrics is
# Prometheus. All else (/invocations, /pooling, /score, /tokenize, /version, …) needs the key.
VLLM_OPEN_PATHS = frozenset({"/health", "/ping", "/metrics"})
# Where the vLLM middleware finds its key: the wrapper copies kairyu's into VLLM_API_KEY.
KEY_VARIABLES = ("VLLM_API_KEY", "KAIRYU_RUNTIME_API_KEY")
CLIENT_GONE = 499  # nginx's "client closed request": only ever seen in /metrics


class ApiError(Exception):
    """A refusal with its HTTP status, answered in the caller's protocol's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def error_body(path: str, status: int, message: str, code: str | None = None) -> object:
    if path.startswith("/v1/"):
        kind = "not_found_error" if status == 404 else "invalid_request_error"  # noqa: PLR2004
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if path.startswith("/v2"):
        return {"error": message}
    return {"detail": message}


async def send_error(send: Send, path: str, err: ApiError) -> None:
    body = json.dumps(error_body(path, err.status, err.message, err.code)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in err.headers.items()),
    ]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def bearer_matches(authorization: str | None, key: str) -> bool:
    """`Authorization: Bearer <key>`, compared in constant time."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key.encode())


class ApiKey:
    """Refuses (401) every call but the probes and /metrics without the configured key."""

    open_paths = OPEN_PATHS

    def __init__(self, app: ASGIApp, *, key: str) -> None:
        if not key:
            raise ValueError("an empty API key would let every caller in")
        self.app = app
        self._key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not bearer_matches(
            _header(scope, b"authorization"), self._key
        ):
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if bearer_matches(_header(scope, b"authorization"), self._key):
            await self.app(scope, receive, send)
            return
        refusal = ApiError(
            401,
            "missing or wrong API key: send `Authorization: Bearer <key>`",
            "invalid_api_key",
            {"WWW-Authenticate": "Bearer"},
        )
        await send_error(send, scope["path"], refusal)


class VllmApiKey(ApiKey):
    """vLLM's `--middleware`: the same key check in front of every vLLM route, deny by default.

    vLLM's own VLLM_API_KEY check covers only /v1/*, while /invocations, /pooling, /score,
    /rerank, /tokenize and more answer anyone. vLLM adds a middleware class with
    `app.add_middleware(cls)` and no arguments, so the key is read from the environment here, at
    construction; with none set it refuses to start rather than run open.
    """

    open_paths = VLLM_OPEN_PATHS

    def __init__(self, app: ASGIApp) -> None:
        key = next((os.environ[name] for name in KEY_VARIABLES if os.environ.get(name)), "")
        if not key:
            raise RuntimeError(
                f"kairyu's vLLM API key middleware needs one of {', '.join(KEY_VARIABLES)}"
            )
        super().__init__(app, key=key)


class BodyLimit:
    """Reads the whole body up to `limit` bytes before the app runs, and replays it (413 above).

    The route then sees the body in one message; later receives go to the server, so a
    handler can still notice that the client went away.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        too_large = ApiError(
            413, f"the request body is larger than {self._limit} bytes", "request_too_large"
        )
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._limit:
            await send_error(send, path, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self._limit:
                await send_error(send, path, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
