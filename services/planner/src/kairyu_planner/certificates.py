"""The webhook's own CA and serving certificate, kept in a Secret and in the webhook configuration.

In the chart's default mode nothing random is rendered (so `helm template`, Argo CD and Flux see
the same objects every time): the planner issues its certificate itself, as KAITO's and
controller-runtime's cert rotators do. At start and then periodically it makes sure that
- the Secret holds a CA and a serving certificate for the Service's DNS names that is not past
  `RENEW_AT` of its life (else a new pair is issued; replicas racing to create it read the
  winner's back after a 409, and an update made on a stale read is refused by its
  resourceVersion);
- every webhook of its own ValidatingWebhookConfiguration trusts that CA (`caBundle`).

A re-issued Secret's `ca.crt` holds the new CA and the one before it, so a replica that still
serves the old certificate (it looks again only every check interval) stays trusted meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kairyu_core.kube import JSON, KubeClient, errors, resources
from kairyu_core.retrying import retry_forever

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3
"""A certificate is re-issued once this share of its validity has passed (controller-runtime's
rotator does the same), leaving a third of its life for every replica to pick up the new one."""
_SKEW = timedelta(minutes=5)  # not_valid_before this far back: nodes' clocks differ a little
_ATTEMPTS = 5  # rounds of read-and-write before giving up on a Secret others keep changing


@dataclass(frozen=True)
class Material:
    """PEM bytes as the Secret holds them (`ca.crt`, `tls.crt`, `tls.key`)."""

    ca: bytes
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class CertificateTarget:
    """Where the certificate lives and whom it serves."""

    namespace: str
    secret: str
    service: str
    configuration: str
    validity: timedelta

    @property
    def dns_names(self) -> tuple[str, ...]:
        svc = self.service
        return (f"{svc}.{self.namespace}.svc", f"{svc}.{self.namespace}", svc)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(dns_names: tuple[str, ...], *, now: datetime, validity: timedelta) -> Material:
    """A fresh self-signed CA and a serving certificate for `dns_names` signed by it."""
    start, end = now - _SKEW, now + validity
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{dns_names[0]}-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Material(ca=ca.public_bytes(pem), cert=cert.public_bytes(pem), key=_pem_key(key))


def material_of(data: Mapping[str, str] | None) -> Material | None:
    """The PEM triple a Secret's base64 `data` holds; None when a part is missing or not base64."""
    if not data:
        return None
    try:
        parts = [base64.b64decode(data[k], validate=True) for k in ("ca.crt", "tls.crt", "tls.key")]
    except (KeyError, ValueError):
        return None
    return Material(*parts)


def why_issue(
    material: Material | None, dns_names: tuple[str, ...], *, now: datetime
) -> str | None:
    """Why a new pair is needed (a reason to log), or None while `material` is good to serve."""
    if material is None:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(material.cert)
        x509.load_pem_x509_certificates(material.ca)
        key = serialization.load_pem_private_key(material.key, password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound) as exc:
        return f"the stored certificate cannot be read ({exc})"
    if key.public_key() != cert.public_key():
        return "the stored key does not match the certificate"
    if not set(dns_names) <= set(names.get_values_for_type(x509.DNSName)):
        return f"the certificate does not name {', '.join(dns_names)}"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= start + (end - start) * RENEW_AT:
        return f"the certificate expires at {end.isoformat()}"
    return None


def renewed(
    old: Material | None, dns_names: tuple[str, ...], *, now: datetime, validity: timedelta
) -> Material:
    """A new pair whose CA bundle also trusts the old CA while it is valid (see the docstring)."""
    fresh = issue(dns_names, now=now, validity=validity)
    if old is None:
        return fresh
    try:
        previous = x509.load_pem_x509_certificates(old.ca)[0]
    except (ValueError, IndexError):
        return fresh
    if previous.not_valid_after_utc <= now:
        return fresh
    kept = previous.public_bytes(serialization.Encoding.PEM)
    return Material(ca=fresh.ca + kept, cert=fresh.cert, key=fresh.key)


def _secret(target: CertificateTarget, material: Material, current: JSON | None) -> JSON:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    metadata: JSON = {"name": target.secret, "namespace": target.namespace}
    if current is not None:
        metadata = dict(current["metadata"])  # keeps resourceVersion: a racing write gets a 409
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        # The chart renders the Secret Opaque and empty (the planner may not create Secrets);
        # a Secret's type is immutable, so an existing one keeps its own.
        "type": (current or {}).get("type", "kubernetes.io/tls"),
        "data": {
            "ca.crt": b64(material.ca),
            "tls.crt": b64(material.cert),
            "tls.key": b64(material.key),
        },
    }


