"""docs/bus.md's topology table is `kairyu_core.bus.topology`, and each service is who it declares.

The table is what operators and the authors of a second transport (issue 20) read; it must not
drift from the declaration the set-up step, the services and the chart's permissions follow.
`KAIRYU_UPDATE_SNAPSHOTS=1` (`make snapshots`) rewrites the table from the declaration.
"""

import os
from pathlib import Path

import pytest

from kairyu_activator.settings import ActivatorSettings
from kairyu_core.bus import FOLLOWS, SUBJECTS, SubjectFamily, topology
from kairyu_core.settings import ServiceSettings
from kairyu_deployer.settings import DeployerSettings
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.settings import ProvisionerSettings
from kairyu_tuner.settings import TunerSettings
from kairyu_watcher.settings import WatcherSettings

DOC = Path(__file__).parents[2] / "docs/bus.md"
BEGIN = "<!-- topology: generated from kairyu_core.bus.topology; `make snapshots` -->"
END = "<!-- /topology -->"
SETTINGS: dict[str, type[ServiceSettings]] = {
    "watcher": WatcherSettings,
    "planner": PlannerSettings,
    "provisioner": ProvisionerSettings,
    "deployer": DeployerSettings,
    "tuner": TunerSettings,
    "activator": ActivatorSettings,
}


def row(family: SubjectFamily) -> str:
    readers = ", ".join(family.readers) or "none (operators: `nats stream view`)"
    producers = ", ".join(family.producers)
    return (
        f"| `{family.subject}` | `{family.stream}` | {producers} | {readers} | {family.carries} |"
    )


def table() -> str:
    lines = [
        "| subject | stream | written by | read by | carries |",
        "|---|---|---|---|---|",
        *(row(f) for f in SUBJECTS),
    ]
    return "\n".join([BEGIN, *lines, END])


def test_the_docs_table_is_the_declared_topology() -> None:
    text = DOC.read_text()
    assert BEGIN in text, f"docs/bus.md lost its marker {BEGIN!r}"
    assert END in text, f"docs/bus.md lost its marker {END!r}"
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    current = BEGIN + rest.split(END, 1)[0] + END
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        DOC.write_text(before + table() + after)
        return
    assert current == table(), "docs/bus.md's table differs from the topology: `make snapshots`"


@pytest.mark.parametrize("service", topology.SERVICES)
def test_each_service_is_the_identity_the_topology_names(service: str) -> None:
    """The dead-letter subjects and the chart's NATS users are named after the service's
    `service_name`; a renamed service would dead-letter where no permission lets it."""
    assert SETTINGS[service]().service_name == topology.identity(service)


def test_every_service_follows_something_and_only_reconcilers_dead_letter() -> None:
    assert set(FOLLOWS) == set(topology.SERVICES) == set(SETTINGS)
    assert set(topology.RECONCILERS) == set(topology.SERVICES) - {"watcher"}
