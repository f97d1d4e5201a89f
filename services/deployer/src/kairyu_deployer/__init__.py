"""kairyu deployer service.

Builds and applies the inference workload (Deployment or StatefulSet, Services, ConfigMap,
adapters) for the planned runtime and reports InferenceReady.

Only the package exists so far: the foundation (issue 2) lays out the workspace, and the service's
handlers arrive with its own issue. It must talk to the other services only over NATS.
"""
