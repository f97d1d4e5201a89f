"""docs/architecture.md's table of who follows what is `kairyu_core.bus.topology`.

`KAIRYU_UPDATE_SNAPSHOTS=1` (`make snapshots`) rewrites the table from the declaration.
"""

import os
from pathlib import Path

from kairyu_core.bus import FOLLOWS, SUBJECTS, topology

DOC = Path(__file__).parents[2] / "docs/architecture.md"
BEGIN = "<!-- services: generated from kairyu_core.bus.topology; `make snapshots` -->"
END = "<!-- /services -->"


def row(service: str) -> str:
    follows = ", ".join(FOLLOWS[service])
    writes = sorted({f"`{f.wildcard}`" for f in SUBJECTS if service in f.producers})
    role = (
        "reconciles from its view" if service in topology.RECONCILERS else "watches the apiserver"
    )
    return (
        f"| {service} | `{topology.identity(service)}` | {role} | {follows} | {', '.join(writes)} |"
    )


def table() -> str:
    lines = [
        "| service | NATS identity | role | follows (its view) | publishes to |",
        "|---|---|---|---|---|",
        *(row(s) for s in topology.SERVICES),
    ]
    return "\n".join([BEGIN, *lines, END])


def test_the_architecture_table_is_the_declared_topology() -> None:
    text = DOC.read_text()
    assert BEGIN in text, f"docs/architecture.md lost its marker {BEGIN!r}"
    assert END in text, f"docs/architecture.md lost its marker {END!r}"
    before, rest = text.split(BEGIN, 1)
    current, after = rest.split(END, 1)
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        DOC.write_text(before + table() + after)
        return
    assert BEGIN + current + END == table(), (
        "docs/architecture.md's table differs from kairyu_core.bus.topology: `make snapshots`"
    )
