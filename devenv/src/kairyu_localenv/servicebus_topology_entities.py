"""kairyu's Service Bus entities as the local endpoint's specs (issue 20).

`kairyu_core.bus.servicebus_topology` declares the entities (in Azure the ARM template
`kairyu_core.bus.servicebus_template` creates them), and this turns the same declaration into
`LocalServiceBus`'s specs, so the tests run against exactly kairyu's topics, subscriptions, rules
and queues; `tests/contract/test_servicebus_entities_template.py` holds the two to one another.
"""

from __future__ import annotations

from typing import Any

from kairyu_core.bus.servicebus_topology import (
    TO_PROPERTY,
    Queue,
    ServiceBusTopology,
    Subscription,
)
from kairyu_localenv.servicebus_entities import (
    CorrelationFilter,
    EntitySpec,
    QueueSettings,
    SubscriptionSpec,
)


def entity_specs(topology: ServiceBusTopology) -> list[EntitySpec]:
    """Every topic with its subscriptions, then the requests and dead-letters queues."""
    topics = [
        EntitySpec(
            name=topic.name,
            topic=True,
            duplicate_detection_window_s=topic.duplicate_window_s,
            subscriptions=tuple(
                _subscription(sub) for sub in topology.subscriptions if sub.topic == topic.name
            ),
        )
        for topic in topology.topics
    ]
    return [*topics, _queue(topology.requests), _queue(topology.dead_letters)]


def _subscription(subscription: Subscription) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=subscription.name,
        settings=QueueSettings(
            lock_duration_s=subscription.lock_duration_s,
            max_delivery_count=subscription.max_delivery_count,
            default_ttl_s=subscription.message_ttl_s,
            requires_session=subscription.requires_session,
        ),
        # ORed, as Service Bus ORs a subscription's rules: every reader's, or this one's.
        rules=tuple(CorrelationFilter(properties={TO_PROPERTY: to}) for to in subscription.matches),
    )


def _queue(queue: Queue) -> EntitySpec:
    return EntitySpec(
        name=queue.name,
        settings=QueueSettings(default_ttl_s=queue.message_ttl_s),
        duplicate_detection_window_s=queue.duplicate_window_s,
    )


def entities_json(topology: ServiceBusTopology) -> dict[str, Any]:
    """The same entities as the endpoint's `--entities` file (`specs_from_json` reads it)."""
    specs = entity_specs(topology)

    def settings(spec: QueueSettings) -> dict[str, Any]:
        return {
            "lock_duration_s": spec.lock_duration_s,
            "max_delivery_count": spec.max_delivery_count,
            "default_ttl_s": spec.default_ttl_s,
            "requires_session": spec.requires_session,
        }

    return {
        "queues": [
            {
                "name": spec.name,
                "duplicate_detection_window_s": spec.duplicate_detection_window_s,
                **settings(spec.settings),
            }
            for spec in specs
            if not spec.topic
        ],
        "topics": [
            {
                "name": spec.name,
                "duplicate_detection_window_s": spec.duplicate_detection_window_s,
                "subscriptions": [
                    {
                        "name": sub.name,
                        "rules": [{"properties": dict(rule.properties)} for rule in sub.rules],
                        **settings(sub.settings),
                    }
                    for sub in spec.subscriptions
                ],
            }
            for spec in specs
            if spec.topic
        ],
    }
