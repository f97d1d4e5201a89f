"""The shipped ARM template is the topology's, and creates what the tests' local endpoint has.

`charts/kairyu/files/servicebus-entities.json` is what users deploy (docs/bus.md); the tests run
the bus against `LocalServiceBus` with `servicebus_topology_entities.entity_specs`. Both come from
`servicebus_topology`, and this holds them to one another: same entities, sessions, rules,
duplicate detection, lock, delivery count and time to live. `KAIRYU_UPDATE_SNAPSHOTS=1`
(`make snapshots`) rewrites the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from kairyu_core.bus.servicebus_template import render
from kairyu_core.bus.servicebus_topology import servicebus_topology
from kairyu_localenv.servicebus_entities import EntitySpec, QueueSettings
from kairyu_localenv.servicebus_topology_entities import entity_specs

SHIPPED = Path(__file__).parents[2] / "charts/kairyu/files/servicebus-entities.json"
_NAME = re.compile(r"^\[format\('\{0\}/(?P<path>[^']+)', parameters\('namespaceName'\)\)\]$")
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def seconds(iso: str) -> int:
    """An ISO 8601 duration as ARM takes it, read back independently of the generator."""
    match = _DURATION.match(iso)
    assert match, iso
    days, hours, minutes, secs = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def test_the_shipped_template_is_the_generated_one() -> None:
    wanted = render()
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        SHIPPED.write_text(wanted)
    assert SHIPPED.read_text() == wanted, f"{SHIPPED.name} is stale: `make snapshots`"


def entities_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Service Bus entity the template creates, by its path below the namespace."""
    entities = {}
    for resource in template["resources"]:
        if not resource["type"].startswith("Microsoft.ServiceBus/namespaces/"):
            continue
        match = _NAME.match(resource["name"])
        assert match, resource["name"]
        entities[match["path"]] = resource
    return entities


def _settings(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "requires_session": properties["requiresSession"],
        "default_ttl_s": seconds(properties["defaultMessageTimeToLive"]),
    }


def _local_settings(settings: QueueSettings) -> dict[str, Any]:
    return {"requires_session": settings.requires_session, "default_ttl_s": settings.default_ttl_s}


def _window(properties: dict[str, Any]) -> int | None:
    if not properties["requiresDuplicateDetection"]:
        return None
    return seconds(properties["duplicateDetectionHistoryTimeWindow"])


def test_the_template_creates_the_entities_the_local_endpoint_serves() -> None:
    specs: list[EntitySpec] = entity_specs(servicebus_topology())
    entities = entities_of(json.loads(SHIPPED.read_text()))
    expected_paths = set()
    for spec in specs:
        expected_paths.add(spec.name)
        entity = entities[spec.name]
        properties = entity["properties"]
        assert _window(properties) == spec.duplicate_detection_window_s, spec.name
        if not spec.topic:
            assert entity["type"] == "Microsoft.ServiceBus/namespaces/queues"
            assert _settings(properties) == _local_settings(spec.settings), spec.name
            assert not properties["deadLetteringOnMessageExpiration"]
            assert not spec.settings.dead_letter_on_expiry
            # Left to Service Bus's defaults (a 1-minute lock, 10 deliveries): the endpoint's.
            assert "lockDuration" not in properties
            assert "maxDeliveryCount" not in properties
            assert (spec.settings.lock_duration_s, spec.settings.max_delivery_count) == (60, 10)
            continue
        assert entity["type"] == "Microsoft.ServiceBus/namespaces/topics"
        assert spec.duplicate_detection_window_s is not None, spec.name
        for sub in spec.subscriptions:
            path = f"{spec.name}/{sub.name}"
            expected_paths.add(path)
            properties = entities[path]["properties"]
            assert _settings(properties) == _local_settings(sub.settings), path
            assert seconds(properties["lockDuration"]) == sub.settings.lock_duration_s, path
            assert properties["maxDeliveryCount"] == sub.settings.max_delivery_count, path
            # Expired states are dropped on both, never dead-lettered.
            assert not properties["deadLetteringOnMessageExpiration"]
            assert not sub.settings.dead_letter_on_expiry
            rules = {
                rule_path: resource
                for rule_path, resource in entities.items()
                if rule_path.startswith(f"{path}/")
            }
            expected_paths |= set(rules)
            assert all(r["properties"]["filterType"] == "CorrelationFilter" for r in rules.values())
            filters = [r["properties"]["correlationFilter"] for r in rules.values()]
            assert sorted(json.dumps(f, sort_keys=True) for f in filters) == sorted(
                json.dumps({"properties": dict(rule.properties)}, sort_keys=True)
                for rule in sub.rules
            ), path
            # Service Bus's own TrueFilter is replaced, never left beside the rules.
            assert f"{path}/$Default" in rules, path
    assert set(entities) == expected_paths, "the template creates entities the tests never see"
