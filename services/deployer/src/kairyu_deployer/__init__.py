"""The deployer: runs the inference workload on the Workspace's nodes and reports InferenceReady."""
