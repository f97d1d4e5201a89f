"""The tuning Job's input downloader: fetch `urls` into /mnt/data, refusing internal addresses.

A Workspace's URLs are user input that runs inside the cluster, so they must not become a way to
reach what the cluster can reach and the user cannot: every address a host resolves to must be
global (no loopback, private, link-local, shared or reserved ranges) and not a cloud metadata or
host endpoint. The check happens before any connection, the connection then goes to the address
that was checked (a second DNS answer cannot swap it), and every redirect hop is checked again.
Downloads are size-limited, retried on transient failures, and written atomically.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import socket
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from kairyu_tuning.failure import StepError, fail

__all__ = ["Policy", "RefusedError", "StepError", "TransientError", "download", "refusal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Global addresses that still lead to the cloud host rather than the internet.
_HOST_ENDPOINTS = {
    ipaddress.ip_address("168.63.129.16"),  # Azure WireServer
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
}
_MAX_REDIRECTS = 5
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


class RefusedError(StepError):
    """A URL that must not be fetched; never retried."""


class TransientError(StepError):
    """A failure that may pass: a network error or a 5xx."""


@dataclass(frozen=True)
class Policy:
    max_bytes: int
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    retries: int = 3
    backoff_s: float = 1.0


def refusal(ip: IPAddress, policy: Policy) -> str | None:
    """Why this address must not be contacted, or None."""
    if any(ip in net for net in policy.allowed):
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if mapped is not None:
        return refusal(mapped, policy)
    if ip in _HOST_ENDPOINTS or ip == ipaddress.ip_address("169.254.169.254"):
        return f"{ip} is a cloud metadata or host endpoint"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is not a public internet address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise TransientError(f"cannot resolve {host}: {err.strerror}") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def checked_address(url: str, policy: Policy) -> tuple[str, int, IPAddress, bool]:
    """Host, port, the address to connect to, and whether TLS is used; or Refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedError(f"refused {url}: only http and https URLs are downloaded")
    if not parts.hostname:
        raise RefusedError(f"refused {url}: no host")
    if parts.username or parts.password:
        raise RefusedError(f"refused {url}: credentials in URLs are not accepted")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    addresses = resolve(parts.hostname, port)
    # Every answer must be acceptable: otherwise a name with one public and one internal address
    # would be fetched or refused depending on which answer came first.
    for ip in addresses:
        if (why := refusal(ip, policy)) is not None:
            raise RefusedError(f"refused {url}: {parts.hostname} resolves to {why}")
    return parts.hostname, port, addresses[0], tls


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address while verifying the certificate for the URL's host name."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=_TIMEOUT_S, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=_TIMEOUT_S)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def file_name(url: str, index: int) -> str:
    """The URL path's last segment (query dropped), made safe; the extension tells the format."""
    name = PurePosixPath(urlsplit(url).path).name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    return safe or f"data-{index}"


def fetch(url: str, target: Path, policy: Policy) -> int:
    """Download one URL to `target` (atomically); the number of bytes written."""
    for _ in range(_MAX_REDIRECTS + 1):
        host, port, address, tls = checked_address(url, policy)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn: http.client.HTTPConnection = (
            _PinnedHTTPS(host, port, str(address), ssl.create_default_context())
            if tls
            else _PinnedHTTP(host, port, str(address))
        )
        try:
            conn.request("GET", path, headers={"User-Agent": "kairyu-tuning-downloader"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise StepError(f"{url} answered {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status in _RETRY_STATUSES:
                raise TransientError(f"{url} answered {response.status} {response.reason}")
            if response.status != 200:  # noqa: PLR2004
                raise StepError(f"{url} answered {response.status} {response.reason}")
            return _save(url, response, target, policy)
        except (OSError, http.client.HTTPException) as err:
            raise TransientError(f"{url}: {err}") from None
        finally:
            conn.close()
    raise StepError(f"{url}: more than {_MAX_REDIRECTS} redirects")


def _save(url: str, response: http.client.HTTPResponse, target: Path, policy: Policy) -> int:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise StepError(f"{url} is {int(declared)} bytes; the limit is {policy.max_bytes}")
    partial = target.with_name(f".{target.name}.partial")
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > policy.max_bytes:
                    raise StepError(f"{url} is larger than the limit of {policy.max_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise StepError(f"{url} is empty")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def download(urls: Iterable[str], directory: Path, policy: Policy) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    for index, url in enumerate(urls):
        target = directory / file_name(url, index)
        for attempt in range(1, policy.retries + 1):
            try:
                size = fetch(url, target, policy)
                break
            except TransientError as err:
                if attempt == policy.retries:
                    raise StepError(f"{err} (after {attempt} attempts)") from None
                print(f"retrying: {err}", file=sys.stderr, flush=True)  # noqa: T201
                time.sleep(policy.backoff_s * 2 ** (attempt - 1))
        print(f"downloaded {url} -> {target} ({size} bytes)", flush=True)  # noqa: T201
        saved.append(target)
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kairyu_tuning.download", description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--target", type=Path, default=Path("/mnt/data"))
    parser.add_argument("--max-mib", type=int, default=10240)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--backoff-s", type=float, default=1.0)
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        help="an internal network that may be reached (e.g. an in-cluster data server)",
    )
    args = parser.parse_args(argv)
    policy = Policy(
        max_bytes=args.max_mib * 1024 * 1024,
        allowed=tuple(ipaddress.ip_network(c) for c in args.allow_cidr),
        retries=max(1, args.retries),
        backoff_s=args.backoff_s,
    )
    try:
        download(args.urls, args.target, policy)
    except StepError as err:
        fail(f"data download failed: {err}")


if __name__ == "__main__":
    main()
