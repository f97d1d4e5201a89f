"""kairyu's command line.

`kairyu plan -f workspace.yaml [--json]` previews the plan without a cluster: it runs the planner's
own validation and planning code on the file, so what it prints is what the planner would write to
`status.plan`. Exit status: 0 planned, 1 refused (the reason is printed), 2 the file cannot be read
as a Workspace (also, quickly and with a message: a file over 8 MiB, invalid UTF-8, YAML aliases,
nesting deeper than 64 levels, integers longer than Python reads).

`kairyu why <namespace>/<name>` says where the Workspace's rollout stands, in plain words
(kairyu_contracts.rollout_story), from the cluster alone, and adds the trace when `--jaeger` (or
KAIRYU_JAEGER_URL) names a Jaeger. Exit status: 0 explained, 2 the Workspace cannot be read.

`kairyu trace <namespace>/<name>` prints the Workspace's current rollout as a waterfall from
Jaeger's query API (`--jaeger`, or KAIRYU_JAEGER_URL); `kairyu trace inferenceset/<ns>/<name>`
prints an InferenceSet's current scale step the same way. Exit status: 0 printed, 1 no trace (yet),
2 the Workspace or Jaeger cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from kairyu_cli import traceview
from kairyu_contracts import rollout_story
from kairyu_contracts.api import Plan, Workspace, parse_workspace
from kairyu_contracts.catalog import Cloud, load_catalog
from kairyu_core import rollout_facts
from kairyu_core.kube import KubeClient, errors, resources
from kairyu_planner.planning import PlanError
from kairyu_planner.settings import PlanningSettings
from kairyu_planner.validated_plan import plan_checked

EXIT_PLANNED, EXIT_REFUSED, EXIT_UNREADABLE = 0, 1, 2
# A namespace or object name as the apiserver takes it: what goes into a request path is only that.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_OTHERS_LIMIT = 500  # Workspaces read to say how long a phase usually takes here
MAX_INPUT_BYTES = 8 * 1024 * 1024  # a few Workspaces; the apiserver takes 3 MiB per object
MAX_DEPTH = 64  # a pod template is about 10 levels deep; 64 leaves room and stops stack bombs


class UnreadableError(ValueError):
    """The input is not something kairyu reads as YAML Workspaces (too big, aliases, too deep)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairyu", description="kairyu command line")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="show the plan for a Workspace without applying it")
    plan.add_argument("-f", "--filename", required=True, help="Workspace YAML ('-' for stdin)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--cloud", choices=[c.value for c in Cloud], help="plan for this cloud")
    plan.add_argument("--allowed-skus", help="comma-separated SKUs the planner may choose from")
    trace = commands.add_parser(
        "trace", help="print a Workspace's rollout (or an InferenceSet's scale step) as a waterfall"
    )
    trace.add_argument("workspace", help="<namespace>/<name>, or inferenceset/<namespace>/<name>")
    trace.add_argument(
        "--jaeger",
        default=os.environ.get("KAIRYU_JAEGER_URL", "http://127.0.0.1:16686"),
        help="Jaeger's query URL (default: $KAIRYU_JAEGER_URL or http://127.0.0.1:16686)",
    )
    trace.add_argument(
        "--zipkin",
        default=os.environ.get("KAIRYU_ZIPKIN_URL"),
        help="also print the trace's page in this Zipkin UI (default: $KAIRYU_ZIPKIN_URL)",
    )
    trace.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    why = commands.add_parser(
        "why", help="where a Workspace's rollout stands, what it waits for, and what comes next"
    )
    why.add_argument("workspace", help="<namespace>/<name>")
    why.add_argument(
        "--jaeger",
        default=os.environ.get("KAIRYU_JAEGER_URL"),
        help="also print the rollout's trace from this Jaeger (default: $KAIRYU_JAEGER_URL)",
    )
    why.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    return parser


