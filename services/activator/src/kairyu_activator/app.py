"""The activator's state and reconcile: each autoscaled set's Service, its cold slice, its load.

Reconcile keys are the sets' (`InferenceSet/<namespace>/<name>`); a change of a child Workspace
or of one of its pods wakes its set. For an autoscaled set (kairyu_contracts.api.inferenceset
`autoscaled`) the reconcile applies the set's Service when it differs from what this process
applied last, and keeps the `<set>-activator` EndpointSlice exactly while no pod of the set is
ready (kairyu_activator.routing). Nothing is read from the apiserver: the view has the sets, the
Workspaces and the pods.

`load` is what KEDA reads: the sum of one vLLM gauge over the set's ready pods, asked from each
pod's `/metrics`, plus the requests that reached the activator while the set had none
(kairyu_activator.load).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp

from kairyu_activator.load import Demand, MetricsFormatError, gauge_sum
from kairyu_activator.routing import (
    SLICE_SUFFIX,
    activator_slice,
    ready_addresses,
    set_key,
    set_of_host,
    set_service,
)
from kairyu_activator.settings import ActivatorHttpSettings
from kairyu_contracts.api.inferenceset import autoscaled
from kairyu_contracts.labels import INFERENCESET_LABEL
from kairyu_contracts.objectstate import parent_of
from kairyu_core.bus import TemporaryError
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_core.view import View

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_RETRY_S = 2.0
_LIMIT = 10_000  # sets whose applied objects are remembered
_TAKEN_RETRY_S = 60.0  # a set whose Service name is taken: look again
_METRICS_MAX = 1 << 20  # bytes of a pod's /metrics read; a larger answer counts as nothing


def pod_url(runtime_port: int) -> Callable[[str], str]:
    """How a pod's runtime is reached: `http://<pod IP>:<port>` (tests reach stand-ins)."""
    return lambda ip: f"http://{ip}:{runtime_port}"


