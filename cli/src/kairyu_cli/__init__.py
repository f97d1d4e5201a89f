"""The `kairyu` command: `plan` (a preview by the planner's own code), `trace` and `why`.

A user's tool, installed apart from every service image.
"""
