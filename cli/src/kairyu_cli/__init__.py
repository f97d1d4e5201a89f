"""The `kairyu` command: `kairyu plan` (a plan preview, with the planner's own code) and `kairyu trace`.

A user's tool, installed apart from every service image.
"""
