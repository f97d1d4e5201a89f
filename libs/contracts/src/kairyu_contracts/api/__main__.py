"""Prints a generated CRD: `python -m kairyu_contracts.api <plural>` (`make crds`).

The plural is one of kairyu_contracts.api.crd.CRDS: workspaces (the default), inferencesets,
multiroleinferences.
"""

import sys

from kairyu_contracts.api.crd import render_yaml

sys.stdout.write(render_yaml(*sys.argv[1:2]))
