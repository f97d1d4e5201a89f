"""The Kubernetes client: connection set-up and the few generic calls kairyu needs.

Objects travel as plain dicts (kairyu parses them into its pydantic models), so one code path
serves every resource type, custom ones included.

Every call has client-side timeouts (`KubeTimeouts`): without them a half-open connection (a node or
NAT that dropped the connection without a reset) blocks a handler, a watch or a Lease renewal for
ever, since the kernel's keep-alive takes hours to notice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from kairyu_core import metrics
from kairyu_core.kube import _sdk, errors, resources
from kairyu_core.kube.resources import Resource
from kairyu_core.settings import KubeTimeouts

JSON = dict[str, Any]
JSONPatch = list[JSON]
_IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
# Ask for objects as their metadata alone (meta.k8s.io PartialObjectMetadata): a list or watch of
# every ConfigMap in a cluster then carries names and owners, not the data.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"


class KubeClient:
    """An API client bound to one cluster."""

    def __init__(self, api: _sdk.ApiClient, *, timeouts: KubeTimeouts | None = None) -> None:
        self.api = api
        self.timeouts = timeouts or KubeTimeouts()
        _skip_env_lookups(api)

    @classmethod
    async def connect(
        cls, kubeconfig: Path | None = None, *, timeouts: KubeTimeouts | None = None
    ) -> Self:
        """From `kubeconfig`, else in-cluster (service-account token), else ~/.kube/config.

        Raises errors.KubeConfigError when none of them can be used.
        """
        try:
            if kubeconfig is None and os.environ.get(_IN_CLUSTER_ENV):
                configuration = _sdk.Configuration()
                _sdk.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return cls(_sdk.ApiClient(configuration), timeouts=timeouts)
            config_file = str(kubeconfig) if kubeconfig else None
            api = await _sdk.new_client_from_config(config_file=config_file)
        except (_sdk.ConfigException, OSError) as exc:
            where = kubeconfig or "the in-cluster identity or ~/.kube/config"
            raise errors.KubeConfigError(f"no usable kubeconfig ({where}): {exc}") from exc
        return cls(api, timeouts=timeouts)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | int | bool] | None = None,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        stream: bool = False,
    ) -> Any:
        """One API call; errors become kairyu_core.kube.errors types.

        A call that exceeds `self.timeouts` raises UnavailableError, as an unreachable apiserver
        does. With `stream`, the response is returned unread, for `watching` to read line by line.
        """
        code = "error"
        try:
            result = await self.api.call_api(
                path,
                method,
                query_params=[
                    (k, str(v).lower() if isinstance(v, bool) else v)
                    for k, v in (query or {}).items()
                ],
                header_params={"Accept": accept, "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=not stream,
                _request_timeout=self._client_timeout(stream=stream),
            )
        except _sdk.ApiException as exc:
            code = f"{exc.status // 100}xx" if exc.status else "error"
            status = _status_of(exc)
            details = status.get("details")
            raise errors.from_status(
                exc.status,
                f"{method} {path}: {exc.status} {_reason(exc, status)}",
                details=details if isinstance(details, dict) else None,
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise errors.UnavailableError(f"{method} {path}: {exc!r}") from exc
        else:
            code = "2xx"
            return result
        finally:
            metrics.KUBE_REQUESTS.labels(method, resources.label_of(path), code).inc()

    def _client_timeout(self, *, stream: bool) -> aiohttp.ClientTimeout:
        limits = self.timeouts
        if stream:  # no total: a watch lasts minutes; its silence is what is limited
            return aiohttp.ClientTimeout(
                connect=limits.connect_s,
                sock_connect=limits.connect_s,
                sock_read=limits.watch_idle_s,
            )
        return aiohttp.ClientTimeout(
            total=limits.request_s,
            connect=limits.connect_s,
            sock_connect=limits.connect_s,
            sock_read=limits.read_s,
        )

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> JSON:
        result: JSON = await self.request("GET", resource.path(namespace=namespace, name=name))
        return result

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        metadata_only: bool = False,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> JSON:
        """The objects of `resource`; with `metadata_only`, each as its metadata alone.

        With `limit`, one page: `metadata.continue` then names the next (`continue_token`).
        """
        query: dict[str, str | int | bool] = (
            {"labelSelector": label_selector} if label_selector else {}
        )
        if limit is not None:
            query["limit"] = limit
        if continue_token:
            query["continue"] = continue_token
        accept = METADATA_LIST if metadata_only else "application/json"
        result: JSON = await self.request(
            "GET", resource.path(namespace=namespace), query=query, accept=accept
        )
        return result

    async def create(
        self, resource: Resource, body: JSON, *, field_manager: str, namespace: str | None = None
    ) -> JSON:
        """Create the object; ConflictError (409) when one of its name exists already."""
        result: JSON = await self.request(
            "POST",
            resource.path(namespace=namespace),
            query={"fieldManager": field_manager},
            body=body,
        )
        return result

    async def replace(
        self, resource: Resource, body: JSON, *, field_manager: str, namespace: str | None = None
    ) -> JSON:
        """Replace (PUT) the object `body` names.

        With its resourceVersion in `body`, a concurrent write in between is refused with
        ConflictError instead of being overwritten.
        """
        result: JSON = await self.request(
            "PUT",
            resource.path(namespace=namespace, name=body["metadata"]["name"]),
            query={"fieldManager": field_manager},
            body=body,
        )
        return result

    async def apply(
        self,
        resource: Resource,
        body: JSON,
        *,
        field_manager: str,
        subresource: str | None = None,
        force: bool = True,
    ) -> JSON:
        """Server-side apply `body` (which names the object) as `field_manager`."""
        meta = body["metadata"]
        result: JSON = await self.request(
            "PATCH",
            resource.path(
                namespace=meta.get("namespace"), name=meta["name"], subresource=subresource
            ),
            query={"fieldManager": field_manager, "force": force},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def patch(
        self,
        resource: Resource,
        name: str,
        ops: JSONPatch,
        *,
        field_manager: str,
        namespace: str | None = None,
    ) -> JSON:
        """A JSON patch: precise edits (with `test` guards) where apply would own whole fields.

        `field_manager` names the writer in managedFields, as apply does (else the client's
        default, "OpenAPI-Generator", would be blamed).
        """
        result: JSON = await self.request(
            "PATCH",
            resource.path(namespace=namespace, name=name),
            query={"fieldManager": field_manager},
            body=ops,
            content_type="application/json-patch+json",
        )
        return result

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation: str | None = None,
    ) -> None:
        """Delete the object.

        `propagation` (Background / Foreground / Orphan) overrides the resource's default, which
        for Jobs is to orphan their pods.
        """
        body = {"propagationPolicy": propagation} if propagation else None
        await self.request("DELETE", resource.path(namespace=namespace, name=name), body=body)


_PROXY_ENV = ("https_proxy", "http_proxy", "all_proxy", "ws_proxy", "wss_proxy")


def _skip_env_lookups(api: _sdk.ApiClient) -> None:
    """Stop aiohttp looking for proxies and ~/.netrc on every request when there are none.

    kubernetes_asyncio opens its session with `trust_env=True`, and aiohttp then looks up the
    environment's proxies and the user's .netrc for every request, each in a worker thread: a
    tenth to a fifth of a service's CPU under load, to find nothing. When no proxy variable and
    no .netrc exist at start, the lookups are turned off (a kubeconfig's `proxy-url` is applied
    per request all the same); when one does, nothing changes.
    """
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_ENV):
        return
    # expanduser, not Path.home(): no HOME is no error, just no .netrc
    netrc = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if Path(netrc).exists():
        return
    session = getattr(getattr(api, "rest_client", None), "pool_manager", None)
    if isinstance(session, aiohttp.ClientSession):
        # No public setter: `_trust_env` is one of the session's declared attributes.
        session._trust_env = False


def _status_of(exc: _sdk.ApiException) -> JSON:
    """The apiserver's Status object in an error response; {} when the body is not one."""
    try:
        status = json.loads(exc.body or b"{}")
    except (TypeError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _reason(exc: _sdk.ApiException, status: JSON) -> str:
    # The apiserver's Status message names the field that failed; the HTTP reason does not.
    return str(status.get("message") or exc.reason)
