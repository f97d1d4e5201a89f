"""The planner's self-issued webhook certificate on a real apiserver (the chart's default mode).

Nothing random is rendered by the chart any more: the planner creates the Secret, sets the
webhook configuration's caBundle, leaves both alone while they are good and re-issues the pair
before it expires. Replicas racing on an empty namespace end up serving the same pair.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kairyu_core.kube import KubeClient, errors, resources
from kairyu_planner import certificates

pytestmark = pytest.mark.integration

VALIDITY = timedelta(days=30)


def _webhook(name: str, namespace: str) -> dict[str, Any]:
    # Matches nothing (a namespace label no namespace has) and is ignored on failure: the
    # session's other tests never meet it.
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "clientConfig": {"service": {"name": "planner", "namespace": namespace, "port": 443}},
        "namespaceSelector": {"matchLabels": {"kairyu-test/never": "true"}},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
            }
        ],
    }


@pytest.fixture
async def target(kube: KubeClient, namespace: str) -> AsyncIterator[certificates.CertificateTarget]:
    name = f"kairyu-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [_webhook("a.kairyu.test", namespace), _webhook("b.kairyu.test", namespace)],
    }
    await kube.create(resources.VALIDATING_WEBHOOKS, config, field_manager="test")
    yield certificates.CertificateTarget(
        namespace=namespace,
        secret="planner-webhook-tls",
        service="planner",
        configuration=name,
        validity=VALIDITY,
    )
    await kube.delete(resources.VALIDATING_WEBHOOKS, name)


async def _state(
    kube: KubeClient, target: certificates.CertificateTarget
) -> tuple[dict[str, Any], ...]:
    secret = await kube.get(resources.SECRETS, target.secret, namespace=target.namespace)
    config = await kube.get(resources.VALIDATING_WEBHOOKS, target.configuration)
    return secret, config


def _bundles(config: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(w["clientConfig"]["caBundle"]) for w in config["webhooks"]]


def _check_signed(material: certificates.Material, dns_names: tuple[str, ...]) -> None:
    cert = x509.load_pem_x509_certificate(material.cert)
    (ca, *_) = x509.load_pem_x509_certificates(material.ca)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(dns_names) <= set(sans.get_values_for_type(x509.DNSName))
    key = serialization.load_pem_private_key(material.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()


async def test_the_planner_issues_keeps_and_renews_its_webhook_certificate(
    kube: KubeClient, target: certificates.CertificateTarget
) -> None:
    with pytest.raises(errors.NotFoundError):
        await kube.get(resources.SECRETS, target.secret, namespace=target.namespace)

    # Two replicas start at once on an empty namespace: one creates, the other reads it back.
    first, second = await asyncio.gather(
        certificates.ensure(kube, target, field_manager="kairyu-planner"),
        certificates.ensure(kube, target, field_manager="kairyu-planner"),
    )
    assert first == second
    assert f"planner.{target.namespace}.svc" in target.dns_names
    _check_signed(first, target.dns_names)
    secret, config = await _state(kube, target)
    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["tls.crt"]) == first.cert
    assert _bundles(config) == [first.ca, first.ca]  # every webhook of the configuration

    # A second run changes nothing: no new certificate, no write at all.
    again = await certificates.ensure(kube, target, field_manager="kairyu-planner")
    assert again == first
    secret2, config2 = await _state(kube, target)
    assert secret2["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert config2["metadata"]["resourceVersion"] == config["metadata"]["resourceVersion"]

    # Past 2/3 of its life the pair is re-issued; the bundle still trusts the old CA, so a
    # replica that serves the old certificate until its next check is not refused meanwhile.
    later = datetime.now(UTC) + VALIDITY * 0.7
    renewed = await certificates.ensure(kube, target, field_manager="kairyu-planner", now=later)
    assert renewed.cert != first.cert
    _check_signed(renewed, target.dns_names)
    assert x509.load_pem_x509_certificate(renewed.cert).not_valid_after_utc > later + VALIDITY / 2
    secret3, config3 = await _state(kube, target)
    assert base64.b64decode(secret3["data"]["tls.crt"]) == renewed.cert
    assert _bundles(config3) == [renewed.ca, renewed.ca]
    trusted = x509.load_pem_x509_certificates(renewed.ca)
    assert x509.load_pem_x509_certificates(first.ca)[0] in trusted


async def test_a_caBundle_someone_else_changed_is_set_back(  # noqa: N802 - the field's name
    kube: KubeClient, target: certificates.CertificateTarget
) -> None:
    issued = await certificates.ensure(kube, target, field_manager="kairyu-planner")
    # A `helm upgrade` of a chart that renders caBundle: "" (or an Argo CD sync) empties it.
    ops = [{"op": "remove", "path": "/webhooks/1/clientConfig/caBundle"}]
    await kube.patch(resources.VALIDATING_WEBHOOKS, target.configuration, ops, field_manager="x")
    await certificates.ensure(kube, target, field_manager="kairyu-planner")
    _, config = await _state(kube, target)
    assert _bundles(config) == [issued.ca, issued.ca]
