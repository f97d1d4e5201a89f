"""A follower as a process of its own, for the contract suite's crash test (test_bus_contract.py).

`python state_follower.py SPEC SERVICE OUT` connects as SERVICE to the bus SPEC describes (JSON,
`bus_transports.connect`), follows Pods into a `View`, and after its snapshot and each change
writes the view to OUT (JSON: `namespace/name` → value, replaced whole), until it is killed.
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    spec, service, out = sys.argv[1:]
    asyncio.run(follow(json.loads(spec), service, Path(out)))