async def _ensure_secret(
    kube: KubeClient, target: CertificateTarget, *, field_manager: str, now: datetime
) -> Material:
    for _ in range(_ATTEMPTS):
        try:
            current: JSON | None = await kube.get(
                resources.SECRETS, target.secret, namespace=target.namespace
            )
        except errors.NotFoundError:
            current = None
        old = material_of(current.get("data") if current else None)
        reason = why_issue(old, target.dns_names, now=now)
        if reason is None and old is not None:
            return old
        log.info(
            "issuing the webhook certificate in Secret %s/%s: %s",
            target.namespace,
            target.secret,
            reason,
        )
        material = renewed(old, target.dns_names, now=now, validity=target.validity)
        body = _secret(target, material, current)
        try:
            if current is None:
                await kube.create(
                    resources.SECRETS, body, field_manager=field_manager, namespace=target.namespace
                )
            else:
                await kube.replace(
                    resources.SECRETS, body, field_manager=field_manager, namespace=target.namespace
                )
        except errors.ConflictError:
            continue  # another replica wrote first: read and judge its certificate
        return material
    raise errors.ConflictError(
        f"Secret {target.namespace}/{target.secret} kept changing while being issued"
    )


async def _ensure_ca_bundle(
    kube: KubeClient, target: CertificateTarget, ca: bytes, *, field_manager: str
) -> bool:
    bundle = base64.b64encode(ca).decode()
    config = await kube.get(resources.VALIDATING_WEBHOOKS, target.configuration)
    ops: list[JSON] = []
    for i, hook in enumerate(config.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
            # `test` first: a configuration rewritten in between (helm upgrade) is not patched
            # at the wrong index; the next round reads it again.
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook["name"]})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            )
    if not ops:
        return False
    await kube.patch(
        resources.VALIDATING_WEBHOOKS, target.configuration, ops, field_manager=field_manager
    )
    log.info("set the CA bundle of ValidatingWebhookConfiguration %s", target.configuration)
    return True


async def ensure(
    kube: KubeClient, target: CertificateTarget, *, field_manager: str, now: datetime | None = None
) -> Material:
    """Make the Secret and the caBundle right (a no-op when they are); return the pair to serve."""
    now = now or datetime.now(UTC)
    material = await _ensure_secret(kube, target, field_manager=field_manager, now=now)
    await _ensure_ca_bundle(kube, target, material.ca, field_manager=field_manager)
    return material


def write(material: Material, directory: Path) -> tuple[Path, Path]:
    """Write the pair for the TLS listener (which reloads it when the files change).

    Each file is replaced atomically; the key goes first, and a listener that sees a new key with
    the old certificate keeps its previous pair and tries again (webhook.ServingCertificate).
    """
    cert, key = directory / "tls.crt", directory / "tls.key"
    for path, content in ((key, material.key), (cert, material.cert)):
        if path.exists() and path.read_bytes() == content:
            continue
        staging = path.with_suffix(".new")
        staging.write_bytes(content)
        staging.chmod(0o600)
        os.replace(staging, path)
    return cert, key


async def ensure_until_done(
    kube: KubeClient, target: CertificateTarget, *, field_manager: str, retry_max_s: float = 30.0
) -> Material:
    """`ensure`, retried while the apiserver cannot be reached or refuses.

    Nothing can be served before a certificate exists, so start-up waits here.
    """
    retrying = retry_forever(
        "issuing the webhook certificate", on=errors.KubeError, first_s=1.0, max_s=retry_max_s
    )
    return await retrying(ensure, kube, target, field_manager=field_manager)


async def keep_issued(
    kube: KubeClient,
    target: CertificateTarget,
    directory: Path,
    *,
    field_manager: str,
    interval_s: float,
) -> None:
    """Every `interval_s`: renew when due, repair the caBundle, serve what the Secret holds."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            material = await ensure(kube, target, field_manager=field_manager)
        except errors.KubeError as exc:
            # The certificate served now stays valid for a third of its life: try next round.
            log.warning("cannot check the webhook certificate: %s", exc)
            continue
        write(material, directory)


@asynccontextmanager
async def self_issued(
    kube: KubeClient, target: CertificateTarget, *, field_manager: str, interval_s: float
) -> AsyncIterator[tuple[Path, Path]]:
    """The certificate and key files to serve, kept current until the block ends."""
    with tempfile.TemporaryDirectory(prefix="kairyu-webhook-tls-") as tmp:
        directory = Path(tmp)
        material = await ensure_until_done(kube, target, field_manager=field_manager)
        paths = write(material, directory)
        task = asyncio.create_task(
            keep_issued(kube, target, directory, field_manager=field_manager, interval_s=interval_s)
        )
        try:
            yield paths
        finally:
            task.cancel()
            # gather, not `await task` under suppress(CancelledError): a cancel aimed at the
            # caller while it waits here must not be swallowed.
            await asyncio.gather(task, return_exceptions=True)
