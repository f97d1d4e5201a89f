"""The tuning Job's input downloader: fetch `urls` into /mnt/data, refusing internal addresses.

A Workspace's URLs are user input that runs inside the cluster, so they must not become a way to
reach what the cluster can reach and the user cannot: every address a host resolves to must be
global (no loopback, private, link-local, site-local, shared or reserved ranges) and not a cloud
metadata or host endpoint. IPv6 forms that carry an IPv4 address (NAT64, 6to4, Teredo, the mapped,
translated and compatible forms) are judged by the IPv4 address inside, since that is where a
gateway would deliver the packets. The check happens before any connection, the connection then
goes to the address that was checked (a second DNS answer cannot swap it), and every redirect hop
is checked again.

The step runs while a GPU node waits for it, so it is bounded: a per-read timeout, one deadline
for all URLs together (a server that sends a byte just before each read times out cannot hold the
Job), a size limit per file and one for all files together. Downloads are retried on transient
failures and written atomically. URLs are shown only redacted (no userinfo, query or fragment):
signed URLs carry their token in the query, and what this step prints ends up in the pod's log and
in the Workspace's condition.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urljoin, urlsplit

from kairyu_tuning.failure import StepError, fail

__all__ = [
    "DeadlineError",
    "Policy",
    "RefusedError",
    "StepError",
    "TransientError",
    "download",
    "redact",
    "redact_text",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Global addresses that still lead to the cloud host rather than the internet.
_HOST_ENDPOINTS = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OCI metadata
    ipaddress.ip_address("168.63.129.16"),  # Azure WireServer
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
}
# Not global, whatever the running Python's ipaddress tables say (they changed in 3.11.10 /
# 3.12.4: the image's Python and a developer's may disagree, the downloader must not).
_NOT_GLOBAL: dict[IPNetwork, str] = {
    ipaddress.ip_network("fec0::/10"): "a site-local address",
    ipaddress.ip_network("64:ff9b:1::/48"): "in the local-use NAT64 prefix",
    ipaddress.ip_network("3fff::/20"): "a documentation address",
    ipaddress.ip_network("5f00::/16"): "a segment-routing address",
    ipaddress.ip_network("2001::/23"): "in a special-purpose range",
    ipaddress.ip_network("2001:db8::/32"): "a documentation address",
    ipaddress.ip_network("100::/64"): "a discard-only address",
}
_MAX_REDIRECTS = 5
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20
_MAX_PORT = 65535
# Printable ASCII other than space: kept as written in a request target; anything else (non-ASCII
# letters in a file name) is percent-encoded as UTF-8, as browsers do.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


class RefusedError(StepError):
    """A URL that must not be fetched; never retried."""


class TransientError(StepError):
    """A failure that may pass: a network error or a 5xx."""


class DeadlineError(StepError):
    """The step's deadline passed; never retried (the time is spent)."""


@dataclass(frozen=True)
class Policy:
    max_bytes: int
    """Largest single file."""
    allowed: tuple[IPNetwork, ...] = ()
    """Internal networks that may be reached anyway (an in-cluster data server)."""
    retries: int = 3
    backoff_s: float = 1.0
    max_total_bytes: int | None = None
    """Largest sum of all files; None: only the per-file limit."""
    read_timeout_s: float = 30.0
    """Longest wait for a connection or for any bytes at all."""
    deadline_s: float = 3600.0
    """Longest time for all URLs together, retries and redirects included."""


def redact(url: str) -> str:
    """`url` as it may be shown: userinfo, query and fragment replaced (they carry tokens).

    Plain string work rather than urlsplit, so that a malformed URL is redacted too.
    """
    rest, hash_mark, _ = url.partition("#")
    rest, question_mark, _ = rest.partition("?")
    start = rest.find("//")
    if start != -1:
        start += 2
        end = rest.find("/", start)
        end = len(rest) if end == -1 else end
        authority = rest[start:end]
        if "@" in authority:
            authority = "***@" + authority.rpartition("@")[2]
        rest = rest[:start] + authority + rest[end:]
    # The tuner's condition messages and the bus write these the same way.
    return rest + ("?REDACTED" if question_mark else "") + ("#REDACTED" if hash_mark else "")


