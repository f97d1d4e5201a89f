"""Prints the generated Workspace CRD: `python -m kairyu_core.api > config/crd/kaito.sh_workspaces.yaml`."""

import sys

from kairyu_core.api.crd import render_yaml

sys.stdout.write(render_yaml())
