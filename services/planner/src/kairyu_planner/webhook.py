"""The validating admission webhook for kaito.sh objects, over TLS (AdmissionReview v1).

The apiserver posts every Workspace, InferenceSet and MultiRoleInference CREATE and UPDATE here;
`validation.validate` decides for a Workspace, and for the Workspaces the others would make. An
object the models cannot read is refused with the reason rather than crashing the handler, and
warnings (reserved labels) travel back to kubectl.

With `failurePolicy: Fail` this webhook can block every Workspace write in the cluster, finalizer
removal included, so it must stay up and must not refuse what it need not judge:
- an UPDATE that changes only metadata or status is admitted without reading the object (a
  Workspace valid when created but not under new settings can still lose its finalizer, also
  while it is being deleted); an UPDATE that changes the spec gets the UPDATE checks (immutable
  fields, pod safety) even while the Workspace is being deleted, since its finalizer may keep it,
  and the pods built from its spec, alive for a while;
- the serving certificate is read again when its files change (cert-manager renews it in place);
- it serves its own `/readyz` over TLS, for the pod's readiness probe, which answers while this
  listener does: a NATS outage does not take the webhook's endpoints away, and `__main__` starts
  the listener before it connects to NATS or the apiserver.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from kairyu_contracts.api import Workspace, parse_workspace
from kairyu_contracts.api.inferenceset import INFERENCESET_KIND, MAX_NAME, parse_inferenceset
from kairyu_contracts.api.multiroleinference import MULTIROLE_KIND, parse_multirole
from kairyu_planner.inferencesets import child_manifest
from kairyu_planner.multiroles import multirole_errors, role_set
from kairyu_planner.validation import Verdict, validate

Validator = Callable[[Workspace, Workspace | None], Verdict]

log = logging.getLogger(__name__)

PATH = "/validate/workspace.kaito.sh"
_MAX_MESSAGE = 4096  # the apiserver shows the message to the user; keep it readable


# Top-level keys that are not the Workspace's spec (KAITO has no `spec:`; resource, inference and
# tuning sit at the top level). apiVersion differs when the same object is written through the
# other served version.
_NOT_SPEC = frozenset({"apiVersion", "kind", "metadata", "status"})


def _spec_unchanged(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    return {k: v for k, v in new.items() if k not in _NOT_SPEC} == {
        k: v for k, v in old.items() if k not in _NOT_SPEC
    }


def _admit_without_checks(req: Mapping[str, Any]) -> bool:
    """An UPDATE that leaves the spec as it was (finalizers, labels, status), deleting or not."""
    new, old = req.get("object"), req.get("oldObject")
    if req.get("operation") != "UPDATE" or not isinstance(new, dict) or not isinstance(old, dict):
        return False
    return _spec_unchanged(new, old)


def review(request: dict[str, Any], validator: Validator = validate) -> dict[str, Any]:
    """The AdmissionReview response for one AdmissionReview request."""
    req = request.get("request") or {}
    uid = req.get("uid", "")
    if _admit_without_checks(req):
        allowed = {"uid": uid, "allowed": True}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": allowed}
    kind = (req.get("object") or {}).get("kind") if isinstance(req.get("object"), dict) else None
    try:
        if kind == INFERENCESET_KIND:
            verdict = _review_set(req, validator)
        elif kind == MULTIROLE_KIND:
            verdict = _review_multirole(req, validator)
        else:
            new = parse_workspace(req["object"])
            old = (
                parse_workspace(req["oldObject"])
                if req.get("operation") == "UPDATE" and req.get("oldObject")
                else None
            )
            verdict = validator(new, old)
    except (KeyError, ValidationError) as exc:
        verdict = Verdict(errors=[f"cannot read the {kind or 'Workspace'}: {exc}"])
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


def _review_set(req: Mapping[str, Any], validator: Validator) -> Verdict:
    """An InferenceSet is judged as the Workspace its template makes (KAITO v0.12)."""
    obj = req["object"]
    parse_inferenceset(obj)
    old = req.get("oldObject") if req.get("operation") == "UPDATE" else None
    return _judge_template(obj, old if isinstance(old, dict) else None, validator, "spec.template")


def _judge_template(
    obj: dict[str, Any], old: dict[str, Any] | None, validator: Validator, where: str
) -> Verdict:
    """The InferenceSet `obj` judged as the Workspace its template makes.

    On CREATE, and on an UPDATE that changes the template (the next replica is made from it),
    every Workspace rule applies; on other UPDATEs (a replica count, a selector) only the safety
    rules, so a set admitted under older settings stays editable.
    """
    name = f"{str((obj.get('metadata') or {}).get('name', 'set'))[:MAX_NAME]}-check"
    child = child_manifest({**obj, "metadata": {"uid": "", **(obj.get("metadata") or {})}}, name)
    child["metadata"].pop("ownerReferences", None)
    workspace = parse_workspace(child)
    same_template = old is not None and (old.get("spec") or {}).get("template") == (
        obj.get("spec") or {}
    ).get("template")
    verdict = validator(workspace, workspace if same_template else None)
    return Verdict(
        errors=[f"{where}: {e}" for e in verdict.errors],
        warnings=[f"{where}: {w}" for w in verdict.warnings],
    )


def _review_multirole(req: Mapping[str, Any], validator: Validator) -> Verdict:
    """KAITO's MultiRoleInference rules, then each role judged as the Workspaces it makes."""
    obj = req["object"]
    parse_multirole(obj)
    old = req.get("oldObject") if req.get("operation") == "UPDATE" else None
    old = old if isinstance(old, dict) else None
    errors = multirole_errors(obj, old)
    if errors:
        return Verdict(errors=errors)
    meta = {"uid": "", **(obj.get("metadata") or {})}
    parent = {**obj, "metadata": meta}
    before = {r.get("type"): r for r in (old.get("spec") or {}).get("roles") or []} if old else {}
    verdict = Verdict()
    for role in (obj.get("spec") or {}).get("roles") or []:
        kind = str(role.get("type"))
        previous = (
            role_set({**old, "metadata": meta}, before[kind])
            if old is not None and kind in before
            else None
        )
        judged = _judge_template(role_set(parent, role), previous, validator, f"spec.roles[{kind}]")
        verdict.errors += judged.errors
        verdict.warnings += judged.warnings
    return verdict


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
    # Readiness of the webhook alone: answering here over TLS is what the apiserver needs.
    app.router.add_get("/readyz", _health)
    return app


