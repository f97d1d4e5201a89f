"""The `kairyu` command: `kairyu plan` (a plan preview by the planner's own code), `kairyu trace`.

A user's tool, installed apart from every service image.
"""
