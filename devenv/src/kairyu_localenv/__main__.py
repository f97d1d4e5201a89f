"""`make dev`: bring up the local control plane, GPU capacity and the bus; keep them until Ctrl-C.

GPU nodes come the way the chosen provisioner backend gets them: from real Karpenter with its kwok
provider (`karpenter`, the default), from the local ARM endpoint that plays AKS (`azure`), or as
nodes made up front for the seed (`byo`). The bus is NATS, or with `--bus servicebus` the local
Service Bus endpoint (docs/bus.md): the services are the same, only their settings differ. The
kubeconfig and the bus's address are written under ./dev-cluster/ (stable paths, so another
terminal can use them while this runs); everything else lives in a temporary directory removed
on exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import yaml

from kairyu_activator.settings import ActivatorSettings
from kairyu_cli import traceview
from kairyu_core.bus.topology import SERVICES
from kairyu_core.settings import ServiceSettings
from kairyu_localenv import Binaries, GpuNodeSpec, LocalCluster, LocalNats, admission
from kairyu_localenv.binaries import repo_root
from kairyu_localenv.jaeger import LocalJaeger
from kairyu_localenv.karpenter_kwok import LocalKarpenter
from kairyu_localenv.keda import LocalKeda, host_address
from kairyu_localenv.processes import ManagedProcess, free_port, http_ok
from kairyu_localenv.service_env import env_of
from kairyu_localenv.servicebus_process import ServiceBusProcess
from kairyu_localenv.zipkin import LocalZipkin, missing_java
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.settings import ProvisionerSettings

log = logging.getLogger("kairyu.dev")

# The seed's example SKU (one V100 16 GB), labelled to match the seed Workspace's labelSelector.
EXAMPLE_NODES = GpuNodeSpec(
    instance_type="Standard_NC6s_v3",
    gpu_product="Tesla-V100-PCIE-16GB",
    gpu_count=1,
    gpu_memory_mib=16384,
    cpu="6",
    memory="112Gi",
)


LocalBus = LocalNats | ServiceBusProcess
"""The bus `make dev` runs: NATS (the default) or the local Service Bus endpoint."""


def bus_settings(bus: LocalBus) -> dict[str, str]:
    """The services' settings that point them at `bus` (the chart sets the same variables)."""
    if isinstance(bus, ServiceBusProcess):
        return env_of(
            ServiceSettings,
            bus="servicebus",
            servicebus={"connection_string": bus.connection_string()},
        )
    return env_of(ServiceSettings, nats={"url": bus.url})


def bus_address(bus: LocalBus) -> str:
    return bus.address if isinstance(bus, ServiceBusProcess) else bus.url


def start_services(
    cluster: LocalCluster,
    bus: LocalBus,
    extra_env: dict[str, dict[str, str]],
    *,
    otlp_endpoint: str | None = None,
    zipkin_endpoint: str | None = None,
) -> list[ManagedProcess]:
    """Start every kairyu service, pointed at this cluster and bus (and Jaeger and Zipkin)."""
    env = bus_settings(bus) | env_of(
        ServiceSettings, kube={"kubeconfig": cluster.kubeconfig}, log={"format": "text"}
    )
    if otlp_endpoint:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "500",  # ms: the waterfall is shown right after Ready
        }
    if zipkin_endpoint:
        env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] = zipkin_endpoint
    if isinstance(bus, LocalNats):
        set_up_streams(env)  # Service Bus: its entities came with the endpoint, as from a template
    started = []
    for service in SERVICES:
        module = f"kairyu_{service}"
        process = ManagedProcess(
            module,
            [sys.executable, "-m", module],
            log_dir=cluster.logs,
            env={**env, **extra_env.get(service, {})},
        )
        process.start()
        started.append(process)
    return started


