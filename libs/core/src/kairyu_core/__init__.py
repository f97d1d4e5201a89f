"""kairyu_core: what every kairyu service shares.

`api` (Workspace models and CRD), `events` (the wire contract), `bus` (the only importer of nats),
`kube` (the only importer of kubernetes_asyncio), `tracing`, `logging`, `settings`, and `localenv`
(the local control plane and NATS used by tests and `make dev`).
"""