class Activator:
    """One set's Service, slice, demand and load, from the view."""

    def __init__(
        self,
        *,
        settings: ActivatorHttpSettings,
        kube: KubeClient,
        view: View,
        field_manager: str,
        address_of: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._view = view
        self._field_manager = field_manager
        self._address_of = address_of or pod_url(settings.runtime_port)
        self._clock = clock
        self._applied: dict[str, str] = {}  # set uid → digest of the Service applied
        self._cold: dict[str, bool] = {}  # set uid → whether its activator slice is there
        self._demand: defaultdict[str, Demand] = defaultdict(
            lambda: Demand(window_s=settings.demand_window_s)
        )
        self._scraped: dict[tuple[str, str], tuple[float, float]] = {}  # (ip, metric) → (t, v)
        self._session: aiohttp.ClientSession | None = None
        self.port = settings.port
        """The data port the slices name (the one actually bound, once serving)."""

    # ------------------------------------------------------------------ reconcile
    def _set_key_of(self, key: str) -> str | None:
        if key.startswith("InferenceSet/"):
            return key
        workspace = self._view.workspace(key)
        if workspace is not None:
            return parent_of("Workspace", workspace)
        for pod in self._view.owned("Pod", key):  # the Workspace went before its pods
            meta = pod.get("metadata") or {}
            name = (meta.get("labels") or {}).get(INFERENCESET_LABEL)
            if name:
                return set_key(str(meta.get("namespace")), str(name))
        return None

    def pods_of(self, key: str) -> list[JSON]:
        """The pods of every replica (child Workspace) of the set `key`."""
        pods: list[JSON] = []
        for child in self._view.members(key):
            meta = child["metadata"]
            pods += self._view.owned("Pod", f"{meta['namespace']}/{meta['name']}")
        return pods

    def ready(self, key: str) -> list[str]:
        namespace_name = key.removeprefix("InferenceSet/")
        return ready_addresses(self.pods_of(key), namespace_name.partition("/")[2])

    async def reconcile(self, key: str) -> float | None:
        skey = self._set_key_of(key)
        if skey is None:
            return None
        inference_set = self._view.parent(skey)
        if inference_set is None or inference_set["metadata"].get("deletionTimestamp"):
            self._demand.pop(skey, None)
            return None  # its Service and slice go with it (owner references)
        meta = inference_set["metadata"]
        uid = str(meta.get("uid") or "")
        try:
            if not autoscaled(inference_set):
                self._demand.pop(skey, None)
                if self._cold.get(uid, True):  # it may have been autoscaled (before a restart)
                    await self._drop_slice(inference_set, uid)
                return None
            if not await self._apply_service(inference_set, uid):
                # Someone else's Service of that name: no slice is added to it, ever.
                if self._cold.get(uid, True):
                    await self._drop_slice(inference_set, uid)
                return _TAKEN_RETRY_S
            if self.ready(skey):
                self._demand.pop(skey, None)  # served: its load is its pods' now
                if self._cold.get(uid, True):
                    await self._drop_slice(inference_set, uid)
            elif self._settings.address and not self._cold.get(uid, False):
                body = activator_slice(inference_set, self._settings.address, self.port)
                await self._kube.apply(
                    resources.ENDPOINTSLICES, body, field_manager=self._field_manager
                )
                self._remember(self._cold, uid, True)
                log.info("%s: no ready pod, its Service sends requests to the activator", skey)
        except errors.KubeError as exc:
            raise TemporaryError(f"cannot reconcile {skey}: {exc}", delay=_RETRY_S) from exc
        return None

    async def _apply_service(self, inference_set: JSON, uid: str) -> bool:
        """Apply the set's Service if it changed; False when the name is someone else's."""
        body = set_service(inference_set, self._settings.runtime_port)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self._applied.get(uid) == digest:
            return True
        meta = inference_set["metadata"]
        try:
            await self._kube.apply(
                resources.SERVICES, body, field_manager=self._field_manager, force=False
            )
        except errors.ConflictError:
            # Someone else's Service of that name (a Workspace named like the set): left alone.
            log.warning(
                "%s/%s: Service %s is not this set's; the set has no Service of its own",
                meta["namespace"],
                meta["name"],
                meta["name"],
            )
            return False
        self._remember(self._applied, uid, digest)
        return True

    async def _drop_slice(self, inference_set: JSON, uid: str) -> None:
        meta = inference_set["metadata"]
        try:
            await self._kube.delete(
                resources.ENDPOINTSLICES, meta["name"] + SLICE_SUFFIX, namespace=meta["namespace"]
            )
            log.info(
                "%s/%s: ready, its Service serves from its pods", meta["namespace"], meta["name"]
            )
        except errors.NotFoundError:
            pass
        self._remember(self._cold, uid, False)

    @staticmethod
    def _remember(memory: dict[str, Any], uid: str, value: Any) -> None:
        memory[uid] = value
        if len(memory) > _LIMIT:
            del memory[next(iter(memory))]

    # ------------------------------------------------------------------ requests
    def holds(self, key: str) -> bool:
        """Whether the view holds the set `key`."""
        return self._view.parent(key) is not None

    def set_for_host(self, host: str) -> str | None:
        """The key of the set a request's Host names, if the view holds it."""
        names: defaultdict[str, set[str]] = defaultdict(set)
        for inference_set in self._view.all("InferenceSet"):
            meta = inference_set["metadata"]
            names[meta["name"]].add(meta["namespace"])
        return set_of_host(host, names)

    def knock(self, key: str) -> bool:
        """A request for the set `key` reached the activator; whether the set is cold.

        While it is, the request counts as the set's load until a pod is ready or the demand
        window passes, so KEDA's next poll activates the set.
        """
        if self.ready(key):
            return False
        self._demand[key].add(self._clock())
        return True

    async def load(self, key: str, metric: str) -> float:
        """The set's load: `metric` summed over its ready pods, plus the requests waiting."""
        addresses = self.ready(key)
        values = await asyncio.gather(*(self._scrape(ip, metric) for ip in addresses))
        demand = self._demand.get(key)
        # At most one: requests at zero ask for a replica, not for as many as they are, so a
        # flood of them (or a client retrying) cannot order more GPU nodes than one; once a pod
        # serves, its own queue says how many more.
        waiting = min(demand.count(self._clock()), 1) if demand is not None else 0
        return sum(values) + waiting

    async def _scrape(self, ip: str, metric: str) -> float:
        now = self._clock()
        cached = self._scraped.get((ip, metric))
        if cached is not None and now - cached[0] < self._settings.scrape_ttl_s:
            return cached[1]
        if self._session is None:
            # No kept-alive connections: pods come and go (a pool would hold sockets to pods
            # long gone), and one read per pod per KEDA poll costs nothing to connect anew.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.scrape_timeout_s),
                connector=aiohttp.TCPConnector(force_close=True),
            )
        value = 0.0
        try:
            async with self._session.get(f"{self._address_of(ip)}/metrics") as response:
                response.raise_for_status()
                # Bounded: a pod runs the user's image, whose /metrics may be anything.
                body = await response.content.read(_METRICS_MAX + 1)
                if len(body) <= _METRICS_MAX:
                    value = gauge_sum(body.decode("utf-8"), metric)
        except (aiohttp.ClientError, TimeoutError, MetricsFormatError, UnicodeDecodeError) as exc:
            log.debug("pod %s: no %s (%s)", ip, metric, exc)
        self._scraped[(ip, metric)] = (now, value)
        if len(self._scraped) > _LIMIT:
            del self._scraped[next(iter(self._scraped))]
        return value

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
