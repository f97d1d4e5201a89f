"""Service settings from the environment (KAIRYU_*), built once in each service's main().

Nested groups use `__`: KAIRYU_NATS__URL, KAIRYU_KUBE__KUBECONFIG, KAIRYU_LOG__FORMAT. Tracing is
configured by the standard OTEL_* variables instead (see `tracing`).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BusTransport = Literal["nats", "servicebus"]
"""Which broker carries the bus (docs/bus.md): NATS JetStream, or Azure Service Bus."""

NodeProvisioner = Literal["karpenter", "azure", "byo"]
"""Where GPU nodes come from: the provisioner's backend, and what the planner plans for (byo:
your own nodes, under KAITO's bring-your-own rules). The chart sets both from one value."""


class NatsSettings(BaseModel):
    """Where the bus is, who this service is on it, and which streams it uses.

    Credentials are fields of their own, never part of `url`: a URL is the thing that ends up in
    logs, error messages and tracebacks (KAIRYU_NATS__USER / __PASSWORD, or __CREDS_FILE).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str = "nats://127.0.0.1:4222"
    """nats://host:port, or tls://host:port for TLS; without user or password in it."""
    user: str | None = None
    password: SecretStr | None = None
    creds_file: Path | None = None
    """A NATS .creds file (user JWT and nkey seed), instead of user and password."""
    tls_ca_file: Path | None = None
    """CA bundle to verify the server with; unset: the system's CAs (when the URL is tls://)."""
    tls_cert_file: Path | None = None
    """Client certificate, for servers that require one (with `tls_key_file`)."""
    tls_key_file: Path | None = None
    inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    """Subject prefix of this connection's reply inboxes. Under NATS authorization each user gets
    its own (`_INBOX.<user>`), so that no service can read the replies meant for another."""
    stream: str = "KAIRYU"
    """Base name of kairyu's JetStream streams: `<stream>_STATE` and `<stream>_DEADLETTER`."""
    subject_prefix: str = "kairyu"
    """First subject token; lets two installations share one NATS."""
    state_max_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    """Size limit of the state stream (bytes; 256 MiB), which the set-up step applies: it bounds
    how many objects it can hold (about 100 000 at a few KiB each). When full it refuses new
    states rather than evicting live objects' values."""

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        parsed = urlsplit(url)
        if parsed.scheme not in ("nats", "tls") or not parsed.hostname:
            raise ValueError("must be nats://host:port or tls://host:port")
        if parsed.username or parsed.password:
            raise ValueError("must not carry credentials: set user and password (or creds_file)")
        return url

    @model_validator(mode="after")
    def _credentials_are_complete(self) -> NatsSettings:
        if (self.password is None) != (self.user is None):
            raise ValueError("user and password go together")
        if self.creds_file is not None and self.user is not None:
            raise ValueError("creds_file replaces user and password: set one or the other")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class ServiceBusSettings(BaseModel):
    """Where the Azure Service Bus namespace is and how to sign in (issue 20, docs/bus.md).

    Either a connection string (a shared access key: trials and the local endpoint) or the
    namespace's fully qualified name, signed in to with an Entra ID token (azure-identity's
    `DefaultAzureCredential`: workload identity in a pod; the production way, since only roles
    can be scoped to one subscription).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    connection_string: SecretStr | None = None
    """`Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...`; a secret as a whole."""
    fully_qualified_namespace: str | None = None
    """`<namespace>.servicebus.windows.net`, signed in to with a token credential."""
    stream: str = "KAIRYU"
    """Base of the entities' names (`<stream>-state-<kind>`, lower case), as on NATS."""

    @model_validator(mode="after")
    def _one_way_in(self) -> ServiceBusSettings:
        if (self.connection_string is None) == (self.fully_qualified_namespace is None):
            raise ValueError("set connection_string or fully_qualified_namespace, not both")
        return self


