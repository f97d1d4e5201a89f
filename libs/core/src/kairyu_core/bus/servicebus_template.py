"""The ARM template that creates kairyu's Service Bus entities and scopes each service's roles.

No kairyu service may create Service Bus entities: that takes the namespace's Manage right, and
`ServiceBusBus.create_streams` only checks that they are there. So whoever installs kairyu on
Service Bus creates them first, with `az deployment group create` and this template (docs/bus.md).
It is built from `servicebus_topology`, the declaration the services and the local test endpoint
follow, so the entities an install gets cannot drift from the ones the code uses:
`tests/contract/test_servicebus_entities_template.py` holds the shipped file
(`charts/kairyu/files/servicebus-entities.json`, written by `make snapshots`) to `render()`, and
the template's entities to the local endpoint's (`kairyu_localenv.servicebus_topology_entities`).

It also assigns the roles that make one service's leaked credential worth no more than its job,
which only Entra ID can do (a shared access key on a topic reads every subscription of it): for
each service whose principal id is given, Azure Service Bus Data Sender on exactly the topics and
queues it writes, and Data Receiver on exactly its own subscriptions (the watcher: the requests
queue). A principal id left empty assigns nothing (connection-string installs).

`template()` (the JSON as a dict) and `render()` (as text) are pure; `python -m
kairyu_core.bus.servicebus_template [--stream NAME]` prints it, for an install whose
`KAIRYU_SERVICEBUS__STREAM` is not the default.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from kairyu_contracts.objectstate import Kind
from kairyu_core.bus.servicebus_topology import (
    EVERY_READER,
    TO_PROPERTY,
    Queue,
    ServiceBusTopology,
    Subscription,
    Topic,
    servicebus_topology,
)
from kairyu_core.bus.topology import SERVICES, StreamSpec

SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
SERVICEBUS_API = "2024-01-01"  # Microsoft.ServiceBus's current GA API version
AUTHORIZATION_API = "2022-04-01"  # Microsoft.Authorization/roleAssignments
DATA_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
"""The built-in role Azure Service Bus Data Sender: send to a queue or topic."""
DATA_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
"""The built-in role Azure Service Bus Data Receiver: receive and settle on a queue or
subscription (its dead-letter sub-queue included)."""
DEFAULT_RULE = "$Default"
"""The rule Service Bus gives every new subscription, a TrueFilter that would let every message
through; the every-reader rule is written under this name so that it replaces it."""

_NAMESPACE = "Microsoft.ServiceBus/namespaces"
_TOPIC = f"{_NAMESPACE}/topics"
_SUBSCRIPTION = f"{_TOPIC}/subscriptions"
_RULE = f"{_SUBSCRIPTION}/rules"
_QUEUE = f"{_NAMESPACE}/queues"
_NS = "parameters('namespaceName')"


def iso_duration(seconds: int) -> str:
    """`seconds` as the ISO 8601 duration ARM takes (`PT2M`, `P1D`, `P7DT1H`)."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {seconds}")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def principal_parameter(service: str) -> str:
    """The template's parameter holding `service`'s principal (object) id: `plannerPrincipalId`."""
    return f"{service}PrincipalId"


def _path(*names: str) -> str:
    """An ARM name for a child entity: `[format('{0}/a/b', parameters('namespaceName'))]`."""
    return f"[format('{{0}}/{'/'.join(names)}', {_NS})]"


def _id(resource_type: str, *names: str) -> str:
    """An ARM expression for an entity's resource id."""
    quoted = ", ".join(f"'{n}'" for n in names)
    return f"resourceId('{resource_type}', {_NS}, {quoted})"


def _topic(topic: Topic) -> dict[str, Any]:
    return {
        "type": _TOPIC,
        "apiVersion": SERVICEBUS_API,
        "name": _path(topic.name),
        "dependsOn": [f"[resourceId('{_NAMESPACE}', {_NS})]"],
        "properties": {
            "maxSizeInMegabytes": topic.max_size_mb,
            # A watcher's retried send is stored once, as with the state stream's Nats-Msg-Id.
            "requiresDuplicateDetection": True,
            "duplicateDetectionHistoryTimeWindow": iso_duration(topic.duplicate_window_s),
            "supportOrdering": True,
        },
    }


