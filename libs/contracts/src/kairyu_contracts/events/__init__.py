"""kairyu's wire names: the NATS subjects of states and dead letters (`Subjects`).

The states themselves are trimmed Kubernetes objects (`kairyu_contracts.objectstate`), which every
service reads into its view; a message that cannot be read ends on a dead-letter subject.
"""

from kairyu_contracts.events.subjects import Subjects

__all__ = ["Subjects"]