class KubeTimeouts(BaseModel):
    """Client-side limits on every Kubernetes call, in seconds (KAIRYU_KUBE__TIMEOUTS__*).

    Without them a half-open connection (dropped by a node or a NAT without a reset) blocks a
    handler, a watch or a Lease renewal for ever.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_s: float = Field(default=10.0, gt=0)
    """Opening a connection, TLS handshake included."""
    read_s: float = Field(default=30.0, gt=0)
    """No byte from the apiserver for this long fails a call (watches use `watch_idle_s`)."""
    request_s: float = Field(default=60.0, gt=0)
    """A whole call, watches excepted; the apiserver's own limit for a request is 60 s."""
    watch_idle_s: float = Field(default=90.0, gt=0)
    """A watch that brings neither an event nor a bookmark for this long is resumed on a new
    connection. The apiserver sends a bookmark about every minute to watches that ask for them,
    so a quiet but healthy watch is seldom cut, and a dead one is noticed in 90 s."""


class KubeSettings(BaseModel):
    """How to reach the apiserver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: Path | None = None
    """A kubeconfig file; when unset, the in-cluster service account (or ~/.kube/config)."""
    timeouts: KubeTimeouts = KubeTimeouts()


class LogSettings(BaseModel):
    """Log output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    """json in the cluster (one object per line, with trace ids); text for a terminal."""


class LeaderElectionSettings(BaseModel):
    """`KAIRYU_LEADER_ELECTION__*`: one replica of a service works, the others wait on a Lease.

    Two replicas of a service must never reconcile the same Workspace at once (two writers of
    the same objects and conditions), so with more than one the chart turns this on; see
    kairyu_core.kube.leadership for the protocol.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    """Off for one local process (`make dev`), where a Lease would only delay a restart."""
    namespace: str = "default"
    """Where the Lease lives: the chart passes the pod's own namespace."""
    lease_name: str | None = None
    """The Lease's name; unset: the service's name (`service_name`), one Lease per service."""
    identity: str = Field(default_factory=socket.gethostname)
    """This candidate's name in the Lease: the pod name, as the hostname is in a pod."""
    duration_s: float = Field(default=15.0, gt=0)
    """A holder that has not renewed for this long has lost it (client-go's default)."""
    renew_deadline_s: float = Field(default=10.0, gt=0)
    """The holder stops its work when it could not renew for this long (client-go's default)."""
    retry_s: float = Field(default=2.0, gt=0)
    """Seconds between renewals, and between a standby's attempts (client-go's default)."""

    @model_validator(mode="after")
    def _timing(self) -> LeaderElectionSettings:
        # Checked here too (kube.leadership.Lease checks it again) so that a bad value fails at
        # start-up, naming the variable.
        if not self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("need retry_s < renew_deadline_s < duration_s")
        return self


class ServiceSettings(BaseSettings):
    """Settings every service has; services subclass it and add their own group."""

    # hide_input_in_errors: a refused value is not repeated in the error a service dies with; it
    # may be a secret (a password, a URL with one in it).
    model_config = SettingsConfigDict(
        env_prefix="KAIRYU_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    service_name: str = Field(default="kairyu", min_length=1)
    bus: BusTransport = "nats"
    """KAIRYU_BUS: the broker; `servicebus` needs the KAIRYU_SERVICEBUS__* group."""
    nats: NatsSettings = NatsSettings()
    servicebus: ServiceBusSettings | None = None
    kube: KubeSettings = KubeSettings()
    log: LogSettings = LogSettings()
    health_port: int = Field(default=0, ge=0, le=65535)
    """/healthz and /readyz for the kubelet's probes; 0 (the default outside a pod): off."""
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)

    @model_validator(mode="after")
    def _bus_is_configured(self) -> ServiceSettings:
        if self.bus == "servicebus" and self.servicebus is None:
            raise ValueError(
                "KAIRYU_BUS=servicebus needs KAIRYU_SERVICEBUS__CONNECTION_STRING or "
                "KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE"
            )
        return self