def _subscription(subscription: Subscription) -> dict[str, Any]:
    return {
        "type": _SUBSCRIPTION,
        "apiVersion": SERVICEBUS_API,
        "name": _path(subscription.topic, subscription.name),
        "dependsOn": [f"[{_id(_TOPIC, subscription.topic)}]"],
        "properties": {
            # One session per subscription (the kind): delivered in the order the watcher sent.
            "requiresSession": subscription.requires_session,
            "lockDuration": iso_duration(subscription.lock_duration_s),
            "maxDeliveryCount": subscription.max_delivery_count,
            "defaultMessageTimeToLive": iso_duration(subscription.message_ttl_s),
            # An expired state is dropped: a follower away that long asks for a snapshot anyway.
            "deadLetteringOnMessageExpiration": False,
        },
    }


def rule_name(to: str) -> str:
    """The name of the rule that lets through messages whose `to` is `to`."""
    return DEFAULT_RULE if to == EVERY_READER else f"to-{to}"


def _rules(subscription: Subscription) -> list[dict[str, Any]]:
    """The subscription's correlation rules, ORed by Service Bus: every reader's, or its own.

    Service Bus creates `$Default` (a TrueFilter) with the subscription. The every-reader rule
    takes its name, so it replaces that filter, and is written after the others: whether or not
    adding a rule drops `$Default` on the way, ours is what stays.
    """
    if EVERY_READER not in subscription.matches:
        raise ValueError(f"{subscription.name} would keep the $Default TrueFilter")
    owner = f"[{_id(_SUBSCRIPTION, subscription.topic, subscription.name)}]"
    others = [to for to in subscription.matches if to != EVERY_READER]
    rules = []
    for to in [*others, EVERY_READER]:
        depends = [owner]
        if to == EVERY_READER:
            depends += [
                f"[{_id(_RULE, subscription.topic, subscription.name, rule_name(o))}]"
                for o in others
            ]
        rules.append(
            {
                "type": _RULE,
                "apiVersion": SERVICEBUS_API,
                "name": _path(subscription.topic, subscription.name, rule_name(to)),
                "dependsOn": depends,
                "properties": {
                    "filterType": "CorrelationFilter",
                    "correlationFilter": {"properties": {TO_PROPERTY: to}},
                },
            }
        )
    return rules


def _queue(queue: Queue) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "maxSizeInMegabytes": queue.max_size_mb,
        "defaultMessageTimeToLive": iso_duration(queue.message_ttl_s),
        "requiresSession": False,
        "deadLetteringOnMessageExpiration": False,
        "requiresDuplicateDetection": queue.duplicate_window_s is not None,
    }
    if queue.duplicate_window_s is not None:
        properties["duplicateDetectionHistoryTimeWindow"] = iso_duration(queue.duplicate_window_s)
    return {
        "type": _QUEUE,
        "apiVersion": SERVICEBUS_API,
        "name": _path(queue.name),
        "dependsOn": [f"[resourceId('{_NAMESPACE}', {_NS})]"],
        "properties": properties,
    }


def _role(
    service: str, role: str, *, resource_type: str, names: Sequence[str], scope: str
) -> dict[str, Any]:
    """`role` for `service`'s principal on one entity, when that principal id is given."""
    principal = f"parameters('{principal_parameter(service)}')"
    entity = _id(resource_type, *names)
    return {
        "type": "Microsoft.Authorization/roleAssignments",
        "apiVersion": AUTHORIZATION_API,
        "condition": f"[not(empty({principal}))]",
        "scope": f"[format('{scope}', {_NS})]",
        # The same name on every deployment, so a redeployment finds its assignment.
        "name": f"[guid({entity}, {principal}, '{role}')]",
        "dependsOn": [f"[{entity}]"],
        "properties": {
            "roleDefinitionId": (
                f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{role}')]"
            ),
            "principalId": f"[{principal}]",
            "principalType": "ServicePrincipal",
        },
    }


def _topic_writers(kind: Kind) -> tuple[str, ...]:
    """Who writes a kind's states: the NATS topology's producers of that family (the watcher)."""
    spec = StreamSpec()
    wildcard = spec.subjects.states_of(kind)
    return next(f.producers for f in spec.families if f.wildcard == wildcard)


