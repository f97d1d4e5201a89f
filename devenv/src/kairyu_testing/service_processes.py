"""A kairyu service as its own process in a test, pointed at the test's cluster, NATS and stream.

Crash, restart and leader-election tests need the real `python -m kairyu_<service>` (a SIGKILL
or SIGTERM of an in-process task proves nothing about the process); this builds its environment
the one way every such test needs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kairyu_core.bus import StreamSpec
from kairyu_localenv import LocalCluster, LocalNats
from kairyu_localenv.processes import ManagedProcess


def service_process(
    service: str,
    *,
    cluster: LocalCluster,
    nats: LocalNats,
    stream: StreamSpec,
    namespace: str,
    log_dir: Path,
    name: str | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """`python -m kairyu_<service>` (not started), its log in `log_dir/<name>.log`."""
    settings = {
        "KAIRYU_NAMESPACE": namespace,
        "KAIRYU_NATS__URL": nats.url,
        "KAIRYU_NATS__STREAM": stream.name,
        "KAIRYU_NATS__SUBJECT_PREFIX": stream.subjects.prefix,
        "KAIRYU_KUBE__KUBECONFIG": str(cluster.kubeconfig),
        "KAIRYU_LOG__FORMAT": "text",
        **(env or {}),
    }
    module = f"kairyu_{service}"
    return ManagedProcess(
        name or service, [sys.executable, "-m", module], log_dir=log_dir, env=settings
    )
