"""`kairyu why` against the real apiserver: it reads the Workspace, the Events on it (by uid),
its pods and NodeClaims, and says where the rollout stands. No kairyu service runs here, so the
Workspace waits for the planner, which is what it must say."""

from __future__ import annotations

import asyncio
import io
import json

from kairyu_cli.commands import EXIT_PLANNED, EXIT_UNREADABLE, run
from kairyu_core.kube import KubeClient, resources, workspace_events
from kairyu_localenv import LocalCluster
from kairyu_testing.seeds import seed


async def test_why_explains_a_workspace_from_the_cluster(
    cluster: LocalCluster, namespace: str, kube: KubeClient
) -> None:
    manifest = seed("inference")
    manifest["metadata"] = {"name": "asked", "namespace": namespace}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    live = await kube.get(resources.WORKSPACES, "asked", namespace=namespace)
    await workspace_events.record(
        kube,
        live,
        reason="QuotaExceeded",
        message="Standard_NC6s_v3: 0 of 6 cores left",
        component="test",
        type="Warning",
    )
    # An Event about another object of the same name must not be taken for this one's.
    other = {**live, "metadata": {**live["metadata"], "uid": "not-this-one"}}
    await workspace_events.record(
        kube, other, reason="Unrelated", message="x", component="test", type="Warning"
    )

    out, err = io.StringIO(), io.StringIO()
    args = ["why", f"{namespace}/asked", "--kubeconfig", str(cluster.kubeconfig)]
    code = await asyncio.to_thread(run, args, out, err)

    assert code == EXIT_PLANNED, err.getvalue()
    said = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    assert said["workspace"].strip() == f"{namespace}/asked"
    assert said["phase"].strip().startswith("plan (Planned), since")
    assert said["waiting for"].strip() == "the planner has not looked at it yet"
    assert "QuotaExceeded: Standard_NC6s_v3: 0 of 6 cores left" in said["last failure"]
    assert "Unrelated" not in out.getvalue()


def test_why_for_a_workspace_that_does_not_exist_exits_2(
    cluster: LocalCluster, namespace: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = ["why", f"{namespace}/missing", "--kubeconfig", str(cluster.kubeconfig)]
    assert run(args, out, err) == EXIT_UNREADABLE
    assert err.getvalue().startswith(f"kairyu: cannot read Workspace {namespace}/missing")
