"""kairyu's activator: an autoscaled InferenceSet's load for KEDA, and its requests at zero."""
