"""What kairyu's services and its CLI agree on, with no I/O.

`api` (the kaito.sh models, their validation and the CRDs generated from them), `catalog` (presets,
GPU SKUs, sizing from a model's config), `subjects` (the NATS subject names), `objectstate` (the
trimmed objects on the state stream), `labels` (the labels and annotations kairyu reads and writes),
`childnames` and `workloads` (the objects made for a Workspace), and `tuning` (the training config
the tuner checks and the tuning image reads). A service image and the CLI install it; nothing in it
opens a connection.
"""
