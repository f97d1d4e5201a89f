"""Reads a Hugging Face model's metadata from the Hub, once per model id and revision.

A Workspace may name any Hugging Face model (`inference.preset.name: org/model`, KAITO v0.9+).
The planner sizes it from the repository itself: `model_info` (with file sizes) resolves the
revision to a commit and lists the safetensors files, and `config.json` of that commit gives the
architecture (kairyu_contracts.catalog.sizing). Both go through `huggingface_hub`'s own client
against `KAIRYU_HUB__ENDPOINT`, so a private mirror works as huggingface.co does.

What the Hub said about one commit never changes, so results are kept by (id, commit) for as
long as the process lives (bounded), and the plan records the commit (`--revision`), so what was
sized is what the runtime downloads. A branch name ("main") is resolved again only after
`resolve_ttl_s`. The client is synchronous; calls run in a worker thread, at most
`concurrency` at a time, each bounded by `timeout_s`.

The token of a gated model is the HF_TOKEN of the Workspace's `modelAccessSecret`: read by the
planner for this request only, sent to the Hub, never stored or logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass

from kairyu_contracts.catalog import Preset
from kairyu_contracts.catalog.sizing import SizingError, preset_from_config, weights_bytes
from kairyu_planner.settings import HubSettings

_CONFIG_LIMIT = 1 << 20  # a config.json is a few KiB; more is not a config


class HubUnavailableError(Exception):
    """The Hub could not be asked (network, 5xx): worth asking again later."""


@dataclass(frozen=True)
class HubModel:
    """What the Hub says about one commit of a model, sized."""

    repo: str
    commit: str
    preset: Preset
    restricted: bool = False
    """Gated or private: what was read with one Workspace's token is not another's to reuse."""


class HubModels:
    """Model metadata from the Hub, cached by id and commit."""

    def __init__(self, settings: HubSettings, *, image: str) -> None:
        self._settings = settings
        self._image = image
        self._endpoint = settings.endpoint.rstrip("/")
        self._models: OrderedDict[tuple[str, str], HubModel] = OrderedDict()
        self._resolved: dict[tuple[str, str], tuple[str, float]] = {}
        # (repo, commit) of a restricted model → who read it: "<namespace>/<Secret name>"
        self._readers: dict[tuple[str, str], set[str]] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)

    def cached(self, repo: str, revision: str, reader: str = "") -> HubModel | None:
        """The sized model if known without asking the Hub (a commit, or a fresh branch).

        A gated or private model only to the `reader` (namespace and Secret) whose token read
        it: another namespace must not learn of it, nor plan with someone else's access.
        """
        commit = revision
        resolved = self._resolved.get((repo, revision))
        if resolved is not None and time.monotonic() - resolved[1] < self._settings.resolve_ttl_s:
            commit = resolved[0]
        found = self._models.get((repo, commit))
        if found is None:
            return None
        if found.restricted and reader not in self._readers.get((repo, commit), set()):
            return None
        self._models.move_to_end((repo, commit))
        return found

    async def model(
        self, repo: str, revision: str, token: str | None, reader: str = ""
    ) -> HubModel:
        """The sized model `repo` at `revision` (a branch or a commit), read with `token`.

        Raises SizingError for what asking again will not change (no such model, no access, no
        config.json, a config the arithmetic cannot read) and HubUnavailableError otherwise.
        """
        found = self.cached(repo, revision, reader)
        if found is not None:
            return found
        async with self._slots:
            model = await asyncio.to_thread(self._read, repo, revision, token)
        self._resolved[(repo, revision)] = (model.commit, time.monotonic())
        self._models[(repo, model.commit)] = model
        if model.restricted:
            self._readers.setdefault((repo, model.commit), set()).add(reader)
        while len(self._models) > self._settings.cache_size:
            forgotten, _ = self._models.popitem(last=False)
            self._readers.pop(forgotten, None)
        if len(self._resolved) > self._settings.cache_size:
            self._resolved.pop(next(iter(self._resolved)))
        return model

    def _read(self, repo: str, revision: str, token: str | None) -> HubModel:
        # Imported on first use: 15 MiB of the planner's memory, for Workspaces that name a
        # Hugging Face model (most name a catalog preset and never need it).
        import huggingface_hub  # noqa: PLC0415
        from huggingface_hub import errors as hub_errors  # noqa: PLC0415

        timeout = self._settings.timeout_s
        api = huggingface_hub.HfApi(endpoint=self._endpoint)
        try:
            info = api.model_info(
                repo, revision=revision, files_metadata=True, timeout=timeout, token=token or False
            )
            commit = info.sha or revision
            files = [(s.rfilename, s.size) for s in info.siblings or []]
            url = huggingface_hub.hf_hub_url(
                repo, "config.json", revision=commit, endpoint=self._endpoint
            )
            body = self._config_bytes(repo, url, token)
        except hub_errors.GatedRepoError as exc:
            raise SizingError(
                f"{repo} is gated on Hugging Face: name a Secret with an HF_TOKEN that has "
                f"access in inference.preset.presetOptions.modelAccessSecret ({_first_line(exc)})"
            ) from exc
        except hub_errors.RepositoryNotFoundError as exc:
            raise SizingError(f"no model {repo} on the Hub, or no access to it") from exc
        except hub_errors.RevisionNotFoundError as exc:
            raise SizingError(f"{repo} has no revision {revision}") from exc
        except hub_errors.EntryNotFoundError as exc:
            raise SizingError(
                f"{repo} has no config.json, so its architecture and size cannot be read"
            ) from exc
        except SizingError:
            raise
        except hub_errors.HfHubHTTPError as exc:
            raise HubUnavailableError(f"the Hub refused {repo}: {_first_line(exc)}") from exc
        except Exception as exc:  # the client's transport errors (httpx's), OSError
            raise HubUnavailableError(f"cannot reach the Hub for {repo}: {exc}") from exc
        try:
            config = json.loads(body)
        except ValueError as exc:
            raise SizingError(f"{repo}'s config.json is not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise SizingError(f"{repo}'s config.json is not an object")
        gated = bool(info.gated)
        preset = preset_from_config(
            repo, config, weights_bytes(files), image=self._image, gated=gated, revision=commit
        )
        restricted = gated or bool(getattr(info, "private", False))
        return HubModel(repo=repo, commit=commit, preset=preset, restricted=restricted)

    def _config_bytes(self, repo: str, url: str, token: str | None) -> bytes:
        """config.json, read in chunks and abandoned past `_CONFIG_LIMIT`.

        A repository's author chooses what it holds: a huge file must not fill the planner's
        memory.
        """
        import huggingface_hub  # noqa: PLC0415 - loaded by `_read`, which calls this

        session = huggingface_hub.get_session()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with session.stream(
            "GET", url, headers=headers, timeout=self._settings.timeout_s, follow_redirects=True
        ) as response:
            if response.status_code >= 400:  # noqa: PLR2004 - an HTTP error: its small body says why
                response.read()
                huggingface_hub.hf_raise_for_status(response)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > _CONFIG_LIMIT:
                raise SizingError(f"{repo}'s config.json is larger than {_CONFIG_LIMIT} bytes")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _CONFIG_LIMIT:
                    raise SizingError(f"{repo}'s config.json is larger than {_CONFIG_LIMIT} bytes")
        return body


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
