"""`make dev`'s launcher as a test starts it: `python -m kairyu_localenv` in a state directory.

Its stdout is a pipe the test reads (the condition table, the waterfall, then one JSON line when
ready); its stderr, the log, goes to `<state dir>/launcher.log`. It is killed when the block ends,
however the test went, and its children die with it (kairyu_localenv.processes).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kairyu_localenv.binaries import repo_root


@contextmanager
def dev_launcher(state_dir: Path, args: Sequence[str] = ()) -> Iterator[subprocess.Popen[str]]:
    """The launcher with `args` (as `make dev ARGS=...` gives them), until the block ends."""
    with (
        (state_dir / "launcher.log").open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "kairyu_localenv", "--state-dir", str(state_dir), *args],
            cwd=repo_root(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as launcher,
    ):
        try:
            yield launcher
        finally:
            launcher.kill()
