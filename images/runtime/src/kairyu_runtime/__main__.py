"""`python -m kairyu_runtime` (and /workspace/tfs/inference_api.py in the image): load, then serve.

The model is loaded before the port opens: until then the startup probe fails by connection, and a
model that cannot load ends the process with its reason, which the deployer reports as the pod's
failure instead of a server that answers 503 forever.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from kairyu_runtime import engine, logs
from kairyu_runtime.adapters import AdapterError
from kairyu_runtime.server import create_app
from kairyu_runtime.serving_metrics import Metrics
from kairyu_runtime.settings import RuntimeSettings

log = logging.getLogger("kairyu_runtime")


def main() -> None:
    settings = RuntimeSettings(_cli_parse_args=True)
    logs.configure(settings.log_format, settings.log_level)
    try:
        loaded = engine.load(settings, os.environ)
    except (engine.LoadError, AdapterError) as err:
        log.error("cannot start: %s", err)  # noqa: TRY400 - the reason is the message, not a trace
        sys.exit(1)
    # The weights are in memory: from here on nothing in this process may reach a model hub.
    engine.seal_hubs(os.environ)
    metrics = Metrics()
    runner = engine.Runner(loaded, max_queue=settings.max_queue, on_done=metrics.count)
    app = create_app(runner, metrics, settings)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    finally:
        runner.close()


if __name__ == "__main__":
    main()
