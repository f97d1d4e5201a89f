"""Prints a generated CRD: `python -m kairyu_core.api [workspaces|inferencesets]` (`make crds`)."""

import sys

from kairyu_core.api.crd import render_yaml

sys.stdout.write(render_yaml(*sys.argv[1:2]))
