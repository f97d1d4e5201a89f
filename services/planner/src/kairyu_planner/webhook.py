"""The validating admission webhook for Workspaces, served over TLS (AdmissionReview v1).

The apiserver posts every Workspace CREATE and UPDATE here; `validation.validate` decides. An
object the models cannot read is refused with the reason rather than crashing the handler, and
warnings (reserved labels) travel back to kubectl.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from kairyu_core.api import Workspace, parse_workspace
from kairyu_planner.validation import Verdict, validate

Validator = Callable[[Workspace, Workspace | None], Verdict]

log = logging.getLogger(__name__)

PATH = "/validate/workspace.kaito.sh"
_MAX_MESSAGE = 4096  # the apiserver shows the message to the user; keep it readable


def review(request: dict[str, Any], validator: Validator = validate) -> dict[str, Any]:
    """The AdmissionReview response for one AdmissionReview request."""
    req = request.get("request") or {}
    uid = req.get("uid", "")
    try:
        new = parse_workspace(req["object"])
        old = (
            parse_workspace(req["oldObject"])
            if req.get("operation") == "UPDATE" and req.get("oldObject")
            else None
        )
        verdict = validator(new, old)
    except (KeyError, ValidationError) as exc:
        verdict = Verdict(errors=[f"cannot read the Workspace: {exc}"])
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if verdict.warnings:
        response["warnings"] = verdict.warnings
    if not verdict.allowed:
        response["status"] = {
            "code": 422,
            "reason": "Invalid",
            "message": "; ".join(verdict.errors)[:_MAX_MESSAGE],
        }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


_VALIDATOR: web.AppKey[Validator] = web.AppKey("validator")


async def _handle(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "expected an AdmissionReview in JSON"}, status=400)
    return web.json_response(review(body, request.app[_VALIDATOR]))


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def application(validator: Validator = validate) -> web.Application:
    app = web.Application(client_max_size=3 * 1024 * 1024)  # the apiserver's own object size limit
    app[_VALIDATOR] = validator
    app.router.add_post(PATH, _handle)
    app.router.add_get("/healthz", _health)
    return app


async def serve(
    *, host: str, port: int, cert: Path, key: Path, validator: Validator = validate
) -> web.AppRunner:
    """Start serving; the caller stops it with `await runner.cleanup()`."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(application(validator), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    log.info("admission webhook listening on https://%s:%d%s", host, port, PATH)
    return runner
