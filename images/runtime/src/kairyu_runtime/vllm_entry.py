"""KAITO's vLLM wrapper (/workspace/vllm/inference_api.py in the vllm image).

The deployer starts vLLM with KAITO's command line, which mixes vLLM's own flags with `--kaito-*`
flags vLLM does not know. This wrapper takes those out, applies the Workspace's inference config
(its `vllm:` map overrides the operator's flags, as in KAITO, because that is how users tune
max-model-len and friends), turns adapter directories into LoRA modules, and then becomes vLLM's
OpenAI server with exec so that signals and the exit code are vLLM's own.

vLLM reads its API key from VLLM_API_KEY but checks it only on /v1 paths: /invocations, /pooling,
/score, /tokenize and others answer anyone. So whenever a key is set the wrapper also starts vLLM
with `--middleware kairyu_runtime.guards.VllmApiKey`, which asks for the key everywhere but the
probes and /metrics. The key travels only in the environment: VLLM_API_KEY, else kairyu's
KAIRYU_RUNTIME_API_KEY, else an `--api-key` flag (taken off the command line, which any process
in the pod can read). The wrapper never logs a key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kairyu_runtime.adapters import ADAPTER_CONFIG

log = logging.getLogger("kairyu_runtime.vllm")

DEFAULT_ADAPTERS = "/mnt/adapter"
DEFAULT_PORT = "5000"
KAITO_PREFIX = "--kaito-"
# KAITO flags kairyu accepts so that KAITO command lines work, but does not act on (see docs).
IGNORED_KAITO = {
    "--kaito-max-probe-steps",
    "--kaito-kv-cache-cpu-memory-utilization",
    "--kaito-disable-rate-limit",
}
KNOWN_CONFIG_KEYS = {"vllm", "max_probe_steps", "kv_cache_cpu_memory_utilization"}
VLLM_SERVER = "vllm.entrypoints.openai.api_server"
KAIRYU_API_KEY = "KAIRYU_RUNTIME_API_KEY"
VLLM_API_KEY = "VLLM_API_KEY"
SECRET_FLAGS = {"--api-key"}
KEY_MIDDLEWARE = "kairyu_runtime.guards.VllmApiKey"
ROLE_ENV = "KAITO_INFERENCE_ROLE"
# A MultiRoleInference's prefill and decode servers move the KV cache over NIXL, each side able
# to send and receive. KAITO also sets kv_load_failure_policy "fail", a key the pinned vLLM may
# not know (its config refuses unknown keys); vLLM's own default is "fail" where it has the key.
KV_TRANSFER = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'


class ConfigError(ValueError):
    """The inference config file cannot be used; vLLM is not started."""


def split_kaito(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """KAITO's own flags (by name) and the rest, in order."""
    kaito: dict[str, str] = {}
    rest: list[str] = []
    items = iter(range(len(argv)))
    for i in items:
        arg = argv[i]
        if not arg.startswith(KAITO_PREFIX):
            rest.append(arg)
            continue
        name, sep, value = arg.partition("=")
        if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            next(items)
        kaito[name] = value
    return kaito, rest


def flag_name(arg: str) -> str:
    return arg.partition("=")[0].replace("_", "-")


