"""Prints a generated CRD: `python -m kairyu_core.api <plural>` (`make crds`).

The plural is one of kairyu_core.api.crd.CRDS: workspaces (the default), inferencesets,
multiroleinferences.
"""

import sys

from kairyu_core.api.crd import render_yaml

sys.stdout.write(render_yaml(*sys.argv[1:2]))
