"""`kairyu plan` previews what the planner would write, without a cluster."""

import io
import json
import time
from pathlib import Path

import pytest
import yaml

from kairyu_cli.commands import EXIT_PLANNED, EXIT_REFUSED, EXIT_UNREADABLE, run
from kairyu_testing.seeds import seed, seed_path


def test_the_seed_plan_is_printed_as_a_table() -> None:
    out = io.StringIO()
    assert run(["plan", "-f", str(seed_path("inference"))], out=out) == EXIT_PLANNED
    text = out.getvalue()
    assert "Standard_NC6s_v3" in text
    assert "$3.06" in text
    assert "--max-model-len=4096" in text


def test_json_output_for_an_automatic_choice(tmp_path: Path) -> None:
    doc = seed("inference")
    del doc["resource"]["instanceType"]
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = io.StringIO()
    assert run(["plan", "-f", str(path), "--json", "--cloud", "aws"], out=out) == EXIT_PLANNED
    result = json.loads(out.getvalue())
    assert result["planned"] is True
    assert result["plan"]["instanceType"] == "g6.xlarge"


def test_a_refusal_exits_1_with_the_reason(tmp_path: Path) -> None:
    doc = seed("inference")
    doc["inference"]["preset"]["name"] = "phi-4"
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(doc))
    err = io.StringIO()
    assert run(["plan", "-f", str(path)], out=io.StringIO(), err=err) == EXIT_REFUSED
    assert "InsufficientGPUMemory" in err.getvalue()
    assert "phi-4 needs 27.7 GiB" in err.getvalue()


def test_a_file_that_is_not_a_workspace_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text("kind: Workspace\nresource: 3\n")
    err = io.StringIO()
    assert run(["plan", "-f", str(path)], out=io.StringIO(), err=err) == EXIT_UNREADABLE
    assert "cannot read" in err.getvalue()


_BOMB = "\n".join(
    [
        "kind: Workspace",
        "a: &a [x, x, x, x, x, x, x, x, x]",
        *(f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]" for a, b in
          zip("abcdefgh", "bcdefghi", strict=True)),
        "resource: *i",
    ]
)  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"kind: Workspace\nresource: " + b"[" * 100_000, "nested deeper", id="deep"),
        pytest.param(
            b"kind: Workspace\nresource:\n  count: " + b"9" * 5000, "digits", id="huge-integer"
        ),
        pytest.param(b"kind: Workspace\nresource: \xff\xfe\n", "utf-8", id="invalid-utf8"),
        pytest.param(_BOMB.encode(), "aliases", id="alias-bomb"),
        pytest.param(b"#" * (9 * 1024 * 1024), "larger than", id="too-big"),
    ],
)
def test_hostile_input_exits_2_quickly_with_a_message(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_bytes(content)
    err = io.StringIO()
    started = time.monotonic()
    assert run(["plan", "-f", str(path)], out=io.StringIO(), err=err) == EXIT_UNREADABLE
    assert time.monotonic() - started < 5
    assert "cannot read" in err.getvalue()
    assert message in err.getvalue().lower()


@pytest.mark.parametrize("named", ["ml", "ml/phi/x", "workspace/ml/phi", "inferenceset/ml/"])
def test_trace_names_a_workspace_or_an_inference_set(named: str) -> None:
    err = io.StringIO()
    assert run(["trace", named], out=io.StringIO(), err=err) == EXIT_UNREADABLE
    assert "inferenceset/<namespace>/<name>" in err.getvalue()


@pytest.mark.parametrize(
    "kubeconfig", ["missing", "empty"], ids=["no such file", "no current context"]
)
def test_trace_without_a_usable_kubeconfig_says_so(kubeconfig: str, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    if kubeconfig == "empty":
        path.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    err = io.StringIO()
    code = run(["trace", "default/phi", "--kubeconfig", str(path)], out=io.StringIO(), err=err)
    assert code == EXIT_UNREADABLE
    assert err.getvalue().startswith(
        "kairyu: cannot read Workspace default/phi: no usable kubeconfig"
    )


@pytest.mark.parametrize("command", ["why", "trace"])
@pytest.mark.parametrize("named", ["../kube-system/x", "ml/../x", "ML/phi", "ml/phi?watch=1"])
def test_a_name_that_is_not_a_kubernetes_name_never_reaches_a_request(
    command: str, named: str
) -> None:
    err = io.StringIO()
    args = [command, named, "--kubeconfig", "/nonexistent"]
    assert run(args, out=io.StringIO(), err=err) == EXIT_UNREADABLE
    assert "name the Workspace as <namespace>/<name>" in err.getvalue()