def service_env(
    backend: str, webhook_env: dict[str, str], provisioner_env: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Each service's own settings in `make dev`, beyond the cluster's and the bus's."""
    load_port = free_port()
    planner_env = webhook_env | env_of(
        PlannerSettings,
        planning={"node_provisioner": backend},
        autoscaling={"activator_url": f"http://127.0.0.1:{load_port}"},
    )
    activator_env = activator_settings(load_port)
    return {"planner": planner_env, "provisioner": provisioner_env, "activator": activator_env}


def activator_settings(load_port: int) -> dict[str, str]:
    """The activator's ports, and the address the sets' Services point at while cold.

    An EndpointSlice may not name a loopback address: without another one on this machine the
    activator leaves the Services alone (it still serves the load and its 503s).
    """
    try:
        address = host_address()
    except RuntimeError:
        address = ""
    listen_on = "0.0.0.0"  # noqa: S104 - KEDA dials 127.0.0.1, the Services this address
    return env_of(
        ActivatorSettings,
        activator={
            "host": listen_on,
            "load_port": load_port,
            "port": free_port(),
            "address": address,
        },
    )


def set_up_streams(env: dict[str, str]) -> None:
    """Create the streams with the set-up step, as the chart's nats-setup sidecar does.

    It is the one component that configures them; the services only wait until they exist. The
    local NATS keeps its storage across restarts, so running it once is enough here.
    """
    done = subprocess.run(
        [sys.executable, "-m", "kairyu_core.bus.setup"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the NATS set-up step failed:\n{done.stderr[-2000:]}")


def start_capacity(
    backend: str, cluster: LocalCluster, stack: list[ManagedProcess | LocalKarpenter]
) -> dict[str, str]:
    """Whatever gives the backend its GPU nodes; returns the provisioner's settings for it."""
    common = env_of(ProvisionerSettings, backend=backend, provisioning={"check_interval_s": 5})
    if backend == "karpenter":
        karpenter = LocalKarpenter(cluster)
        stack.append(karpenter)
        karpenter.start()
        return common
    if backend == "azure":
        port = free_port()
        arm = ManagedProcess(
            "fake-arm",
            [
                sys.executable,
                "-m",
                "kairyu_localenv.fake_arm",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--port={port}",
            ],
            log_dir=cluster.logs,
        )
        stack.append(arm)
        arm.start()
        url = f"http://127.0.0.1:{port}"
        arm.wait_until(http_ok(f"{url}/healthz"), timeout=30, what="the local ARM endpoint")
        return common | env_of(
            ProvisionerSettings,
            azure={
                "subscription_id": "00000000-0000-0000-0000-000000000000",
                "resource_group": "kairyu-dev",
                "cluster_name": "kairyu-dev",
                "endpoint": url,
                "credential": "none",
                "polling_interval_s": 1,
            },
        )
    cluster.add_gpu_nodes(EXAMPLE_NODES, count=1, prefix="gpu-v100", labels={"apps": "phi-3"})
    return common


def apply_example(cluster: LocalCluster, workspace: Path, backend: str) -> None:
    """Apply the Workspace to show; on your own nodes (byo) without its instanceType.

    That is KAITO's rule for bring-your-own nodes: the planner reads the GPU labels of the
    nodes the selector matches instead.
    """
    if backend != "byo":
        cluster.kubectl("apply", "-f", str(workspace))
        return
    doc = yaml.safe_load(workspace.read_text())
    (doc.get("resource") or {}).pop("instanceType", None)
    cluster.apply(doc)


def register_webhook(
    cluster: LocalCluster, services: list[ManagedProcess], endpoint: admission.WebhookEndpoint
) -> None:
    """Once the planner answers on its webhook port, let the apiserver call it."""
    planner = next((p for p in services if p.name == "kairyu_planner"), None)
    if planner is None:
        return
    planner.wait_until(
        http_ok(endpoint.health_url, context=endpoint.client_context()),
        timeout=60,
        what="the planner's admission webhook",
    )
    cluster.apply(admission.registration(endpoint))


_COLUMNS = ("Planned", "ResourceReady", "InferenceReady", "JobStarted", "WorkspaceReady")


def progress_row(obj: dict[str, Any]) -> str:
    """One line of the live table: each condition's status (and reason when not True), the state."""
    status = obj.get("status") or {}
    found = {c["type"]: c for c in status.get("conditions") or []}
    cells = []
    for kind in _COLUMNS:
        cond = found.get(kind)
        if cond is None:
            cells.append(f"{kind}=-")
        elif cond["status"] == "True":
            cells.append(f"{kind}=True")
        else:
            cells.append(f"{kind}={cond['status']}({cond.get('reason', '')})")
    return "  ".join([*cells, f"state={status.get('state') or '-'}"])


def watch_rollout(cluster: LocalCluster, workspace: Path, timeout: float = 240.0) -> dict[str, Any]:
    """Print a row each time the Workspace's conditions change, until WorkspaceReady=True."""
    began = time.monotonic()
    last = ""
    obj: dict[str, Any] = {}
    while time.monotonic() - began < timeout:
        got = cluster.kubectl("get", "-f", str(workspace), "-o", "json", check=False)
        if got.returncode == 0:
            obj = json.loads(got.stdout)
            row = progress_row(obj)
            if row != last:
                sys.stdout.write(f"  +{time.monotonic() - began:5.1f}s  {row}\n")
                sys.stdout.flush()
                last = row
            ready = any(
                c["type"] == "WorkspaceReady" and c["status"] == "True"
                for c in (obj.get("status") or {}).get("conditions") or []
            )
            if ready and (obj.get("status") or {}).get("state"):
                return obj
        time.sleep(0.5)
    raise TimeoutError(f"{workspace.name} not WorkspaceReady after {timeout:.0f}s: {last}")


def show_trace(obj: dict[str, Any], jaeger: LocalJaeger) -> str | None:
    """The rollout's waterfall, once its spans reached Jaeger (exported in batches); its id."""
    trace_id = traceview.trace_id_of(obj["metadata"])
    if trace_id is None:
        return None
    # Each service exports its own batches: wait for every phase, not only the watcher's last.
    phases = {"plan", "provision", "tune" if obj.get("tuning") else "deploy", "ready"}
    table: list[traceview.Row] = []
    for _ in range(40):
        try:
            table = traceview.rows(traceview.fetch(jaeger.query_url, trace_id))
        except OSError:
            table = []
        seen = {r.phase for r in table}
        if "failed" in seen or phases <= seen:
            break
        time.sleep(0.5)
    sys.stdout.write(f"rollout trace {trace_id}:\n{traceview.render(table)}\n")
    return trace_id


def write_state(
    state_dir: Path,
    cluster: LocalCluster,
    bus: LocalBus,
    jaeger: LocalJaeger,
    zipkin: LocalZipkin | None,
) -> Path:
    """Write the kubeconfig and a shell env file where another terminal can find them."""
    kubeconfig = (state_dir / "kubeconfig").resolve()
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    kubeconfig.chmod(0o600)
    env = state_dir / "env"
    env.unlink(missing_ok=True)
    env.touch(mode=0o600)  # on Service Bus it holds the endpoint's key
    env.write_text(
        f"export KUBECONFIG={kubeconfig}\n"
        + "".join(f"export {name}='{value}'\n" for name, value in bus_settings(bus).items())
        + f"export KAIRYU_JAEGER_URL={jaeger.query_url}\n"
        + (f"export KAIRYU_ZIPKIN_URL={zipkin.url}\n" if zipkin is not None else "")
        + f"export PATH={cluster.binaries.directory}:$PATH\n"
    )
    return kubeconfig


def report(
    cluster: LocalCluster,
    bus: LocalBus,
    jaeger: LocalJaeger,
    *,
    trace_ui: str | None,
    services: list[ManagedProcess],
    state_dir: Path,
    kubeconfig: Path,
) -> None:
    """Tell the user where everything is and show the Workspace."""
    log.info("  apiserver  %s", cluster.server)
    log.info("  bus        %s", bus_address(bus))
    log.info("  jaeger     %s (query API, for kairyu trace and kairyu why)", jaeger.query_url)
    nodes = cluster.kubectl(
        "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}", check=False
    ).stdout.split()
    log.info("  GPU nodes  %s", ", ".join(nodes) or "none")
    log.info("  services   %s", ", ".join(p.name for p in services) or "none yet")
    log.info("  logs       %s", cluster.logs)
    log.info("in another terminal:  source %s/env && kubectl get workspace", state_dir)
    log.info("  the rollout as a waterfall:  uv run kairyu trace default/<workspace>")
    for example in sorted((repo_root() / "examples").glob("*.yaml")):
        log.info("  another example:  kubectl apply -f examples/%s", example.name)
    sys.stdout.write(cluster.kubectl("get", "workspaces.v1alpha1.kaito.sh", "-A").stdout)
    plans = cluster.kubectl(
        "get", "workspaces", "-A", "-o",
        "custom-columns=NAME:.metadata.name,PLANNED:.status.conditions[?(@.type=='Planned')].status,"
        "SKU:.status.plan.instanceType,NODES:.status.plan.nodeCount,"
        "COST/H:.status.plan.estimatedCostPerHour,WORKERS:.status.workerNodes",
    )  # fmt: skip
    sys.stdout.write(plans.stdout)
    if trace_ui is not None:
        log.info("  the seed's rollout in a browser:  %s", trace_ui)
    sys.stdout.write(
        json.dumps(
            {
                "apiserver": cluster.server,
                "bus": bus_address(bus),
                "kubeconfig": str(kubeconfig),
                "trace_ui": trace_ui,
            }
        )
        + "\n"
    )
    sys.stdout.flush()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path("dev-cluster"))
    parser.add_argument("--workspace", type=Path, default=None, help="Workspace manifest to apply")
    parser.add_argument(
        "--backend",
        choices=("karpenter", "azure", "byo"),
        default="karpenter",
        help="where the provisioner gets GPU nodes (default: real Karpenter, kwok provider)",
    )
    parser.add_argument(
        "--bus",
        choices=("nats", "servicebus"),
        default="nats",
        help="the services' bus: NATS JetStream (default), or Azure Service Bus played by the "
        "local endpoint (docs/bus.md)",
    )
    parser.add_argument(
        "--keda",
        action="store_true",
        help="run KEDA too, so annotated InferenceSets scale on load (docs/autoscaling.md); "
        "built on first use, about 10 minutes",
    )
    parser.add_argument(
        "--no-trace-ui",
        action="store_true",
        help="do not run Zipkin, the trace UI in the browser (saves its Java's 250 MB of memory)",
    )
    parser.add_argument(
        "--exit-after-ready", action="store_true", help="stop once everything is up (CI smoke run)"
    )
    return parser.parse_args()


def trace_ui(unwanted: bool) -> LocalZipkin | None:
    """Zipkin, unless not wanted or not possible: without Java, make dev says so and runs on."""
    reason = "--no-trace-ui" if unwanted else missing_java()
    if reason is not None:
        log.warning("no trace UI in the browser: %s", reason)
        return None
    return LocalZipkin()


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C stops it even when started where SIGINT is ignored (a shell's `&` without job
    # control passes that on, and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = repo_root()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cluster = LocalCluster(Binaries.locate())
    bus: LocalBus = ServiceBusProcess() if args.bus == "servicebus" else LocalNats()
    jaeger = LocalJaeger()
    zipkin = trace_ui(args.no_trace_ui)
    services: list[ManagedProcess] = []
    capacity: list[ManagedProcess | LocalKarpenter] = []
    keda: LocalKeda | None = None
    try:
        if zipkin is not None:
            zipkin.launch()  # the JVM starts while the control plane does
        cluster.start()
        bus.start()
        jaeger.start()
        if zipkin is not None:
            zipkin.finish_start()
        log.info("control plane, %s and tracing up in %.1fs", args.bus, time.monotonic() - started)
        cluster.install_crds(root)
        provisioner_env = start_capacity(args.backend, cluster, capacity)
        endpoint = admission.prepare(cluster.workdir / "webhook")
        if args.keda:
            keda = LocalKeda(cluster)
            keda.start()
        extra_env = service_env(args.backend, endpoint.env(), provisioner_env)
        services.extend(
            start_services(
                cluster,
                bus,
                extra_env,
                otlp_endpoint=jaeger.otlp_endpoint,
                zipkin_endpoint=zipkin.span_endpoint if zipkin is not None else None,
            )
        )
        register_webhook(cluster, services, endpoint)
        workspace = args.workspace or root / "examples/workspace-phi-3-mini.yaml"
        apply_example(cluster, workspace, args.backend)
        sys.stdout.write(f"{workspace.name}: conditions as they change\n")
        final = watch_rollout(cluster, workspace)

        kubeconfig = write_state(args.state_dir, cluster, bus, jaeger, zipkin)
        log.info("local cluster ready in %.1fs", time.monotonic() - started)
        trace_id = show_trace(final, jaeger)
        report(
            cluster,
            bus,
            jaeger,
            trace_ui=zipkin.trace_url(trace_id) if zipkin and trace_id else None,
            services=services,
            state_dir=args.state_dir,
            kubeconfig=kubeconfig,
        )
        if not args.exit_after_ready:
            log.info("running until Ctrl-C")
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        shut_down(
            args.state_dir,
            [*reversed(services), *reversed(capacity), keda, bus, jaeger, zipkin, cluster],
        )
    return 0


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def shut_down(state_dir: Path, parts: Sequence[_Stoppable | None]) -> None:
    """Stop `parts` in this order and remove the files another terminal reads."""
    # A Ctrl-C reaches make, uv and this process alike, and uv forwards its own copy: the second
    # must not cut the clean-up short and leave the cluster's processes behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info("stopping")
    for part in parts:
        if part is not None:
            part.stop()
    (state_dir / "kubeconfig").unlink(missing_ok=True)
    (state_dir / "env").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
