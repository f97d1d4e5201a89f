"""The consumers the NATS admin step creates are the ones the services bind to.

Under NATS authorization a service cannot create or change its consumer; the admin step builds it
from `kairyu_core.bus.topology`. If a service starts handling a new event type without the table
following, its consumer would never deliver that event: this test fails first.
"""

import pytest

from kairyu_core.bus import CONSUMED_BY, ConsumerSpec
from kairyu_core.events import Event, Subjects
from kairyu_core.settings import ServiceSettings
from kairyu_deployer.app import CONSUMED as DEPLOYER
from kairyu_deployer.settings import DeployerSettings
from kairyu_planner.app import CONSUMED as PLANNER
from kairyu_planner.settings import PlannerSettings
from kairyu_provisioner.app import CONSUMED as PROVISIONER
from kairyu_provisioner.settings import ProvisionerSettings
from kairyu_tuner.app import CONSUMED as TUNER
from kairyu_tuner.settings import TunerSettings

SERVICES: dict[str, tuple[dict[str, type[Event]], type[ServiceSettings]]] = {
    "planner": (PLANNER, PlannerSettings),
    "provisioner": (PROVISIONER, ProvisionerSettings),
    "deployer": (DEPLOYER, DeployerSettings),
    "tuner": (TUNER, TunerSettings),
}


@pytest.mark.parametrize("service", SERVICES)
def test_the_declared_consumer_is_the_services_own(service: str) -> None:
    consumed, settings_type = SERVICES[service]
    assert set(CONSUMED_BY[service]) == set(consumed.values())
    declared = ConsumerSpec.of_service(service, Subjects())
    own = ConsumerSpec.of_events(settings_type().service_name, consumed.values(), Subjects())
    assert (declared.durable, set(declared.filter_subjects)) == (
        own.durable,
        set(own.filter_subjects),
    )


def test_only_consuming_services_are_declared() -> None:
    assert set(CONSUMED_BY) == set(SERVICES)
