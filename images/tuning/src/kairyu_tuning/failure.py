"""Ending a Job step with a reason Kubernetes shows.

The message goes to stderr and to /dev/termination-log, which the kubelet copies into the
container's terminated state; the tuner puts that state's message in the Workspace's condition,
so `kubectl get workspace` says why tuning failed without anyone reading logs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import NoReturn

TERMINATION_LOG = Path("/dev/termination-log")


class StepError(Exception):
    """A failure with a message meant for the user."""


def fail(message: str, code: int = 1) -> NoReturn:
    print(message, file=sys.stderr, flush=True)  # noqa: T201 - the container's own output
    # Outside a pod (tests, a laptop) there is no termination log; stderr is enough.
    with contextlib.suppress(OSError):
        TERMINATION_LOG.write_text(message[:4096])
    sys.exit(code)
