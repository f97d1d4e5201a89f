"""A service as a process of its own, for the contract suite's crash tests (test_bus_contract.py).

`python state_follower.py follow SERVICE OUT` connects as SERVICE to the bus that
$KAIRYU_TEST_BUS_SPEC describes (JSON, `bus_transports.connect`; in the environment, since on
Service Bus it holds a key that a command line would show to `ps`), follows Pods into a `View`,
and after its snapshot and each change writes the view to OUT (JSON: `namespace/name` → value,
replaced whole), until it is killed.

`python state_follower.py reconcile SERVICE OUT BLOCK` runs a `Controlled` service over Pods
instead: each reconcile of a Workspace key appends `started <key>` to OUT, then, if the file
BLOCK exists, never returns (a handler in the middle of its work), else appends `done <key>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bus_transports import connect

from kairyu_core.bus import Snapshot
from kairyu_core.service import Controlled, until_first_ends
from kairyu_core.view import View


async def follow(spec: dict[str, Any], service: str, out: Path) -> None:
    bus = await connect(spec, service)
    view = View(["Pod"])
    async for item in bus.follow_state("Pod"):
        if isinstance(item, Snapshot):
            view.replace("Pod", item.values)
        else:
            view.apply(item.key, item.value)
        held = {f"{v['metadata']['namespace']}/{v['metadata']['name']}": v for v in view.all("Pod")}
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(held))
        os.replace(partial, out)  # a reader never sees half a view


async def reconcile_pods(spec: dict[str, Any], service: str, out: Path, block: Path) -> None:
    bus = await connect(spec, service)

    async def reconcile(key: str) -> None:
        with out.open("a") as log:
            log.write(f"started {key}\n")
        if block.exists():
            await asyncio.Event().wait()  # never returns: killed in the middle of its work
        with out.open("a") as log:
            log.write(f"done {key}\n")

    controlled = Controlled(
        bus, service=f"kairyu-{service}", kinds=["Pod"], reconcile=lambda _view: reconcile
    )
    await until_first_ends(controlled.work())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    mode, service, out, *block = sys.argv[1:]
    spec = json.loads(os.environ["KAIRYU_TEST_BUS_SPEC"])
    if mode == "follow":
        asyncio.run(follow(spec, service, Path(out)))
    else:
        asyncio.run(reconcile_pods(spec, service, Path(out), Path(block[0])))
