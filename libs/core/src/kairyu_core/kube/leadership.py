"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

No service's work may run twice at once (two sets of watches in the watcher; two reconciles of one
Workspace, two writers of its objects and conditions, in the others), yet a production operator
wants a standby replica that takes over in seconds. `lead` runs the work only while this process
holds the Lease, cancels it as soon as the Lease cannot be renewed within the renew deadline (a
renewal hanging on a dead connection included), and hands the Lease back on shutdown so a
rolling update does not wait for it to expire.

Expiry is judged by the local clock from the moment this process last saw the Lease change, not
from the renewTime written by another machine, so clock skew between nodes cannot make two
leaders. Every write carries the resourceVersion it read: of two candidates, one wins.

kubernetes_asyncio ships a `leaderelection` module, but it keeps renewing after the work has
crashed, lets a connection error end the election, and logs each lost race as an exception;
the protocol is small enough to write here over `KubeClient`, with its metrics and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kairyu_core.kube import errors
from kairyu_core.kube.client import JSON, KubeClient
from kairyu_core.kube.resources import LEASES
from kairyu_core.settings import LeaderElectionSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """Which Lease, who we are, and client-go's timing (15 s / 10 s / 2 s by default)."""

    name: str
    namespace: str
    identity: str
    duration_s: float = 15.0
    """A holder that has not renewed for this long has lost it."""
    renew_deadline_s: float = 10.0
    """The holder gives up (cancels its work) when it could not renew for this long."""
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("need retry_s < renew_deadline_s < duration_s")


def lease_of(settings: LeaderElectionSettings, *, service: str) -> Lease:
    """The Lease `settings` describe; named after `service` unless they name one."""
    return Lease(
        name=settings.lease_name or service,
        namespace=settings.namespace,
        identity=settings.identity,
        duration_s=settings.duration_s,
        renew_deadline_s=settings.renew_deadline_s,
        retry_s=settings.retry_s,
    )


class LeaseLostError(Exception):
    """The Lease went to another holder, or could not be renewed in time."""


async def lead(kube: KubeClient, lease: Lease, work: Callable[[], Awaitable[Any]]) -> None:
    """Run `work()` whenever this process holds `lease`; run until cancelled.

    The work is cancelled when the Lease is lost and started afresh (a new call) when it is won
    again. When the work returns or raises, `lead` hands the Lease back and returns or raises
    the same: a standby takes over.
    """
    candidate = _Candidate(kube, lease)
    try:
        while True:
            await candidate.acquire()
            log.info("%s leads %s/%s", lease.identity, lease.namespace, lease.name)
            try:
                await _while_held(candidate, work)
            except LeaseLostError as lost:
                log.warning("%s lost the lease: %s", lease.identity, lost)
                continue
            return
    finally:
        await candidate.release()


