"""Prints the generated Workspace CRD (`make crds` writes it to config/crd/)."""

import sys

from kairyu_core.api.crd import render_yaml

sys.stdout.write(render_yaml())
