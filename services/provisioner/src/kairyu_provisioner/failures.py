"""What a cloud's refusal means for a Workspace (pure).

Quota, capacity and SKU-availability errors are not fixed by retrying the same SKU: they end in
`ResourceReady=False` with the cloud's message and a request to the planner for the next-cheapest
allowed SKU. Anything else is reported and retried.
"""

from __future__ import annotations

from dataclasses import dataclass

# ARM error codes (AKS and Compute) that mean "this SKU cannot be had here now", with the
# condition reason each becomes.
_CAPACITY_CODES = {
    "quotaexceeded": "QuotaExceeded",
    "skunotavailable": "SKUNotAvailable",
    "vmsizenotsupported": "SKUNotAvailable",
    "allocationfailed": "AllocationFailed",
    "zonalallocationfailed": "AllocationFailed",
    "overconstrainedallocationrequest": "AllocationFailed",
    "overconstrainedzonalallocationrequest": "AllocationFailed",
    "insufficientcapacity": "InsufficientCapacity",
}
# Karpenter reports capacity trouble in messages, not codes.
_CAPACITY_PHRASES = (
    ("insufficient capacity", "InsufficientCapacity"),
    ("insufficientcapacity", "InsufficientCapacity"),
    ("all requested instance types were unavailable", "InsufficientCapacity"),
    ("quota", "QuotaExceeded"),
)


@dataclass(frozen=True)
class CloudFailure:
    """A refusal by the cloud, as a condition reason and message."""

    reason: str
    message: str
    instance_type: str
    capacity: bool
    """True when another SKU may succeed where this one cannot (quota, capacity, availability)."""


def classify(
    code: str | None, message: str, *, instance_type: str, fallback: str = "ProvisioningFailed"
) -> CloudFailure:
    """Turn an error code (ARM) or a message (Karpenter) into a CloudFailure."""
    reason = _CAPACITY_CODES.get((code or "").lower())
    if reason is None:
        lowered = message.lower()
        reason = next((r for phrase, r in _CAPACITY_PHRASES if phrase in lowered), None)
    if reason is not None:
        return CloudFailure(reason, message, instance_type, capacity=True)
    return CloudFailure(code or fallback, message, instance_type, capacity=False)
