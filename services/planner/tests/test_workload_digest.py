"""An edit of what shapes a Workspace's pods besides the plan is a new plan digest."""

from __future__ import annotations

from kairyu_planner.app import workload_digest
from kairyu_testing.seeds import seed


def test_only_pod_shaping_inputs_count_and_a_plain_preset_has_none() -> None:
    plain = seed("inference")
    assert workload_digest(plain) is None  # plans of such Workspaces hash as before
    configured = seed("inference")
    configured["inference"]["config"] = "tuned-config"
    other = seed("inference")
    other["inference"]["config"] = "other-config"
    assert workload_digest(configured) is not None
    assert workload_digest(configured) != workload_digest(other)
    keyed = seed("inference")
    keyed["metadata"]["annotations"] = {"kairyu.io/api-key-secret": "key"}
    assert workload_digest(keyed) is not None
    # A label or an annotation that shapes no pod changes nothing.
    labelled = seed("inference")
    labelled["metadata"]["annotations"] = {"team": "ml"}
    assert workload_digest(labelled) is None