def redact_text(text: str) -> str:
    """`text` with every URL-like part in it redacted: the last guard before anything is printed."""
    return _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)


def _say(message: str) -> None:
    print(redact_text(message), file=sys.stderr, flush=True)  # noqa: T201 - the container's log


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address carries: (form, address, whether public ones are fetched).

    NAT64 (what DNS64 answers in IPv6-only clusters) and the mapped form really reach that IPv4
    address, so a public one is fine. The other forms are deprecated or tunnel through relays no
    cluster needs: refused in any case, but an internal address inside is named.
    """
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped, True
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return "NAT64", low, True
    if ip in ipaddress.ip_network("::ffff:0:0:0/96"):
        return "IPv4-translated", low, False
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour, False
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1], False
    if ip in ipaddress.ip_network("::/96") and int(ip) > 1:  # :: and ::1 are judged as such
        return "IPv4-compatible", low, False
    return None


def _why_not(ip: IPAddress) -> str | None:
    """What kind of internal address this is (without the address), or None if it is global."""
    if ip in _HOST_ENDPOINTS:
        return "a cloud metadata or host endpoint"
    if ip.is_unspecified:
        return "the unspecified address (it reaches this host)"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    for network, kind in _NOT_GLOBAL.items():
        if ip in network:
            return f"{kind}, not a public internet address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_multicast:
        return "not a public internet address"
    return None


def refusal(ip: IPAddress, policy: Policy) -> str | None:
    """Why this address must not be contacted, or None."""
    if any(ip in net for net in policy.allowed):
        return None
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if embedded is not None:
        form, inner, reaches = embedded
        inner_allowed = any(inner in net for net in policy.allowed)
        if not inner_allowed and (why := _why_not(inner)) is not None:
            return f"{ip} is the {form} form of {inner}, {why}"
        if reaches:
            return None
        return f"{ip} is in the {form} range, not a public internet address"
    why_not = _why_not(ip)
    return None if why_not is None else f"{ip} is {why_not}"


@dataclass(frozen=True)
class _Target:
    url: str
    host: str
    port: int
    tls: bool
    request: str
    """Path and query as sent in the request line."""


def _parse(url: str) -> _Target:
    """The parts of a URL that will be fetched, or Refused with a reason (never a traceback)."""
    shown = redact(url)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):  # noqa: PLR2004
        raise RefusedError(
            f"refused {shown}: a URL must not contain spaces or control characters "
            "(percent-encode them)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RefusedError(f"refused {shown}: not a well-formed URL") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedError(f"refused {shown}: only http and https URLs are downloaded")
    if "@" in parts.netloc:
        raise RefusedError(f"refused {shown}: credentials in URLs are not accepted")
    if not parts.hostname:
        raise RefusedError(f"refused {shown}: no host")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range: urllib says so without the URL
        port = 0
    if port == 0:
        raise RefusedError(f"refused {shown}: the port must be a number from 1 to {_MAX_PORT}")
    tls = parts.scheme == "https"
    request = quote(parts.path or "/", safe=_URL_SAFE) + (
        f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else ""
    )
    return _Target(url, parts.hostname, port or (443 if tls else 80), tls, request)


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
    except (UnicodeError, ValueError):  # the IDNA codec refuses it (empty or over-long label)
        raise RefusedError(f"refused {host}: not a valid host name") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def checked_address(target: _Target, policy: Policy) -> IPAddress:
    """The address to connect to, or Refused."""
    addresses = resolve(target.host, target.port)
    # Every answer must be acceptable: otherwise a name with one public and one internal address
    # would be fetched or refused depending on which answer came first.
    for ip in addresses:
        if (why := refusal(ip, policy)) is not None:
            raise RefusedError(f"refused {redact(target.url)}: {target.host} resolves to {why}")
    first = addresses[0]
    mapped = first.ipv4_mapped if isinstance(first, ipaddress.IPv6Address) else None
    return mapped or first  # the IPv4 stack, not a dual-stack socket, for ::ffff:a.b.c.d


class _Pinned:
    """A connection to a checked address that the deadline can cut from another thread.

    The socket timeout bounds each read; it cannot bound a server that sends one byte just before
    each timeout (a status line or body dripped for hours), so at the deadline `expire` shuts the
    socket down, which ends the blocked read at once.
    """

    expired = False
    _live: socket.socket | None = None  # the object that owns the descriptor (TLS takes it over)

    def _open(self, address: str, port: int, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((address, port), timeout)
        self._hold(sock)
        return sock

    def _hold(self, sock: socket.socket) -> None:
        self._live = sock
        if self.expired:  # the deadline passed while connecting: nobody shut this one down
            sock.close()
            raise TimeoutError("the deadline passed while connecting")

    def expire(self) -> None:
        self.expired = True
        if self._live is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown even for a TLS socket: ssl's own would also drop
                # its TLS state under the reading thread's feet.
                socket.socket.shutdown(self._live, socket.SHUT_RDWR)


class _PinnedHTTPS(_Pinned, http.client.HTTPSConnection):
    """HTTPS to a checked address while verifying the certificate for the URL's host name."""

    def __init__(
        self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = self._open(self._address, self.port, self.timeout)
        # The handshake after `_hold`, so that a dripped handshake is cut by the deadline too.
        tls = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        self._hold(tls)
        tls.do_handshake()
        self.sock = tls


class _PinnedHTTP(_Pinned, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = self._open(self._address, self.port, self.timeout)


@dataclass
class _Budget:
    """What the remaining URLs may still use: time until the deadline and bytes."""

    policy: Policy
    ends: float  # time.monotonic()
    used_bytes: int = 0

    def left_s(self) -> float:
        return self.ends - time.monotonic()

    def expired(self, url: str) -> DeadlineError:
        return DeadlineError(
            f"{redact(url)}: the download did not finish within its deadline of "
            f"{self.policy.deadline_s:g} s (all URLs together)"
        )

    def check_size(self, url: str, size: int, *, declared: bool = False) -> None:
        """Refuse a file that is (or says it will be) over the per-file or the total limit."""
        limit = self.policy.max_bytes
        shown = redact(url)
        if size > limit:
            raise StepError(
                f"{shown} is {size} bytes; the limit is {limit}"
                if declared
                else f"{shown} is larger than the limit of {limit} bytes"
            )
        total = self.policy.max_total_bytes
        if total is not None and self.used_bytes + size > total:
            raise StepError(
                f"{shown} would take the URLs together past their limit of {total} bytes "
                f"({self.used_bytes} bytes already downloaded)"
            )


def file_name(url: str, index: int) -> str:
    """The URL path's last segment (query dropped), made safe; the extension tells the format."""
    try:
        path = urlsplit(url).path
    except ValueError:  # refused with a reason when it is fetched
        path = ""
    name = PurePosixPath(path).name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    return safe or f"data-{index}"


def fetch(url: str, target: Path, policy: Policy, budget: _Budget | None = None) -> int:
    """Download one URL to `target` (atomically); the number of bytes written."""
    budget = budget or _Budget(policy, time.monotonic() + policy.deadline_s)
    for _ in range(_MAX_REDIRECTS + 1):
        parsed = _parse(url)
        address = checked_address(parsed, policy)
        left = budget.left_s()
        if left <= 0:
            raise budget.expired(url)
        # Connecting cannot be cut by `expire` (there is no socket yet): its timeout is bounded.
        timeout = min(policy.read_timeout_s, left)
        conn: _PinnedHTTP | _PinnedHTTPS
        if parsed.tls:
            tls = ssl.create_default_context()
            conn = _PinnedHTTPS(parsed.host, parsed.port, str(address), tls, timeout)
        else:
            conn = _PinnedHTTP(parsed.host, parsed.port, str(address), timeout)
        watchdog = threading.Timer(left, conn.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("GET", parsed.request, headers={"User-Agent": "kairyu-tuning-downloader"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                url = _redirected(url, response)
                continue
            if response.status in _RETRY_STATUSES:
                raise TransientError(f"{redact(url)} answered {response.status} {response.reason}")
            if response.status != 200:  # noqa: PLR2004
                raise StepError(f"{redact(url)} answered {response.status} {response.reason}")
            size = _save(url, response, target, budget, conn)
        except (OSError, http.client.HTTPException) as err:
            if conn.expired:
                raise budget.expired(url) from None
            raise TransientError(f"{redact(url)}: {type(err).__name__}: {err}") from None
        finally:
            watchdog.cancel()
            conn.close()
        return size
    raise StepError(f"{redact(url)}: more than {_MAX_REDIRECTS} redirects")


def _redirected(url: str, response: http.client.HTTPResponse) -> str:
    location = response.getheader("Location")
    if not location:
        raise StepError(f"{redact(url)} answered {response.status} without a Location")
    try:
        return urljoin(url, location)
    except ValueError:
        raise StepError(
            f"{redact(url)} answered {response.status} with a malformed Location"
        ) from None


def _save(
    url: str,
    response: http.client.HTTPResponse,
    target: Path,
    budget: _Budget,
    conn: _Pinned,
) -> int:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit():
        budget.check_size(url, int(declared), declared=True)
    partial = target.with_name(f".{target.name}.partial")
    size = 0
    try:
        with partial.open("wb") as out:
            # read1: at most one read per call, so the deadline is looked at between reads (read
            # would loop until a whole chunk came, however slowly).
            while chunk := response.read1(_CHUNK):
                size += len(chunk)
                budget.check_size(url, size)
                out.write(chunk)
        if conn.expired:  # a read ended by the deadline looks like the end of the body
            raise budget.expired(url)
        if response.length:  # read1 ends quietly when the connection closes early
            raise TransientError(f"{redact(url)}: the connection closed after {size} bytes")
        if size == 0:
            raise StepError(f"{redact(url)} is empty")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def download(urls: Iterable[str], directory: Path, policy: Policy) -> list[Path]:
    """Fetch every URL into `directory` within the policy's limits; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    budget = _Budget(policy, time.monotonic() + policy.deadline_s)
    saved = []
    for index, url in enumerate(urls):
        target = directory / file_name(url, index)
        for attempt in range(1, policy.retries + 1):
            try:
                size = fetch(url, target, policy, budget)
                break
            except TransientError as err:
                if attempt == policy.retries:
                    raise StepError(f"{err} (after {attempt} attempts)") from None
                _say(f"retrying: {err}")
                pause = policy.backoff_s * 2 ** (attempt - 1)
                if pause >= budget.left_s():
                    raise budget.expired(url) from None
                time.sleep(pause)
        budget.used_bytes += size
        _say(f"downloaded {redact(url)} -> {target} ({size} bytes)")
        saved.append(target)
    return saved


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kairyu_tuning.download", description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--target", type=Path, default=Path("/mnt/data"))
    parser.add_argument("--max-mib", type=_positive(int), default=10240, help="largest file")
    parser.add_argument(
        "--max-total-mib",
        type=_positive(int),
        default=None,
        help="largest sum of all files (default: --max-mib, which the tuner sizes /mnt/data for)",
    )
    parser.add_argument(
        "--deadline-s",
        type=_positive(float),
        default=3600.0,
        help="longest time for all URLs together, retries included",
    )
    parser.add_argument(
        "--read-timeout-s",
        type=_positive(float),
        default=30.0,
        help="longest wait for a connection or for the next bytes",
    )
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--backoff-s", type=float, default=1.0)
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        help="an internal network that may be reached (e.g. an in-cluster data server)",
    )
    args = parser.parse_args(argv)
    try:
        allowed = tuple(ipaddress.ip_network(c) for c in args.allow_cidr)
    except ValueError as err:
        fail(f"data download failed: --allow-cidr: {err}", code=2)
    policy = Policy(
        max_bytes=int(args.max_mib) * 1024 * 1024,
        allowed=allowed,
        retries=max(1, args.retries),
        backoff_s=args.backoff_s,
        max_total_bytes=int(args.max_total_mib or args.max_mib) * 1024 * 1024,
        read_timeout_s=args.read_timeout_s,
        deadline_s=args.deadline_s,
    )
    try:
        download(args.urls, args.target, policy)
    except StepError as err:
        fail(redact_text(f"data download failed: {err}"))
    except Exception as err:  # noqa: BLE001 - the user sees a reason, not a traceback with a URL
        fail(redact_text(f"data download failed: {type(err).__name__}: {err}"))


if __name__ == "__main__":
    main()
