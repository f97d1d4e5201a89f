"""A local endpoint that speaks the Hugging Face Hub's HTTP API, for the planner's tests.

No model hub is reachable here, so the tests point `huggingface_hub`'s real client
(`HfApi(endpoint=...)`, `HF_ENDPOINT`) at this server. It answers the two calls the planner
makes, as the Hub does:

- `GET /api/models/{org}/{name}[/revision/{rev}]?blobs=true`: the model's commit (`sha`), gated
  flag and files with their sizes (`siblings`);
- `GET|HEAD /{org}/{name}/resolve/{rev}/{file}`: a file, with `X-Repo-Commit` and `ETag`;

and fails the way the Hub fails (`X-Error-Code: RepoNotFound | GatedRepo | EntryNotFound |
RevisionNotFound`), so the client raises its own errors. Gated models answer only to
`Authorization: Bearer <token>`.

The models are a handful of real ones: their config.json numbers and total safetensors sizes
are copied from the models' public configs (the shards here are split evenly, only their sum
matters). The server runs on its own thread and loop, so synchronous and async tests can use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

GIB = 1 << 30


@dataclass(frozen=True)
class HubRepo:
    """One model repository: its config.json (None: missing) and weights."""

    repo: str
    config: dict[str, Any] | None
    weights_bytes: int
    shards: int = 1
    gated: bool = False

    @property
    def commit(self) -> str:
        return hashlib.sha1(self.repo.encode(), usedforsecurity=False).hexdigest()

    def files(self) -> dict[str, int]:
        names = {}
        each, rest = divmod(self.weights_bytes, self.shards)
        for i in range(self.shards):
            name = (
                "model.safetensors"
                if self.shards == 1
                else f"model-{i + 1:05d}-of-{self.shards:05d}.safetensors"
            )
            names[name] = each + (rest if i == 0 else 0)
        if self.config is not None:
            names["config.json"] = len(self.config_bytes())
        return names

    def config_bytes(self) -> bytes:
        return json.dumps(self.config or {}).encode()


def _llama(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "vocab_size": 128256,
        "torch_dtype": "bfloat16",
    }


LLAMA_8B = HubRepo(
    "unsloth/Llama-3.1-8B-Instruct",
    _llama(4096, 32, 32, 14336),
    weights_bytes=int(14.96 * GIB),
    shards=4,
)
"""Llama 3.1 8B's config and size (meta-llama/Llama-3.1-8B-Instruct, ungated mirror)."""
LLAMA_70B = HubRepo(
    "unsloth/Llama-3.3-70B-Instruct",
    _llama(8192, 80, 64, 28672),
    weights_bytes=int(131.42 * GIB),
    shards=30,
)
"""Llama 3.3 70B's config and size (meta-llama/Llama-3.3-70B-Instruct, ungated mirror)."""
QWEN3_AWQ = HubRepo(
    "Qwen/Qwen3-8B-AWQ",
    {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 4096,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "quantization_config": {"quant_method": "awq", "bits": 4},
    },
    weights_bytes=int(5.68 * GIB),
    shards=2,
)
GATED_1B = HubRepo(
    "meta-llama/Llama-3.2-1B-Instruct",
    {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
    },
    weights_bytes=int(2.30 * GIB),
    gated=True,
)
NO_CONFIG = HubRepo("acme/weights-only", None, weights_bytes=int(3 * GIB))
"""Weights without a config.json: its architecture and size cannot be read."""
HUGE_CONFIG = HubRepo(
    "acme/huge-config",
    {"architectures": ["LlamaForCausalLM"], "padding": "x" * (2 << 20)},
    weights_bytes=int(1 * GIB),
)
"""A config.json of 2 MiB: more than any real one, to be abandoned, not read whole."""
TOKEN = "hf_test_token_for_the_fake_hub"  # noqa: S105 - a made-up token the fake hub accepts

MODELS = (LLAMA_8B, LLAMA_70B, QWEN3_AWQ, GATED_1B, NO_CONFIG, HUGE_CONFIG)


class FakeHub:
    """The Hub's model API on 127.0.0.1, on a thread of its own (`with FakeHub() as hub`)."""

    def __init__(self, models: tuple[HubRepo, ...] = MODELS) -> None:
        self.repos = {m.repo.lower(): m for m in models}
        self.requests: list[str] = []
        self.endpoint = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}", self._info)
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{file}", self._resolve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    def _repo(self, request: web.Request) -> HubRepo:
        name = f"{request.match_info['org']}/{request.match_info['name']}"
        self.requests.append(f"{request.method} {request.path}")
        repo = self.repos.get(name.lower())
        if repo is None:
            raise _error(404, "RepoNotFound", f"Repository Not Found for url: {request.url}")
        if repo.gated and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise _error(401, "GatedRepo", f"Access to model {repo.repo} is restricted.")
        rev = request.match_info.get("rev")
        if rev is not None and rev not in ("main", repo.commit):
            raise _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    async def _info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        blobs = request.query.get("blobs") in ("True", "true", "1")
        siblings = [
            {"rfilename": name, **({"size": size} if blobs else {})}
            for name, size in repo.files().items()
        ]
        body = {
            "_id": repo.commit[:24],
            "id": repo.repo,
            "modelId": repo.repo,
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["safetensors"],
            "siblings": siblings,
        }
        return web.json_response(body)

    async def _resolve(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        file = request.match_info["file"]
        if file != "config.json" or repo.config is None:
            raise _error(404, "EntryNotFound", f"{file} does not exist in {repo.repo}")
        body = repo.config_bytes()
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{hashlib.sha1(body, usedforsecurity=False).hexdigest()}"',
            "Content-Type": "application/json",
        }
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        return web.Response(body=body, headers=headers)


def _error(status: int, code: str, message: str) -> web.HTTPException:
    kind = {401: web.HTTPUnauthorized, 404: web.HTTPNotFound}[status]
    return kind(
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )
