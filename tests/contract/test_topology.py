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
from kairyu_core.bus.servicebus_topology import servicebus_topology
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


SB_BEGIN = (
    "<!-- servicebus: generated from kairyu_core.bus.servicebus_topology; `make snapshots` -->"
)
SB_END = "<!-- /servicebus -->"


def servicebus_table() -> str:
    """The Service Bus entities: a row per topic (its readers' subscriptions), then the queues."""
    sb = servicebus_topology()
    lines = [
        "| entity | kind | written by | read by (subscription) | carries |",
        "|---|---|---|---|---|",
    ]
    for t in sb.topics:
        readers = ", ".join(f"`{s.name}`" for s in sb.subscriptions if s.topic == t.name)
        lines.append(
            f"| `{t.name}` | topic | watcher | {readers} | the latest trimmed {t.kind}s, "
            "snapshots between markers |"
        )
    for q in (sb.requests, sb.dead_letters):
        readers = ", ".join(q.readers) or "none (operators: Service Bus Explorer)"
        lines.append(f"| `{q.name}` | queue | {', '.join(q.writers)} | {readers} | {q.carries} |")
    return "\n".join([SB_BEGIN, *lines, SB_END])


def _check_or_write(begin: str, end: str, wanted: str) -> None:
    text = DOC.read_text()
    assert begin in text, f"docs/bus.md lost its marker {begin!r}"
    assert end in text, f"docs/bus.md lost its marker {end!r}"
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    current = begin + rest.split(end, 1)[0] + end
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        DOC.write_text(before + wanted + after)
        return
    assert current == wanted, "docs/bus.md's table differs from the topology: `make snapshots`"


def test_the_docs_table_is_the_declared_topology() -> None:
    _check_or_write(BEGIN, END, table())


def test_the_docs_service_bus_table_is_the_declared_mapping() -> None:
    _check_or_write(SB_BEGIN, SB_END, servicebus_table())


@pytest.mark.parametrize("service", topology.SERVICES)
def test_each_service_is_the_identity_the_topology_names(service: str) -> None:
    """The dead-letter subjects and the chart's NATS users are named after the service's
    `service_name`; a renamed service would dead-letter where no permission lets it."""
    assert SETTINGS[service]().service_name == topology.identity(service)


def test_every_service_follows_something_and_only_reconcilers_dead_letter() -> None:
    assert set(FOLLOWS) == set(topology.SERVICES) == set(SETTINGS)
    assert set(topology.RECONCILERS) == set(topology.SERVICES) - {"watcher"}
