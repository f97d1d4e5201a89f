"""kairyu's tuning image: the data downloader, the LoRA / QLoRA entrypoint, and the adapter pusher.

Each runs as `python3 -m kairyu_tuning.<step>` in the tuner's Job (see docs/tuning.md).
"""
