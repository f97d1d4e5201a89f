"""KAITO's vLLM command line becomes vLLM's own: KAITO flags out, the user's config in, adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kairyu_runtime.vllm_entry import KEY_MIDDLEWARE, ConfigError, vllm_args, vllm_command

DEPLOYER_ARGS = [
    "--model=microsoft/Phi-4-mini-instruct",
    "--served-model-name=phi-4-mini-instruct",
    "--dtype=bfloat16",
    "--max-model-len=4096",
    "--tensor-parallel-size=1",
    "--kaito-config-file=/mnt/config/inference_config.yaml",
    "--download-dir=/workspace/weights",
]


def test_kaito_flags_are_removed_and_the_port_is_kaitos(tmp_path: Path) -> None:
    args = vllm_args(DEPLOYER_ARGS, config_text=None, adapters_dir=tmp_path)
    assert not [a for a in args if a.startswith("--kaito")]
    assert args[: len(DEPLOYER_ARGS) - 2] == DEPLOYER_ARGS[:5]
    assert "--port=5000" in args


def test_the_users_vllm_config_overrides_the_operators_flags(tmp_path: Path) -> None:
    config = """
kv_cache_cpu_memory_utilization: 0.5
vllm:
  max-model-len: 2048
  enforce-eager: true
  cpu_offload_gb: 0
  disable-log-stats: false
