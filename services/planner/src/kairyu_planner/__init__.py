"""The planner: validates Workspaces and plans their GPU nodes; runs the set controllers.

It validates a Workspace with KAITO's rules (the admission webhook and the `Planned` condition),
resolves the preset or sizes a Hugging Face model, picks the cheapest GPU SKU that fits with the
node count, parallelism and runtime arguments (`status.plan`), and runs the InferenceSet and
MultiRoleInference controllers and the autoscaling of annotated sets.
"""
