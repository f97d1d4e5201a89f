"""The planner's admission webhook in a local cluster: a serving certificate and its registration.

The apiserver calls webhooks over TLS only, so the local environment makes a CA, issues the
planner a certificate for 127.0.0.1, and registers a ValidatingWebhookConfiguration that points at
that address with the CA bundle. In a real cluster the chart does the same with a Service.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairyu_contracts.api.crd import CRDS
from kairyu_localenv import certs
from kairyu_localenv.processes import free_port
from kairyu_localenv.service_env import env_of
from kairyu_planner.settings import PlannerSettings

PATH = "/validate/workspace.kaito.sh"  # KAITO's path for the Workspace webhook
WEBHOOK_NAME = "validation.workspace.kaito.sh"


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the webhook listens and the files it serves with."""

    host: str
    port: int
    cert: Path
    key: Path
    ca: Path

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{PATH}"

    @property
    def health_url(self) -> str:
        return f"https://{self.host}:{self.port}/healthz"

    def client_context(self) -> ssl.SSLContext:
        """A TLS context that trusts the webhook's CA (for readiness probes)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def env(self) -> dict[str, str]:
        """KAIRYU_WEBHOOK__* variables for the planner process."""
        return env_of(
            PlannerSettings,
            webhook={
                "host": self.host,
                "port": self.port,
                "cert_file": self.cert,
                "key_file": self.key,
            },
        )


def prepare(directory: Path, host: str = "127.0.0.1") -> WebhookEndpoint:
    """A CA and a serving certificate for `host`, and a free port to serve on."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca(directory, "kairyu-webhook-ca")
    serving = certs.issue(
        ca, directory, name="webhook", common_name="kairyu-planner", hosts=(host,)
    )
    return WebhookEndpoint(
        host=host, port=free_port(), cert=serving.cert, key=serving.key, ca=ca.cert
    )


def registration(
    endpoint: WebhookEndpoint, *, name: str = "kairyu-planner", namespace: str | None = None
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for kaito.sh kinds (only `namespace`'s when given)."""
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        "clientConfig": {
            "url": endpoint.url,
            "caBundle": base64.b64encode(endpoint.ca.read_bytes()).decode(),
        },
        "rules": [
            {
                "apiGroups": ["kaito.sh"],
                "apiVersions": ["v1alpha1", "v1beta1"],
                # Workspaces, and the InferenceSets and MultiRoleInferences that make them.
                "resources": list(CRDS),
                "operations": ["CREATE", "UPDATE"],
            }
        ],
    }
    if namespace is not None:
        webhook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }
