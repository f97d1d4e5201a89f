"""A watch that does not lose updates: list, watch from the list's resourceVersion, and recover.

- The stream ends (server timeout, apiserver restart, network error): watch again from the last
  resourceVersion seen, after a backoff while the apiserver is unreachable.
- 410 Gone (that resourceVersion was compacted away): re-list, and emit what changed since the last
  known state of each object, including DELETED for objects that disappeared meanwhile. A consumer
  therefore always ends on the latest state, whatever happened while the watch was broken.
- The stream goes silent (a half-open connection looks exactly like a quiet cluster): the watch
  asks for bookmarks, which the apiserver sends about every minute, and a stream with neither an
  event nor a bookmark for the client's `watch_idle_s` is dropped and resumed like a broken one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from kairyu_core.kube import errors
from kairyu_core.kube.client import JSON, METADATA_WATCH, KubeClient
from kairyu_core.kube.resources import Resource

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
_WATCH_TIMEOUT_S = 300  # the server closes each watch after this; we resume from the last version
_MAX_BACKOFF_S = 30.0
_PAGE = 500  # objects per list request (client-go's informers list 500 at a time too)


@dataclass(frozen=True)
class WatchEvent:
    """One change of one object; `object` is its latest state (its last state for DELETED)."""

    type: EventType
    object: JSON

    @property
    def key(self) -> str:
        meta = self.object["metadata"]
        return f"{meta.get('namespace', '')}/{meta['name']}"


async def watch(
    client: KubeClient,
    resource: Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
    since: str | None = None,
    timeout_s: int = _WATCH_TIMEOUT_S,
    known: dict[str, JSON] | None = None,
    remember: Callable[[JSON], JSON] | None = None,
    metadata_only: bool = False,
    listed: asyncio.Event | None = None,
    unavailable: asyncio.Event | None = None,
) -> AsyncGenerator[WatchEvent, None]:
    """Yield every change of the selected objects, forever (cancel the consumer to stop).

    Starts with a list (every object ADDED) unless `since` gives a resourceVersion to resume from.
    `known` (`namespace/name` → object with its resourceVersion) is what the caller already
    knows: the first list then yields only what differs from it, DELETED for what is gone.
    The last state of every object is kept, to tell a re-list's news from what was yielded and
    to yield DELETED with it; `remember` (which must keep metadata.resourceVersion) cuts what is
    kept to what the caller needs of a deleted object: whole pods and nodes, thousands of them,
    would be most of a watcher's memory. With `metadata_only` each object comes as its metadata
    alone (PartialObjectMetadata). `listed` is set once the first list's changes were yielded;
    `unavailable` when a list is refused as not found before that (the API is not served: a CRD
    not installed), while the watch keeps trying.
    """
    keep = remember or (lambda obj: obj)
    known = dict(known or {})  # key -> last object yielded, as `remember` keeps it
    resource_version: str | None = since
    failures = 0
    ever = False  # listed once
    while True:
        try:
            if resource_version is None:
                listed_at: list[str] = []
                async with contextlib.aclosing(
                    _relist(
                        client,
                        resource,
                        namespace=namespace,
                        label_selector=label_selector,
                        metadata_only=metadata_only,
                        known=known,
                        keep=keep,
                        listed_at=listed_at,
                    )
                ) as changes:
                    async for change in changes:
                        yield change
                resource_version = listed_at[-1]
            ever = True
            if listed is not None:
                listed.set()
            # Closed with this generator (aclosing): a consumer stopped while it handles an
            # event must not leave the stream's connection to the garbage collector.
            stream = _stream(
                client,
                resource,
                namespace=namespace,
                label_selector=label_selector,
                resource_version=resource_version,
                timeout_s=timeout_s,
                accept=METADATA_WATCH if metadata_only else "application/json",
            )
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    failures = 0
                    if event.get("type") == "BOOKMARK":
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        continue
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    key = WatchEvent("ADDED", obj).key
                    if event["type"] == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = keep(obj)
                    yield WatchEvent(event["type"], obj)
        except errors.GoneError:
            log.info("watch of %s expired (410 Gone); re-listing", resource.plural)
            resource_version = None
        except errors.KubeError as exc:
            if isinstance(exc, errors.NotFoundError) and unavailable is not None and not ever:
                unavailable.set()
            failures += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2**failures)
            log.warning("watch of %s failed (%s); retrying in %.1fs", resource.plural, exc, delay)
            await asyncio.sleep(delay)


async def _relist(
    client: KubeClient,
    resource: Resource,
    *,
    namespace: str | None,
    label_selector: str | None,
    metadata_only: bool,
    known: dict[str, JSON],
    keep: Callable[[JSON], JSON],
    listed_at: list[str],
) -> AsyncGenerator[WatchEvent, None]:
    """List in pages and yield what changed since `known`; the list's version goes to `listed_at`.

    In pages, so that a list of every ConfigMap of a large cluster is never held whole; all pages
    are of one snapshot (the apiserver's continue token), and an expired token (410) makes the
    caller list again.
    """
    seen: set[str] = set()
    token: str | None = None
    while True:
        page = await client.list(
            resource,
            namespace=namespace,
            label_selector=label_selector,
            metadata_only=metadata_only,
            limit=_PAGE,
            continue_token=token,
        )
        # An empty metadata-only list says `"items": null`.
        for change in _diff(known, page.get("items") or [], resource, keep, seen):
            yield change
        token = page["metadata"].get("continue") or None
        if token is None:
            break
    for key in set(known) - seen:  # gone while this watch was away
        yield WatchEvent("DELETED", known.pop(key))
    listed_at.append(page["metadata"]["resourceVersion"])


def _diff(
    known: dict[str, JSON],
    items: list[JSON],
    resource: Resource,
    keep: Callable[[JSON], JSON],
    seen: set[str],
) -> list[WatchEvent]:
    """Events that bring a consumer from `known` to one listed page; updates `known` and `seen`.

    What is gone shows only once every page is in (`seen` then lacks it).
    """
    events: list[WatchEvent] = []
    for item in items:
        item.setdefault("apiVersion", resource.api_version)
        item.setdefault("kind", resource.kind)
        key = WatchEvent("ADDED", item).key
        seen.add(key)
        previous = known.get(key)
        if previous is None:
            events.append(WatchEvent("ADDED", item))
        elif previous["metadata"]["resourceVersion"] != item["metadata"]["resourceVersion"]:
            events.append(WatchEvent("MODIFIED", item))
        known[key] = keep(item)
    return events


async def _stream(
    client: KubeClient,
    resource: Resource,
    *,
    namespace: str | None,
    label_selector: str | None,
    resource_version: str,
    timeout_s: int,
    accept: str,
) -> AsyncGenerator[dict[str, Any], None]:
    query: dict[str, str | int | bool] = {
        "watch": True,
        "resourceVersion": resource_version,
        "allowWatchBookmarks": True,
        "timeoutSeconds": timeout_s,
    }
    if label_selector:
        query["labelSelector"] = label_selector
    response = await client.request(
        "GET", resource.path(namespace=namespace), query=query, accept=accept, stream=True
    )
    idle_s = client.timeouts.watch_idle_s
    ended = False
    try:
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    line = await response.content.readline()
            except TimeoutError as exc:
                raise errors.UnavailableError(
                    f"watch of {resource.plural} silent for {idle_s:.0f} s; reconnecting"
                ) from exc
            except OSError as exc:
                raise errors.UnavailableError(f"watch of {resource.plural} broke: {exc!r}") from exc
            except Exception as exc:  # aiohttp raises its own ClientPayloadError on a cut stream
                raise errors.UnavailableError(f"watch of {resource.plural} broke: {exc!r}") from exc
            if not line:
                ended = True
                return  # the server ended the watch; the caller resumes from the last version
            event = orjson.loads(line)  # most of a watcher's CPU is decoding events
            if event.get("type") == "ERROR" or "object" not in event:
                # An ERROR event, or a bare Status when the apiserver refuses the watch outright.
                status = event.get("object", event)
                raise errors.from_status(
                    status.get("code"), f"watch of {resource.plural}: {status.get('message')}"
                )
            yield event
    finally:
        if ended:
            response.release()
        else:  # a silent, broken or abandoned connection must not go back to the pool
            # Aborted, not closed politely: a TLS close waits for the apiserver's answer, and a
            # watch stopped with its service (or its test's event loop) left the socket open.
            connection = response.connection
            transport = connection.transport if connection is not None else None
            if transport is not None:
                transport.abort()
            response.close()
