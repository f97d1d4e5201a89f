"""kairyu's service platform: what every service runs on.

`bus` (the only importer of nats), `kube` (the only importer of kubernetes_asyncio), `service` (the
runner: settings, logging, tracing, health and metrics, leadership, one reconcile per key),
`view`, `informing` and `reconciling` (views of the state stream and the reconcile loop),
`rollout_trace`, `tracing`, `logging`, `settings`, `health`, `metrics`. The contracts it carries
live in kairyu_contracts; the local environment and test support are kairyu_localenv and
kairyu_testing, which no service image installs.
"""