"""
    args = vllm_args(DEPLOYER_ARGS, config_text=config, adapters_dir=tmp_path)
    assert "--max-model-len=4096" not in args
    assert "--max-model-len=2048" in args
    assert "--enforce-eager" in args
    assert "--cpu-offload-gb=0" in args
    assert not [a for a in args if a.startswith("--disable-log-stats")]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("vllm: [1, 2]", "must be a mapping of vLLM flags"),
        ("- a\n- b", "must be a mapping"),
        ("vllm: {a: [", "not YAML"),
    ],
)
def test_a_bad_config_is_refused_with_the_reason(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vllm_args(DEPLOYER_ARGS, config_text=config, adapters_dir=tmp_path)


def test_unknown_kaito_flags_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--kaito-bogus"):
        vllm_args(["--kaito-bogus=1"], config_text=None, adapters_dir=tmp_path)


def test_adapter_directories_become_lora_modules(tmp_path: Path) -> None:
    for name in ("b-style", "a-tone"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    (tmp_path / "still-copying").mkdir()
    args = vllm_args(["--enable-lora"], config_text=None, adapters_dir=tmp_path)
    start = args.index("--lora-modules")
    assert args[start + 1 : start + 3] == [
        f"a-tone={tmp_path}/a-tone",
        f"b-style={tmp_path}/b-style",
    ]


def test_explicit_lora_modules_are_kept(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "adapter_config.json").write_text("{}")
    given = ["--enable-lora", "--lora-modules", "x=/mnt/adapter/x"]
    assert vllm_args(given, config_text=None, adapters_dir=tmp_path)[:3] == given
    config = "vllm:\n  lora-modules: y=/elsewhere\n"
    args = vllm_args(given, config_text=config, adapters_dir=tmp_path)
    assert "x=/mnt/adapter/x" not in args
    assert "--lora-modules=y=/elsewhere" in args


def test_vllm_gets_the_api_key_and_the_log_never_shows_it(tmp_path: Path) -> None:
    # A stand-in for vLLM's server module: it reports the key it was started with.
    fake = tmp_path / "vllm" / "entrypoints" / "openai"
    fake.mkdir(parents=True)
    for package in (fake.parents[1], fake.parent, fake):
        (package / "__init__.py").write_text("")
    (fake / "api_server.py").write_text(
        "import os, sys\nprint('vllm key:', os.environ.get('VLLM_API_KEY'), sys.argv[1:])\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kairyu_runtime.vllm_entry",
            "--model=m",
            "--api-key",
            "flag-secret",
            "--api-key=other-secret",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "KAIRYU_RUNTIME_API_KEY": "env-secret",
        },
    )
    assert done.returncode == 0, done.stderr
    assert "vllm key: env-secret" in done.stdout
    assert f"--middleware={KEY_MIDDLEWARE}" in done.stdout
    assert "flag-secret" not in done.stdout  # off vLLM's command line, which /proc shows
    assert "starting vLLM" in done.stderr
    for secret in ("env-secret", "flag-secret", "other-secret"):
        assert secret not in done.stderr


def test_a_key_from_anywhere_puts_the_key_middleware_in_front_of_vllm(tmp_path: Path) -> None:
    middleware = f"--middleware={KEY_MIDDLEWARE}"
    args, env = vllm_command(
        DEPLOYER_ARGS, {"KAIRYU_RUNTIME_API_KEY": "k"}, config_text=None, adapters_dir=tmp_path
    )
    assert middleware in args
    assert env["VLLM_API_KEY"] == "k"
    # A key given only as a flag (e.g. in the user's `vllm:` config) moves to the environment.
    args, env = vllm_command(
        DEPLOYER_ARGS, {}, config_text="vllm:\n  api-key: from-config\n", adapters_dir=tmp_path
    )
    assert middleware in args
    assert not [a for a in args if "api-key" in a or "from-config" in a]
    assert env["VLLM_API_KEY"] == "from-config"
    # A user's own --middleware in the config does not replace kairyu's.
    config = "vllm:\n  middleware: mine.Middleware\n"
    args, _ = vllm_command(
        DEPLOYER_ARGS, {"VLLM_API_KEY": "k"}, config_text=config, adapters_dir=tmp_path
    )
    assert middleware in args
    assert "--middleware=mine.Middleware" in args
    args, env = vllm_command(DEPLOYER_ARGS, {}, config_text=None, adapters_dir=tmp_path)
    assert not [a for a in args if a.startswith("--middleware")]
    assert "VLLM_API_KEY" not in env


def _vllm_like_app() -> Starlette:
    """Routes named as vLLM's, with the middleware added the way vLLM's --middleware adds it."""

    async def answer(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"served {request.url.path}")

    paths = ["/invocations", "/tokenize", "/pooling", "/v1/models", "/health", "/ping", "/metrics"]
    app = Starlette(routes=[Route(p, answer, methods=["GET", "POST"]) for p in paths])
    module, _, name = KEY_MIDDLEWARE.rpartition(".")
    app.add_middleware(getattr(__import__(module, fromlist=[name]), name))
    return app


def test_vllm_routes_outside_v1_need_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "vllm-key")
    with TestClient(_vllm_like_app()) as client:
        for path in ("/invocations", "/tokenize", "/pooling", "/v1/models"):
            refused = client.post(path, json={"prompt": "hi"})
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            wrong = client.post(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            allowed = client.post(path, headers={"Authorization": "Bearer vllm-key"})
            assert allowed.status_code == 200, path
        for probe in ("/health", "/ping", "/metrics"):
            assert client.get(probe).status_code == 200, probe
        assert client.get("/health/../tokenize").status_code == 401


def test_the_vllm_key_middleware_will_not_run_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.delenv("KAIRYU_RUNTIME_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="VLLM_API_KEY"), TestClient(_vllm_like_app()) as c:
        c.get("/tokenize")


SCRIPT = Path(__file__).parents[1] / "entrypoints" / "multi-node-serving.sh"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: multi-node-serving.sh leader|worker"),
        (["worker", "--ray_port=6379"], "worker needs --ray_address"),
        (["leader", "--ray_size=2"], "unknown argument --ray_size=2"),
    ],
)
def test_multi_node_script_refuses_bad_arguments(args: list[str], message: str) -> None:
    done = subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_prefill_or_decode_server_moves_its_kv_cache_over_nixl(tmp_path: Path) -> None:
    plain, _ = vllm_command(DEPLOYER_ARGS, {}, config_text=None, adapters_dir=tmp_path)
    assert not [a for a in plain if a.startswith("--kv-transfer-config")]
    for role in ("prefill", "decode"):
        args, _ = vllm_command(
            DEPLOYER_ARGS, {"KAITO_INFERENCE_ROLE": role}, config_text=None, adapters_dir=tmp_path
        )
        (flag,) = [a for a in args if a.startswith("--kv-transfer-config=")]
        assert json.loads(flag.partition("=")[2]) == {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
        }
    # The user's inference config names its own connector: it is kept, not doubled.
    config = 'vllm:\n  kv-transfer-config: \'{"kv_connector":"LMCacheConnectorV1"}\'\n'
    args, _ = vllm_command(
        DEPLOYER_ARGS, {"KAITO_INFERENCE_ROLE": "decode"}, config_text=config, adapters_dir=tmp_path
    )
    assert [a for a in args if a.startswith("--kv-transfer-config")] == [
        '--kv-transfer-config={"kv_connector":"LMCacheConnectorV1"}'
    ]