def _read(filename: str) -> list[Workspace]:
    if filename == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        with Path(filename).open("rb") as file:
            data = file.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise UnreadableError(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError: exit 2
    _check_structure(text)
    docs = [d for d in yaml.safe_load_all(text) if d]
    return [parse_workspace(d) for d in docs if d.get("kind") == "Workspace"]


def _check_structure(text: str) -> None:
    """Refuse aliases (an alias bomb expands a few KiB into billions of nodes) and deep nesting.

    The parser's events arrive without building anything and without recursion, so both are
    found in time linear in the input, before the constructor could spend minutes or blow the
    stack.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise UnreadableError("YAML aliases (*name) are not supported; write the value out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UnreadableError(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _table(ws: Workspace, plan: Plan, warnings: list[str], out: TextIO) -> None:
    rows = [
        ("workspace", ws.metadata.name or ""),
        ("instance type", plan.instance_type),
        ("nodes", str(plan.node_count)),
        ("GPUs per node", str(plan.gpus_per_node)),
        (
            "tensor / pipeline parallel",
            f"{plan.tensor_parallel_size} / {plan.pipeline_parallel_size}",
        ),
        ("dtype", plan.dtype),
        ("runtime", plan.runtime),
        ("max-model-len", str(plan.max_model_len or "-")),
        (
            "cost per hour",
            f"${plan.estimated_cost_per_hour}" if plan.estimated_cost_per_hour else "no list price",
        ),
        ("why", plan.reason or ""),
        ("runtime args", " ".join(plan.runtime_args or [])),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"{key:<{width}}  {value}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")


def run(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    if args.command == "trace":
        return _trace(args, out, err)
    if args.command == "why":
        return _why(args, out, err)
    settings = PlanningSettings()
    if args.cloud:
        settings = settings.model_copy(update={"cloud": Cloud(args.cloud)})
    if args.allowed_skus:
        allowed = frozenset(s.strip() for s in args.allowed_skus.split(",") if s.strip())
        settings = settings.model_copy(update={"allowed_skus": allowed})
    try:
        workspaces = _read(args.filename)
    except (OSError, yaml.YAMLError, ValueError, RecursionError, AttributeError) as exc:
        # ValueError covers invalid UTF-8, integers over Python's digit limit, UnreadableError
        # and pydantic's ValidationError.
        err.write(f"kairyu: cannot read {args.filename} as a Workspace: {exc}\n")
        return EXIT_UNREADABLE
    if not workspaces:
        err.write(f"kairyu: no Workspace in {args.filename}\n")
        return EXIT_UNREADABLE
    catalog = load_catalog()
    status = EXIT_PLANNED
    results: list[dict[str, object]] = []
    for ws in workspaces:
        name = ws.metadata.name or ""
        try:
            result = plan_checked(ws, catalog, settings)
        except PlanError as exc:
            status = EXIT_REFUSED
            results.append(
                {
                    "workspace": name,
                    "planned": False,
                    "reason": str(exc.reason),
                    "message": exc.message,
                }
            )
            if not args.json:
                err.write(f"{name}: not planned ({exc.reason}): {exc.message}\n")
            continue
        warnings = result.warnings
        results.append(
            {
                "workspace": name,
                "planned": True,
                "plan": result.plan.to_wire(),
                "warnings": warnings,
            }
        )
        if not args.json:
            _table(ws, result.plan, warnings, out)
    if args.json:
        out.write(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n")
    return status


_SET_NAMES = ("inferenceset", "inferencesets", "is")


def _trace(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    parts = args.workspace.split("/")
    resource = resources.WORKSPACES
    if len(parts) == 3 and parts[0].lower() in _SET_NAMES:  # noqa: PLR2004 - kind/ns/name
        resource, parts = resources.INFERENCESETS, parts[1:]
    namespace, name = (parts[0], parts[1]) if len(parts) == 2 else ("", "")  # noqa: PLR2004
    if not (_OBJECT_NAME.fullmatch(namespace) and _OBJECT_NAME.fullmatch(name)):
        err.write(
            "kairyu: name the Workspace as <namespace>/<name>, "
            "or an InferenceSet as inferenceset/<namespace>/<name>\n"
        )
        return EXIT_UNREADABLE

    async def metadata() -> dict[str, Any]:
        kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
        async with await KubeClient.connect(kubeconfig) as kube:
            found = await kube.get(resource, name, namespace=namespace)
        return dict(found["metadata"])

    try:
        trace_id = traceview.trace_id_of(asyncio.run(metadata()))
    except errors.KubeError as exc:
        err.write(f"kairyu: cannot read {resource.kind} {namespace}/{name}: {exc}\n")
        return EXIT_UNREADABLE
    if trace_id is None:
        err.write(f"kairyu: {args.workspace} has no rollout trace (no uid or generation)\n")
        return EXIT_REFUSED
    try:
        document = traceview.fetch(args.jaeger, trace_id)
    except (OSError, ValueError) as exc:
        err.write(f"kairyu: cannot get trace {trace_id} from {args.jaeger}: {exc}\n")
        return EXIT_UNREADABLE
    out.write(f"{args.workspace}  trace {trace_id}\n")
    out.write(traceview.render(traceview.rows(document)) + "\n")
    if args.zipkin:
        out.write(f"in a browser: {args.zipkin.rstrip('/')}/traces/{trace_id}\n")
    return EXIT_PLANNED


async def _read_facts(kubeconfig: Path | None, namespace: str, name: str) -> rollout_story.Facts:
    """The Workspace and what explains it: its Events, NodeClaims, pods, the other Workspaces."""
    async with await KubeClient.connect(kubeconfig) as kube:
        workspace = await kube.get(resources.WORKSPACES, name, namespace=namespace)
        others = await rollout_facts.listed(
            kube, resources.WORKSPACES.path(), {"limit": _OTHERS_LIMIT}
        )
        return await rollout_facts.read_facts(kube, workspace, now=datetime.now(UTC), others=others)


def _why(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    namespace, _, name = args.workspace.partition("/")
    if not (_OBJECT_NAME.fullmatch(namespace) and _OBJECT_NAME.fullmatch(name)):
        err.write("kairyu: name the Workspace as <namespace>/<name> (Kubernetes names)\n")
        return EXIT_UNREADABLE
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    try:
        facts = asyncio.run(_read_facts(kubeconfig, namespace, name))
    except errors.KubeError as exc:
        err.write(f"kairyu: cannot read Workspace {namespace}/{name}: {exc}\n")
        return EXIT_UNREADABLE
    out.write(rollout_story.explain(facts).render() + "\n")
    trace_id = traceview.trace_id_of(facts.workspace["metadata"])
    if args.jaeger and trace_id:
        try:
            document = traceview.fetch(args.jaeger, trace_id)
        except (OSError, ValueError) as exc:
            out.write(f"trace {trace_id}: not read from {args.jaeger}: {exc}\n")
        else:
            out.write(f"\ntrace {trace_id}:\n{traceview.render(traceview.rows(document))}\n")
    return EXIT_PLANNED


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
