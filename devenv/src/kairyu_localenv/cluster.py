"""A real Kubernetes control plane on 127.0.0.1, with kwok GPU nodes.

etcd, kube-apiserver, controller-manager, scheduler and kwok start in that order, with free ports
and fresh certificates.

kwok plays the kubelet for nodes annotated `kwok.x-k8s.io/node=fake`: it keeps them Ready and moves
pods bound to them to Running, so scheduling, GPU resource accounting and workload controllers all
behave as in a real cluster while no container runs. Used by the pytest plugin and by `make dev`.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kairyu_contracts.api import GROUP
from kairyu_contracts.api.crd import CRDS
from kairyu_localenv import certs
from kairyu_localenv.binaries import Binaries
from kairyu_localenv.nodes import GpuNodeSpec, gpu_node_manifest
from kairyu_localenv.processes import Component, ManagedProcess, StartupError, free_port, http_ok

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
_SERVICE_CIDR = "10.96.0.0/16"
_POD_CIDR = "10.244.0.0/16"  # kwok hands out pod IPs from here
_PORT_ATTEMPTS = 3
_PORTS_OF = {
    "etcd": ("etcd", "etcd-peer"),
    "kube-apiserver": ("apiserver",),
    "kube-controller-manager": ("controller-manager",),
    "kube-scheduler": ("scheduler",),
    "kwok": ("kwok",),
}
log = logging.getLogger(__name__)


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


class LocalCluster(Component):
    """The control plane's processes, their certificates and the admin kubeconfig."""

    def __init__(
        self, binaries: Binaries, *, workdir: Path | None = None, keep_workdir: bool = False
    ) -> None:
        self.binaries = binaries
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kairyu-cluster-"))
        self._keep = keep_workdir
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = {
            name: free_port()
            for name in (
                "etcd",
                "etcd-peer",
                "apiserver",
                "controller-manager",
                "scheduler",
                "kwok",
            )
        }
        self.kubeconfig = self.workdir / "kubeconfig"
        self._processes: dict[str, ManagedProcess] = {}
        self._pki = self.workdir / "pki"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The running components by name (etcd, kube-apiserver, ..., kwok), in start order."""
        return dict(self._processes)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90.0) -> None:
        """Start every component in dependency order and wait until each is healthy."""
        try:
            self._make_pki()
            for component, start in (
                ("etcd", self._start_etcd),
                ("kube-apiserver", self._start_apiserver),
                ("kube-controller-manager", self._start_controller_manager),
                ("kube-scheduler", self._start_scheduler),
                ("kwok", self._start_kwok),
            ):
                self._start_retrying_port_clashes(component, start, timeout)
            self.wait_for_default_service_account("default", timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything in reverse order; remove the temporary directory unless kept."""
        for name in reversed(list(self._processes)):
            self._processes.pop(name).stop()
        if self._own_workdir and not self._keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self, *, down_for: float = 0.0) -> None:
        """Stop kube-apiserver, wait `down_for` seconds, start it again on the same port."""
        self._processes.pop("kube-apiserver").stop()
        time.sleep(down_for)
        self._start_apiserver(90.0)

    # ------------------------------------------------------------------ components
    def _make_pki(self) -> None:
        self._pki.mkdir(exist_ok=True)
        self.ca = certs.make_ca(self._pki)
        self.serving = certs.issue(
            self.ca,
            self._pki,
            name="apiserver",
            common_name="kube-apiserver",
            hosts=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "127.0.0.1",
                "10.96.0.1",
            ),
        )
        self.admin = certs.issue(
            self.ca,
            self._pki,
            name="admin",
            common_name="kairyu-admin",
            organization="system:masters",
        )
        self.sa_keys = certs.make_service_account_keys(self._pki)
        # The aggregation layer (an extension API server such as KEDA's external metrics): the
        # apiserver proxies to it as `front-proxy-client`, a name only this CA vouches for.
        self.front_proxy_ca = certs.make_ca(self._pki, "kairyu-front-proxy-ca")
        self.front_proxy_client = certs.issue(
            self.front_proxy_ca,
            self._pki,
            name="front-proxy-client",
            common_name="front-proxy-client",
        )
        self._write_kubeconfig()

    def _write_kubeconfig(self) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kairyu",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(self.admin.cert),
                        "client-key-data": b64(self.admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kairyu",
                    "context": {"cluster": "kairyu", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "kairyu",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_retrying_port_clashes(
        self, component: str, start: Callable[[float], None], timeout: float
    ) -> None:
        # Ports are picked free before the components bind them; in between, another process (or
        # an outgoing connection's ephemeral port) can take one. Then pick again, a few times.
        for attempt in range(_PORT_ATTEMPTS):
            try:
                start(timeout)
            except StartupError as exc:
                if not exc.port_clash or attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return
            log.warning("%s: port taken, retrying on fresh ports", component)
            self._processes.pop(component).stop()
            for port in _PORTS_OF[component]:
                self.ports[port] = free_port()
            if component == "kube-apiserver":
                self._write_kubeconfig()

    def _add(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_dir=self.logs)
        self._processes[name] = proc
        proc.start()
        return proc

    def _start_etcd(self, timeout: float) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        proc = self._add(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=kairyu",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kairyu={peer}",
                # Throwaway data: skipping fsync makes the apiserver much faster on slow disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        proc.wait_until(
            http_ok(f"{client}/health", expect=b'"health":"true"'),
            timeout=timeout,
            what="etcd health",
        )

    def _client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx

    def _start_apiserver(self, timeout: float) -> None:
        proc = self._add(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--client-ca-file={self.ca.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                f"--requestheader-client-ca-file={self.front_proxy_ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.front_proxy_client.cert}",
                f"--proxy-client-key-file={self.front_proxy_client.key}",
                # No kube-proxy here: an APIService's Service is reached at its endpoints.
                "--enable-aggregator-routing=true",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        proc.wait_until(
            http_ok(f"{self.server}/readyz", context=self._client_tls()),
            timeout=timeout,
            what="apiserver /readyz",
        )

    def _start_controller_manager(self, timeout: float) -> None:
        port = self.ports["controller-manager"]
        proc = self._add(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_keys.key}",
                f"--root-ca-file={self.ca.cert}",
                f"--cluster-signing-cert-file={self.ca.cert}",
                f"--cluster-signing-key-file={self.ca.key}",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                # Node lifecycle would taint kwok nodes whose heartbeats come late on a busy laptop.
                "--node-monitor-grace-period=60s",
                # Autoscaling tests wait for HPAs (KEDA's): every 5 s rather than 15.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--v=1",
            ],
        )
        proc.wait_until(
            http_ok(f"https://127.0.0.1:{port}/healthz", context=_insecure()),
            timeout=timeout,
            what="/healthz",
        )

    def _start_scheduler(self, timeout: float) -> None:
        port = self.ports["scheduler"]
        proc = self._add(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        proc.wait_until(
            http_ok(f"https://127.0.0.1:{port}/healthz", context=_insecure()),
            timeout=timeout,
            what="/healthz",
        )

    def _start_kwok(self, timeout: float) -> None:
        port = self.ports["kwok"]
        proc = self._add(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={_POD_CIDR}",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{port}",
                f"--config={KWOK_STAGES}",
                "--node-lease-duration-seconds=40",
            ],
        )
        proc.wait_until(
            http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=timeout, what="/healthz"
        )

    def create_namespace(self, name: str, *, timeout: float = 60.0) -> None:
        """Create a namespace and wait until pods can be created in it.

        Pods are refused until the controller-manager has made the namespace's `default` service
        account, which takes a moment, longer right after an apiserver restart.
        """
        self.kubectl("create", "namespace", name)
        self.wait_for_default_service_account(name, timeout=timeout)

    def wait_for_default_service_account(self, namespace: str, *, timeout: float = 60.0) -> None:
        """Wait until `namespace` has its `default` service account."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False)
            if found.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"no default service account in {namespace} after {timeout:.0f}s")

    # ------------------------------------------------------------------ helpers
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl here; with `check`, a failure raises with kubectl's stderr."""
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def wait_for_crds(self, *names: str, timeout: float = 60.0) -> None:
        """Wait until these CRDs are Established (their resources can be used).

        kubectl wait fails at once, instead of waiting, when a CRD just created has no
        status.conditions yet ("accessor error: <nil>"); that case is retried here.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, int(deadline - time.monotonic()))
            result = self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={left}s",
                *(f"crd/{n}" for n in names),
                check=False,
            )
            if result.returncode == 0:
                return
            if "accessor error" not in result.stderr or time.monotonic() > deadline:
                raise KubectlError(f"CRDs {', '.join(names)} not established: {result.stderr}")
            time.sleep(0.2)

    def install_crds(self, root: Path) -> None:
        """Apply kairyu's kaito.sh CRDs from the checkout `root` and wait until they serve."""
        for plural in CRDS:
            self.apply(root / f"config/crd/kaito.sh_{plural}.yaml")
        self.wait_for_crds(*(f"{plural}.{GROUP}" for plural in CRDS))

    def apply(self, manifest: dict[str, Any] | str | Path) -> None:
        """`kubectl apply --server-side` a manifest (a dict, YAML text or a file)."""
        if isinstance(manifest, Path):
            text = manifest.read_text()
        elif isinstance(manifest, dict):
            text = json.dumps(manifest)
        else:
            text = manifest
        self.kubectl(
            "apply", "--server-side", "--field-manager=kairyu-localenv", "-f", "-", input=text
        )

    def add_gpu_nodes(
        self,
        spec: GpuNodeSpec,
        *,
        count: int = 1,
        prefix: str | None = None,
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
    ) -> list[str]:
        """Create `count` kwok GPU nodes of one SKU and wait until they are Ready."""
        names = []
        for i in range(count):
            name = f"{prefix or spec.instance_type.lower().replace('_', '-')}-{i}"
            self.kubectl(
                "create",
                "-f",
                "-",
                input=json.dumps(gpu_node_manifest(name, spec, labels=labels, taints=taints)),
            )
            names.append(name)
        self.kubectl(
            "wait", "--for=condition=Ready", "--timeout=60s", *[f"node/{n}" for n in names]
        )
        return names


def _insecure() -> ssl.SSLContext:
    # Health endpoints of the controller-manager and scheduler use self-signed certificates that
    # they generate at start-up; only the port on 127.0.0.1 is probed.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