def role_assignments(topology: ServiceBusTopology) -> list[dict[str, Any]]:
    """Data Sender where each service writes, Data Receiver on what it alone reads."""
    roles = []
    for topic in topology.topics:
        for service in _topic_writers(topic.kind):
            roles.append(
                _role(
                    service,
                    DATA_SENDER,
                    resource_type=_TOPIC,
                    names=[topic.name],
                    scope=f"{_NAMESPACE}/{{0}}/topics/{topic.name}",
                )
            )
    for sub in topology.subscriptions:
        roles.append(
            _role(
                sub.service,
                DATA_RECEIVER,
                resource_type=_SUBSCRIPTION,
                names=[sub.topic, sub.name],
                scope=f"{_NAMESPACE}/{{0}}/topics/{sub.topic}/subscriptions/{sub.name}",
            )
        )
    for queue in (topology.requests, topology.dead_letters):
        scope = f"{_NAMESPACE}/{{0}}/queues/{queue.name}"
        for role, services in ((DATA_SENDER, queue.writers), (DATA_RECEIVER, queue.readers)):
            roles += [
                _role(service, role, resource_type=_QUEUE, names=[queue.name], scope=scope)
                for service in services
            ]
    return roles


def _parameters() -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "namespaceName": {
            "type": "string",
            "minLength": 6,  # Service Bus's limits on a namespace's name
            "maxLength": 50,
            "metadata": {
                "description": "The Service Bus namespace (<name>.servicebus.windows.net)."
            },
        },
        "createNamespace": {
            "type": "bool",
            "defaultValue": True,
            "metadata": {
                "description": "Create the namespace (Standard tier). false: it exists already "
                "(Standard or Premium; Basic has no topics), and only the entities are created."
            },
        },
        "location": {
            "type": "string",
            "defaultValue": "[resourceGroup().location]",
            "metadata": {"description": "Where a namespace this template creates lives."},
        },
        "disableLocalAuth": {
            "type": "bool",
            "defaultValue": False,
            "metadata": {
                "description": "For a namespace this template creates: refuse shared access keys "
                "(connection strings), so that only Entra ID (workload identity) signs in."
            },
        },
    }
    for service in SERVICES:
        parameters[principal_parameter(service)] = {
            "type": "string",
            "defaultValue": "",
            "metadata": {
                "description": f"The principal (object) id of the kairyu-{service} managed "
                "identity; empty: no role assignment for it."
            },
        }
    return parameters


def template(topology: ServiceBusTopology | None = None) -> dict[str, Any]:
    """The ARM deployment template for `topology`'s entities (default: the default stream)."""
    topology = topology or servicebus_topology()
    namespace = {
        "type": _NAMESPACE,
        "apiVersion": SERVICEBUS_API,
        "condition": "[parameters('createNamespace')]",
        "name": f"[{_NS}]",
        "location": "[parameters('location')]",
        # Topics and sessions need Standard or Premium (docs/bus.md, "Limits and costs").
        "sku": {"name": "Standard", "tier": "Standard"},
        "properties": {
            "minimumTlsVersion": "1.2",
            "disableLocalAuth": "[parameters('disableLocalAuth')]",
        },
    }
    resources: list[dict[str, Any]] = [namespace]
    resources += [_topic(t) for t in topology.topics]
    resources += [_subscription(s) for s in topology.subscriptions]
    resources += [rule for s in topology.subscriptions for rule in _rules(s)]
    resources += [_queue(topology.requests), _queue(topology.dead_letters)]
    resources += role_assignments(topology)
    return {
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": "kairyu's Azure Service Bus entities and per-service roles, generated "
            "from kairyu_core.bus.servicebus_topology (docs/bus.md)."
        },
        "parameters": _parameters(),
        "resources": resources,
    }


def render(topology: ServiceBusTopology | None = None) -> str:
    """`template(topology)` as the file kairyu ships: indented JSON, one trailing newline."""
    return json.dumps(template(topology), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the template for the entities of stream base `--stream` (default `KAIRYU`)."""
    parser = argparse.ArgumentParser(
        prog="python -m kairyu_core.bus.servicebus_template", description=__doc__
    )
    parser.add_argument("--stream", default=StreamSpec().name, help="KAIRYU_SERVICEBUS__STREAM")
    args = parser.parse_args(argv)
    sys.stdout.write(render(servicebus_topology(StreamSpec(name=args.stream))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
