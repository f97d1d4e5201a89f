"""Real KEDA (its operator and its external-metrics server) running against the local cluster.

KEDA is built from the Go module proxy (tools/keda/build.sh) and runs as two child processes:

- the operator, which reconciles ScaledObjects: it asks each trigger for its metric, scales a
  target between zero and one itself, and makes an HPA for the rest;
- the metrics server, an extension API server behind the apiserver's aggregation layer
  (`v1beta1.external.metrics.k8s.io`), which the HPA controller in kube-controller-manager
  asks for the metric; it gets the values from the operator over gRPC with mutual TLS.

Out of a cluster there is no kube-proxy and no Service IP to reach, so the APIService's Service
has an EndpointSlice at this machine's own address (the apiserver's aggregator dials endpoints,
`--enable-aggregator-routing`; an EndpointSlice may not hold a loopback or link-local address),
where the metrics server listens. This machine therefore needs a non-loopback interface. One CA
signs the gRPC pair and the metrics server's serving certificate.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from kairyu_localenv import certs
from kairyu_localenv.binaries import run_build
from kairyu_localenv.cluster import LocalCluster
from kairyu_localenv.processes import Component, ManagedProcess, free_port, http_ok

BUILD_SCRIPT = Path("tools/keda/build.sh")
DIR_ENV = "KAIRYU_KEDA_DIR"
NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
OPERATOR_SERVICE = "keda-operator"
APISERVICE = "v1beta1.external.metrics.k8s.io"


def locate() -> Path:
    """$KAIRYU_KEDA_DIR if set, else what the build script reports (it builds when cold)."""
    if env := os.environ.get(DIR_ENV):
        return Path(env)
    return run_build(BUILD_SCRIPT)


def host_address() -> str:
    """This machine's address on its default route, else its hostname's: not a loopback one."""
    candidates: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # TEST-NET-2: a UDP connect sends nothing
        candidates.append(str(probe.getsockname()[0]))
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    for address in candidates:
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            return address
    raise RuntimeError(
        "KEDA's metrics server needs a non-loopback, non-link-local address on this machine "
        "(an EndpointSlice may not point elsewhere)"
    )


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalKeda(Component):
    """KEDA's operator and metrics server as child processes of the local cluster."""

    def __init__(self, cluster: LocalCluster, *, directory: Path | None = None) -> None:
        self.cluster = cluster
        self.directory = directory or locate()
        self.address = host_address()
        self.ports = {
            "grpc": free_port(),
            "metrics": free_port(),
            "health": free_port(),
            "apiserver": free_port(),
            "adapter-metrics": free_port(),
        }
        self._certs = cluster.workdir / "keda-certs"
        self._processes: list[ManagedProcess] = []

    def install(self) -> None:
        """KEDA's CRDs, its namespace, and the APIService of the external metrics API."""
        for crd in sorted((self.directory / "crds").glob("*.yaml")):
            self.cluster.apply(crd)
        self.cluster.wait_for_crds("scaledobjects.keda.sh", "triggerauthentications.keda.sh")
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )

    def _make_certs(self) -> certs.KeyPair:
        self._certs.mkdir(exist_ok=True)
        ca = certs.make_ca(self._certs, "kairyu-keda-ca")
        names = tuple(
            f"{service}{suffix}"
            for service in (OPERATOR_SERVICE, METRICS_SERVICE)
            for suffix in (
                "",
                f".{NAMESPACE}",
                f".{NAMESPACE}.svc",
                f".{NAMESPACE}.svc.cluster.local",
            )
        )
        pair = certs.issue(
            ca,
            self._certs,
            name="tls",
            common_name=OPERATOR_SERVICE,
            hosts=("localhost", *names, "127.0.0.1", self.address),
        )
        # The names KEDA reads in its certificate directory (its cert-rotation Secret's keys).
        shutil.copy(ca.cert, self._certs / "ca.crt")
        return pair

    def _register(self, ca: Path) -> None:
        """The metrics server behind the aggregation layer, at this machine's address."""
        port = self.ports["apiserver"]
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
            }
        )
        self.cluster.apply(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": METRICS_SERVICE,
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": METRICS_SERVICE},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        )
        apiservice: dict[str, Any] = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {"name": METRICS_SERVICE, "namespace": NAMESPACE, "port": 443},
                "caBundle": base64.b64encode(ca.read_bytes()).decode(),
            },
        }
        self.cluster.apply(apiservice)

    def start(self, timeout: float = 90.0) -> None:
        """Install, start both processes and register the API; on any failure, undo it all."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.install()
        pair = self._make_certs()
        env = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        }
        operator = ManagedProcess(
            "keda-operator",
            [
                str(self.directory / "keda"),
                f"--metrics-bind-address=127.0.0.1:{self.ports['metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{self.ports['health']}",
                f"--metrics-service-bind-address=127.0.0.1:{self.ports['grpc']}",
                f"--cert-dir={self._certs}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--zap-log-level=info",
            ],
            log_dir=self.cluster.logs,
            env=env,
        )
        self._processes.append(operator)
        operator.start()
        operator.wait_until(
            http_ok(f"http://127.0.0.1:{self.ports['health']}/healthz"),
            timeout=timeout,
            what="the KEDA operator's /healthz",
        )
        # /healthz answers before the gRPC listener the metrics server needs is bound.
        operator.wait_until(
            lambda: _listening(self.ports["grpc"]),
            timeout=timeout,
            what="the KEDA operator's metrics gRPC service",
        )
        adapter = ManagedProcess(
            "keda-metrics-apiserver",
            [
                str(self.directory / "keda-adapter"),
                f"--secure-port={self.ports['apiserver']}",
                f"--port={self.ports['adapter-metrics']}",  # its own /metrics; 8080 by default
                f"--bind-address={self.address}",
                f"--cert-dir={self._certs}",
                f"--tls-cert-file={pair.cert}",
                f"--tls-private-key-file={pair.key}",
                f"--lister-kubeconfig={self.cluster.kubeconfig}",
                f"--authentication-kubeconfig={self.cluster.kubeconfig}",
                f"--authorization-kubeconfig={self.cluster.kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{self.ports['grpc']}",
                f"--metrics-service-grpc-authority={OPERATOR_SERVICE}.{NAMESPACE}.svc",
            ],
            log_dir=self.cluster.logs,
            env=env,
        )
        self._processes.append(adapter)
        adapter.start()
        self._register(self._certs / "ca.crt")
        adapter.wait_until(
            self._external_metrics_served,
            timeout=timeout,
            what="the external metrics API through the apiserver",
        )

    def _external_metrics_served(self) -> bool:
        done = self.cluster.kubectl(
            "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1", check=False
        )
        return done.returncode == 0

    def stop(self) -> None:
        # An APIService whose server is gone fails discovery (and stalls namespace deletion).
        if self._processes:
            self.cluster.kubectl(
                "delete",
                "apiservice",
                APISERVICE,
                "--ignore-not-found",
                "--wait=false",
                check=False,
            )
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