def load_config(text: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"inference config is not YAML: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError("inference config must be a mapping")
    vllm = document.get("vllm") or {}
    if not isinstance(vllm, dict):
        raise ConfigError("inference config: `vllm` must be a mapping of vLLM flags")
    return document


def config_flags(vllm: Mapping[str, Any]) -> list[str]:
    """`--key=value` per entry; true is a bare flag, false and null leave the flag out."""
    flags = []
    for key, value in vllm.items():
        name = "--" + str(key).removeprefix("--").replace("_", "-")
        if value is True:
            flags.append(name)
        elif value is False or value is None:
            continue
        elif isinstance(value, dict | list):
            flags.append(f"{name}={yaml.safe_dump(value, default_flow_style=True).strip()}")
        else:
            flags.append(f"{name}={value}")
    return flags


def without(args: list[str], names: set[str]) -> list[str]:
    """`args` minus the flags in `names`, with the value that follows a bare `--flag value`."""
    kept: list[str] = []
    skipping = False
    for arg in args:
        if arg.startswith("--"):
            skipping = flag_name(arg) in names
            if skipping and "=" in arg:
                skipping = False
                continue
            if skipping:
                continue
        elif skipping:  # a removed flag's values (`--lora-modules a=… b=…` takes several)
            continue
        kept.append(arg)
    return kept


def adapter_modules(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [
        f"{child.name}={child}"
        for child in sorted(directory.iterdir())
        if (child / ADAPTER_CONFIG).is_file()
    ]


def vllm_args(argv: list[str], *, config_text: str | None, adapters_dir: Path) -> list[str]:
    """VLLM's command line from KAITO's (pure apart from listing the adapters directory)."""
    kaito, args = split_kaito(argv)
    for name in sorted(set(kaito) & IGNORED_KAITO):
        log.warning("%s is accepted for KAITO compatibility and has no effect in kairyu", name)
    unknown = sorted(set(kaito) - IGNORED_KAITO - {"--kaito-config-file", "--kaito-adapters-dir"})
    if unknown:
        raise ConfigError(f"unknown KAITO flag(s): {', '.join(unknown)}")
    if config_text is not None:
        document = load_config(config_text)
        for key in sorted(set(document) - KNOWN_CONFIG_KEYS):
            log.warning("inference config key %r is not used", key)
        overrides = config_flags(document.get("vllm") or {})
        args = without(args, {flag_name(f) for f in overrides}) + overrides
    names = {flag_name(a) for a in args if a.startswith("--")}
    if "--enable-lora" in names and "--lora-modules" not in names:
        modules = adapter_modules(Path(kaito.get("--kaito-adapters-dir", str(adapters_dir))))
        if modules:
            args += ["--lora-modules", *modules]
    if "--port" not in names:
        args.append(f"--port={DEFAULT_PORT}")
    return args


def flag_values(args: list[str], names: set[str]) -> list[str]:
    """The values given to the flags in `names`, as `--flag=value` or `--flag value`."""
    values: list[str] = []
    for i, arg in enumerate(args):
        if not arg.startswith("--") or flag_name(arg) not in names:
            continue
        if "=" in arg:
            values.append(arg.partition("=")[2])
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            values.append(args[i + 1])
    return values


def vllm_env(env: Mapping[str, str], flag_key: str | None = None) -> dict[str, str]:
    """The environment vLLM runs with: VLLM_API_KEY, else kairyu's key, else the flag's."""
    result = dict(env)
    if not result.get(VLLM_API_KEY):
        key = result.get(KAIRYU_API_KEY) or flag_key
        if key:
            result[VLLM_API_KEY] = key
    return result


def vllm_command(
    argv: list[str], env: Mapping[str, str], *, config_text: str | None, adapters_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment vLLM gets; with a key, the middleware that checks it.

    A prefill or decode server (KAITO_INFERENCE_ROLE) gets KAITO's KV transfer over NIXL unless
    its flags or inference config already name one.
    """
    args = vllm_args(argv, config_text=config_text, adapters_dir=adapters_dir)
    names = {flag_name(a) for a in args if a.startswith("--")}
    if env.get(ROLE_ENV) in ("prefill", "decode") and "--kv-transfer-config" not in names:
        args.append(f"--kv-transfer-config={KV_TRANSFER}")
    flag_keys = [v for v in flag_values(args, SECRET_FLAGS) if v]
    args = without(args, SECRET_FLAGS)
    environment = vllm_env(env, flag_keys[-1] if flag_keys else None)
    if environment.get(VLLM_API_KEY):
        args.append(f"--middleware={KEY_MIDDLEWARE}")
    return args, environment


def redacted(args: list[str]) -> list[str]:
    """The command line fit for a log: values of secret flags replaced."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next and not arg.startswith("--"):
            shown.append("<redacted>")
            continue
        name = flag_name(arg) if arg.startswith("--") else ""
        hide_next = name in SECRET_FLAGS and "=" not in arg
        shown.append(f"{name}=<redacted>" if name in SECRET_FLAGS and "=" in arg else arg)
    return shown


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    argv = sys.argv[1:]
    kaito, _ = split_kaito(argv)
    config_path = kaito.get("--kaito-config-file")
    try:
        config_text = Path(config_path).read_text() if config_path else None
        args, env = vllm_command(
            argv, os.environ, config_text=config_text, adapters_dir=Path(DEFAULT_ADAPTERS)
        )
    except (OSError, ConfigError) as err:
        log.error("cannot start vLLM: %s", err)  # noqa: TRY400 - the message is the reason
        sys.exit(2)
    command = [sys.executable, "-m", VLLM_SERVER, *args]
    log.info("starting vLLM: %s", " ".join(redacted(command)))
    os.execve(sys.executable, command, env)  # noqa: S606 - becoming vLLM


if __name__ == "__main__":
    main()
