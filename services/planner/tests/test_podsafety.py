"""The Pod Security baseline rules a template must keep (and restricted's two about root)."""

from typing import Any

import pytest

from kairyu_planner.podsafety import template_problems

_C = {"name": "server", "image": "example.com/server:1"}


def _with(context: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": [{**_C, "securityContext": context}]}}


def _pod(context: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": [_C], "securityContext": context}}


_AA = "container.apparmor.security.beta.kubernetes.io/server"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (_with({"seLinuxOptions": {"type": "spc_t"}}), "seLinuxOptions.type spc_t"),
        (_pod({"seLinuxOptions": {"type": "unconfined_t"}}), "seLinuxOptions.type unconfined_t"),
        (_with({"seLinuxOptions": {"user": "system_u"}}), "seLinuxOptions.user"),
        (_pod({"seLinuxOptions": {"role": "system_r"}}), "seLinuxOptions.role"),
        (_with({"seccompProfile": {"type": "Unconfined"}}), "seccompProfile.type Unconfined"),
        (_pod({"seccompProfile": {"type": "Unconfined"}}), "seccompProfile.type Unconfined"),
        (_with({"appArmorProfile": {"type": "Unconfined"}}), "appArmorProfile.type Unconfined"),
        (_pod({"appArmorProfile": {"type": "Unconfined"}}), "appArmorProfile.type Unconfined"),
        (
            {"metadata": {"annotations": {_AA: "unconfined"}}, "spec": {"containers": [_C]}},
            "annotations[container.apparmor.security.beta.kubernetes.io/server]=unconfined",
        ),
        (_with({"procMount": "Unmasked"}), "procMount Unmasked"),
        (_with({"windowsOptions": {"hostProcess": True}}), "windowsOptions.hostProcess"),
        (_pod({"windowsOptions": {"hostProcess": True}}), "windowsOptions.hostProcess"),
        (
            _pod({"sysctls": [{"name": "kernel.core_pattern", "value": "|/x"}]}),
            "sysctls ['kernel.core_pattern']",
        ),
        (_with({"allowPrivilegeEscalation": True}), "allowPrivilegeEscalation: true"),
        (_with({"runAsUser": 0}), "runAsUser: 0 (root)"),
        (_pod({"runAsUser": 0}), "runAsUser: 0 (root)"),
    ],
)  # fmt: skip
def test_baseline_violations_are_refused_with_where_and_what(
    template: dict[str, Any], message: str
) -> None:
    found = template_problems(template, allow_host_access=False)
    assert any(message in f and "KAIRYU_PLANNING__ALLOW_HOST_ACCESS" in f for f in found), found
    assert template_problems(template, allow_host_access=True) == []


@pytest.mark.parametrize(
    "template",
    [
        _with({"seLinuxOptions": {"type": "container_init_t", "level": "s0:c1,c2"}}),
        _with({"seccompProfile": {"type": "RuntimeDefault"}}),
        _pod({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}),
        _with({"appArmorProfile": {"type": "RuntimeDefault"}}),
        {"metadata": {"annotations": {_AA: "localhost/mine"}}, "spec": {"containers": [_C]}},
        _with({"procMount": "Default", "allowPrivilegeEscalation": False}),
        _pod({"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]}),
        # Same as leaving it unset: the image's own user, which may be root (KAITO's examples).
        _with({"runAsNonRoot": False}),
        _pod({"runAsUser": 1000, "runAsNonRoot": True}),
        {"spec": {"containers": [_C]}},
    ],
)
def test_what_baseline_allows_is_admitted(template: dict[str, Any]) -> None:
    assert template_problems(template, allow_host_access=False) == []


def test_malformed_security_fields_are_refused_not_raised() -> None:
    for template in (
        _with({"seLinuxOptions": "spc_t"}),
        _pod({"seccompProfile": ["Unconfined"]}),
        _pod({"sysctls": "kernel.core_pattern"}),
        _with({"windowsOptions": 1}),
    ):
        found = template_problems(template, allow_host_access=False)
        assert any("must be" in f for f in found), found
