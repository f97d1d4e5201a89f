"""kairyu's bus on Azure Service Bus (issue 20): the public names of the second transport.

A module of its own, not re-exported by `kairyu_core.bus`, so that a service on NATS never imports
the Service Bus SDK; one configured for Service Bus imports this module instead.
"""

from kairyu_core.bus._servicebus import STATE_STREAM_IDENTITY, ServiceBusBus
from kairyu_core.bus._servicebus_following import properties_of

__all__ = ["STATE_STREAM_IDENTITY", "ServiceBusBus", "properties_of"]
