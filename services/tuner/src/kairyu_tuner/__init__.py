"""kairyu tuner service.

Runs LoRA / QLoRA tuning Jobs and reports JobStarted / WorkspaceSucceeded.

Only the package exists so far: the foundation (issue 2) lays out the workspace, and the service's
handlers arrive with its own issue. It must talk to the other services only over NATS.
"""
