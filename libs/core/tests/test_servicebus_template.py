"""The ARM template gives each service exactly the roles its part of the topology needs."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import pytest

from kairyu_core.bus import StreamSpec
from kairyu_core.bus.servicebus_template import (
    DATA_RECEIVER,
    DATA_SENDER,
    iso_duration,
    main,
    principal_parameter,
    template,
)
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_core.bus.topology import FOLLOWS, RECONCILERS, SERVICES

_SCOPE = re.compile(
    r"^\[format\('Microsoft\.ServiceBus/namespaces/\{0\}/(?P<path>[^']+)', "
    r"parameters\('namespaceName'\)\)\]$"
)
_PRINCIPAL = re.compile(r"^\[parameters\('(?P<name>\w+)PrincipalId'\)\]$")


def roles_by_service() -> dict[tuple[str, str], set[str]]:
    """(service, role id) -> the entity paths it is assigned on."""
    roles: dict[tuple[str, str], set[str]] = defaultdict(set)
    for resource in template()["resources"]:
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        scope = _SCOPE.match(resource["scope"])
        principal = _PRINCIPAL.match(resource["properties"]["principalId"])
        assert scope, resource
        assert principal, resource
        role = resource["properties"]["roleDefinitionId"].split("'")[-2]
        roles[(principal["name"], role)].add(scope["path"])
        assert resource["condition"] == (
            f"[not(empty(parameters('{principal['name']}PrincipalId')))]"
        )
    return roles


@pytest.mark.parametrize(
    ("seconds", "iso"),
    [(120, "PT2M"), (60, "PT1M"), (300, "PT5M"), (86400, "P1D"), (7 * 86400 + 3661, "P7DT1H1M1S")],
)
def test_durations_are_iso_8601(seconds: int, iso: str) -> None:
    assert iso_duration(seconds) == iso


def test_no_duration_of_zero() -> None:
    with pytest.raises(ValueError, match="positive"):
        iso_duration(0)


def test_the_watcher_writes_the_topics_and_reads_only_the_requests() -> None:
    topology = servicebus_topology()
    roles = roles_by_service()
    assert roles[("watcher", DATA_SENDER)] == {f"topics/{t.name}" for t in topology.topics}
    assert roles[("watcher", DATA_RECEIVER)] == {"queues/kairyu-state-requests"}


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "watcher"])
def test_a_follower_reads_only_its_own_subscriptions(service: str) -> None:
    topology = servicebus_topology()
    roles = roles_by_service()
    own = {
        f"topics/{topology.topic_of(kind).name}/subscriptions/kairyu-{service}"
        for kind in FOLLOWS[service]
    }
    assert roles[(service, DATA_RECEIVER)] == own
    writes = {"queues/kairyu-state-requests"} if FOLLOWS[service] else set()
    if service in RECONCILERS:
        writes.add("queues/kairyu-deadletters")
    assert roles[(service, DATA_SENDER)] == writes


def test_nothing_is_granted_on_the_namespace_or_beyond_send_and_receive() -> None:
    roles = roles_by_service()
    assert {role for _, role in roles} == {DATA_SENDER, DATA_RECEIVER}
    assert all(path for paths in roles.values() for path in paths)
    parameters = template()["parameters"]
    for service in SERVICES:
        assert parameters[principal_parameter(service)]["defaultValue"] == ""


def test_role_assignment_names_are_unique_and_stable() -> None:
    names = [
        r["name"]
        for r in template()["resources"]
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    ]
    assert len(names) == len(set(names))
    assert names == [
        r["name"]
        for r in template()["resources"]
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    ]


def test_every_subscription_replaces_the_default_true_filter() -> None:
    rules: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for resource in template()["resources"]:
        if resource["type"].endswith("/rules"):
            subscription, rule = resource["name"].split("'")[1].rsplit("/", 1)
            rules[subscription].append({**resource, "name": rule})
    assert len(rules) == len(servicebus_topology().subscriptions)
    for subscription, own in rules.items():
        default = next(r for r in own if r["name"] == "$Default")
        assert default["properties"]["correlationFilter"] == {"properties": {"to": "*"}}
        # Written after the subscription's other rules, so that it is the one that stays.
        others = [r for r in own if r is not default]
        assert len(others) == len(default["dependsOn"]) - 1, subscription


def test_another_stream_gets_its_own_entities(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stream", "TEAM_A"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == template(servicebus_topology(StreamSpec(name="TEAM_A")))
    names = {r["name"] for r in printed["resources"] if r["type"].endswith("/topics")}
    assert "[format('{0}/team-a-state-pod', parameters('namespaceName'))]" in names