class ServingCertificate:
    """A TLS server context whose certificate is read again when its files change.

    Checked at every TLS handshake (two stat calls): a renewed certificate is served from the next
    connection on, with no timer to wait for and no restart. A Secret volume is updated by swapping
    a symlink, so the files never appear half-written; should a pair fail to load all the same
    (a key that does not match yet), the previous certificate stays in use and the load is tried
    again at the next handshake at least `RETRY_S` later, until it succeeds.
    """

    RETRY_S = 1.0
    """A pair that fails to load is tried again at most this often (a handshake each time)."""

    def __init__(
        self, cert: Path, key: Path, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cert = cert
        self._key = key
        self._clock = clock
        self._stamp = self._files_stamp()
        self._current = self._load()
        self._failed_at = -math.inf
        self.context = self._current
        """The context to listen with; its handshakes switch to the newest certificate."""
        self.context.sni_callback = self._on_client_hello

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [os.stat(self._cert), os.stat(self._key)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_ino, s.st_size) for s in stats)

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self._cert), str(self._key))
        return context

    def current(self) -> ssl.SSLContext:
        """The context of the certificate now on disk (loaded again if the files changed)."""
        stamp = self._files_stamp()
        if stamp is None or stamp == self._stamp:
            return self._current
        # The stamp is kept only once the pair has loaded: a pair that fails (the key written
        # after the certificate, a file half-copied) is tried again, though at most once a second.
        now = self._clock()
        if now - self._failed_at < self.RETRY_S:
            return self._current
        try:
            self._current = self._load()
        except (OSError, ssl.SSLError) as exc:
            self._failed_at = now
            log.warning("cannot load the renewed webhook certificate, keeping the old: %s", exc)
        else:
            self._stamp = stamp
            self._failed_at = -math.inf
            log.info("webhook certificate reloaded from %s", self._cert)
        return self._current

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        current = self.current()
        if current is not connection.context:
            connection.context = current


async def serve(
    *, host: str, port: int, cert: Path, key: Path, validator: Validator = validate
) -> web.AppRunner:
    """Start serving; the caller stops it with `await runner.cleanup()`."""
    tls = ServingCertificate(cert, key)
    runner = web.AppRunner(application(validator), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls.context).start()
    log.info("admission webhook listening on https://%s:%d%s", host, port, PATH)
    return runner
