"""The names a Workspace's generated objects take, per kind, and who would claim a given name.

The deployer and the tuner create a Workspace's objects under names derived from the Workspace's
own (KAITO's: the Service and the workload carry the Workspace's name), and the watcher reports
any other object that already holds one of those names (kairyu_contracts.objectstate `Occupant`), so
that neither service has to read the apiserver before its first apply. One table, so that what
the services make and what the watcher looks for cannot drift apart. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "ConfigMap": ("-inference-config", "-model-repository", "-tuning-config"),
    "Service": ("", "-headless"),
    "NetworkPolicy": ("",),
    "Deployment": ("",),
    "StatefulSet": ("",),
    "Job": ("",),
}
"""kind → the suffixes appended to a Workspace's name to name its objects of that kind."""

INFERENCE_CONFIG = "-inference-config"
MODEL_REPOSITORY = "-model-repository"
TUNING_CONFIG = "-tuning-config"
HEADLESS = "-headless"


def child_names(workspace: str) -> list[tuple[str, str]]:
    """(kind, name) of every object kairyu may generate for the Workspace `workspace`."""
    return [
        (kind, workspace + suffix) for kind, suffixes in SUFFIXES.items() for suffix in suffixes
    ]


def claimants(kind: str, name: str) -> list[str]:
    """The Workspace names whose generated object of `kind` would be named `name`.

    More than one may claim a name: `a-headless` is Workspace `a`'s headless Service and
    Workspace `a-headless`'s own Service.
    """
    return [
        name.removesuffix(suffix)
        for suffix in SUFFIXES.get(kind, ())
        if name.endswith(suffix) and len(name) > len(suffix)
    ]