async def _while_held(candidate: _Candidate, work: Callable[[], Awaitable[Any]]) -> None:
    """The work beside the renewals; whichever ends first ends the other."""
    keeper = asyncio.create_task(candidate.keep())
    worker = asyncio.ensure_future(work())
    try:
        done, _ = await asyncio.wait({keeper, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        keeper.cancel()
        worker.cancel()
        await asyncio.gather(keeper, worker, return_exceptions=True)
    # The work's own end (or error) first; otherwise the keeper's LeaseLostError.
    (worker if worker in done else keeper).result()


class _Candidate:
    def __init__(self, kube: KubeClient, lease: Lease) -> None:
        self._kube = kube
        self._lease = lease
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last read
        self._seen_at = 0.0  # monotonic time it was first read
        self._renewed_at = 0.0  # monotonic start of the last attempt that took or renewed it

    async def acquire(self) -> None:
        while True:  # polling is the protocol: a Lease has no watchable "free" signal here
            # Losing what we held while cut off from the apiserver is news only to `keep`.
            with contextlib.suppress(LeaseLostError):
                if await self._try():
                    return
            await asyncio.sleep(self._lease.retry_s)

    async def keep(self) -> None:
        """Renew every retry interval; raise LeaseLostError when not renewed within the deadline.

        The deadline counts from the start of the last renewal that succeeded (the apiserver
        wrote it after that moment; the others count the Lease's duration from when they read
        it, later still), and a renewal still in flight at the deadline is abandoned: a request
        hanging on a half-open connection must not keep the work going while a standby, seeing
        no renewals, takes over (two leaders).
        """
        deadline_s = self._lease.renew_deadline_s
        while True:
            await asyncio.sleep(self._lease.retry_s)
            left = self._renewed_at + deadline_s - time.monotonic()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    if await self._try():
                        continue
            except TimeoutError:
                raise LeaseLostError(f"renewal still pending after {deadline_s:.0f} s") from None
            if time.monotonic() - self._renewed_at > deadline_s:
                raise LeaseLostError(f"not renewed for {deadline_s:.0f} s")

    async def release(self) -> None:
        """Hand the Lease back so a standby need not wait for it to expire (best effort)."""
        try:
            # Bounded: a shutdown must not wait on a hung apiserver; the Lease expires anyway.
            async with asyncio.timeout(self._lease.renew_deadline_s):
                current = await self._get()
                if current is None or _spec(current).get("holderIdentity") != self._lease.identity:
                    return
                spec = {**_spec(current), "holderIdentity": None, "leaseDurationSeconds": 1}
                current["spec"] = spec
                await self._put(current)
        except (errors.KubeError, TimeoutError) as exc:
            log.info("could not hand back the lease: %r", exc)

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; True while we hold it."""
        lease, me = self._lease, self._lease.identity
        started = time.monotonic()
        try:
            current = await self._get()
            now = _micro_time()
            if current is None:
                await self._kube.request(
                    "POST",
                    LEASES.path(namespace=lease.namespace),
                    body={
                        "apiVersion": LEASES.api_version,
                        "kind": LEASES.kind,
                        "metadata": {"name": lease.name, "namespace": lease.namespace},
                        "spec": self._held_since(now, transitions=0),
                    },
                )
                return True
            spec = _spec(current)
            holder = spec.get("holderIdentity") or ""
            was_mine = self._held()
            if holder and holder != me and not self._expired(holder, spec):
                if was_mine:
                    raise LeaseLostError(f"now held by {holder}")
                return False
            if holder == me:
                current["spec"] = {**spec, "renewTime": now}
            else:
                transitions = int(spec.get("leaseTransitions") or 0) + 1
                current["spec"] = self._held_since(now, transitions=transitions)
            await self._put(current)
        except (errors.ConflictError, errors.UnavailableError) as exc:
            log.debug("lease attempt failed: %s", exc)
            return False
        self._seen = (me, now)
        self._seen_at = time.monotonic()
        self._renewed_at = started
        return True

    def _held(self) -> bool:
        return self._seen is not None and self._seen[0] == self._lease.identity

    def _expired(self, holder: str, spec: JSON) -> bool:
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self._lease.duration_s)
        return time.monotonic() - self._seen_at > duration

    def _held_since(self, now: str, *, transitions: int) -> JSON:
        return {
            "holderIdentity": self._lease.identity,
            "leaseDurationSeconds": round(self._lease.duration_s),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _get(self) -> JSON | None:
        try:
            return await self._kube.get(LEASES, self._lease.name, namespace=self._lease.namespace)
        except errors.NotFoundError:
            return None

    async def _put(self, lease: JSON) -> None:
        # PUT with the resourceVersion just read: a concurrent writer makes this a 409.
        await self._kube.request(
            "PUT",
            LEASES.path(namespace=self._lease.namespace, name=self._lease.name),
            body=lease,
        )


def _spec(lease: JSON) -> JSON:
    spec: JSON = lease.get("spec") or {}
    return spec


def _micro_time() -> str:
    """metav1.MicroTime, as the Lease's time fields are written."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
