"""Certificates for the local control plane: CAs, the apiserver's serving cert, client identities.

The local kube-apiserver listens only on its secure port, so it needs real TLS and an identity for
every client. trustme makes the CAs and leaf certificates (it exists to make throwaway PKIs for
tests); this module only writes them where the control plane's flags point. Everything is made
fresh per cluster and never leaves its temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA that issues certificates, and its own certificate and key on disk."""

    ca: trustme.CA
    files: KeyPair

    @property
    def cert(self) -> Path:
        return self.files.cert

    @property
    def key(self) -> Path:
        return self.files.key


def _write(path: Path, pem: bytes, *, secret: bool = False) -> None:
    path.write_bytes(pem)
    if secret:
        path.chmod(0o600)


def make_ca(directory: Path, name: str = "kairyu-local-ca") -> Authority:
    """A self-signed CA, written as `<name>.crt` and `<name>.key` (the signer's key, for one)."""
    ca = trustme.CA(organization_name=name)
    files = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _write(files.cert, ca.cert_pem.bytes())
    _write(files.key, ca.private_key_pem.bytes(), secret=True)
    return Authority(ca, files)


def load_ca(files: KeyPair) -> Authority:
    """The CA `make_ca` wrote, to issue more from it (a renewed serving certificate)."""
    ca = trustme.CA.from_pem(files.cert.read_bytes(), files.key.read_bytes())
    return Authority(ca, files)


def issue(
    authority: Authority,
    directory: Path,
    *,
    name: str,
    common_name: str,
    organization: str | None = None,
    hosts: tuple[str, ...] = (),
) -> KeyPair:
    """A leaf for `hosts` (DNS names, IPs) and the identity `common_name` in `organization`.

    Good for serving and for client authentication alike.
    """
    # A client identity without hosts gets its name as its one SAN too: trustme marks the SAN
    # extension critical, and Go's crypto/x509 (the apiserver's) refuses an empty critical one.
    identities = hosts or (common_name,)
    leaf = authority.ca.issue_cert(
        *identities, common_name=common_name, organization_name=organization
    )
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _write(pair.cert, b"".join(pem.bytes() for pem in leaf.cert_chain_pems[:1]))
    _write(pair.key, leaf.private_key_pem.bytes(), secret=True)
    return pair


def make_service_account_keys(directory: Path) -> KeyPair:
    """The RSA pair that signs and verifies service-account tokens (`cert`: the public key).

    Not a certificate, so not trustme's: the apiserver wants a bare public key.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _write(
        pair.cert,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    _write(
        pair.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        secret=True,
    )
    return pair
