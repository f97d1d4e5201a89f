"""Connecting to the bus a service's settings choose: NATS JetStream or Azure Service Bus.

The one place that knows both transports, so that `kairyu_core.service` and every `__main__`
get a `StateBus` and never know which one runs (docs/bus.md). The Service Bus module is
imported only when it is chosen: a service on NATS does not load the Azure SDK.
"""

from __future__ import annotations

from kairyu_core.bus._connection import Bus
from kairyu_core.bus.contract import StateBus
from kairyu_core.bus.outcomes import BusSettingsError
from kairyu_core.bus.topology import FOLLOWS
from kairyu_core.settings import ServiceSettings

_PREFIX = "kairyu-"


def bus_service(service_name: str) -> str:
    """The service a `service_name` names on Service Bus ("kairyu-deployer" → "deployer").

    Its subscriptions and the snapshots meant for it are named after it, so it must be one of
    kairyu's services; NATS has no such rule (tools connect there under any name).
    """
    short = service_name.removeprefix(_PREFIX)
    if short != "watcher" and short not in FOLLOWS:
        known = ", ".join(_PREFIX + name for name in ["watcher", *FOLLOWS])
        msg = f"{service_name!r} is not a service with entities on Service Bus ({known})"
        raise BusSettingsError(msg)
    return short


async def connect_bus(settings: ServiceSettings) -> StateBus:
    """The bus `settings.bus` names, connected as `settings.service_name`.

    Raises BusError when it cannot be reached (the caller retries), BusSettingsError when the
    settings cannot work.
    """
    if settings.bus == "servicebus":
        # Imported here, not above: only a service on Service Bus needs the Azure SDK.
        from kairyu_core.bus.servicebus import ServiceBusBus  # noqa: PLC0415

        assert settings.servicebus is not None  # noqa: S101 - the settings' validator says so
        return await ServiceBusBus.connect(
            settings.servicebus, service=bus_service(settings.service_name)
        )
    return await Bus.connect(settings.nats, name=settings.service_name)
