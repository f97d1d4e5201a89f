"""kairyu's tuner: runs LoRA / QLoRA tuning Jobs; reports JobStarted and WorkspaceSucceeded."""
