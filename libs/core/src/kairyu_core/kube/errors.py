"""kairyu's error ladder over the Kubernetes client: callers branch on types, not on the library.

The client library's exception is kept as `__cause__`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class KubeError(Exception):
    """A Kubernetes API call failed."""

    def __init__(
        self, message: str, *, status: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.details: dict[str, Any] = details or {}
        """The Status object's `details` (kind, name, group), when the apiserver sent them."""


class KubeConfigError(KubeError):
    """No usable kubeconfig (missing, unreadable, no current context) or in-cluster identity."""


class NotFoundError(KubeError):
    """404: the object (or its type) does not exist."""

    def names(self, plural: str, name: str) -> bool:
        """True when the apiserver said that this very object does not exist.

        A 404 for a missing resource type (a CRD not installed, or not yet served after an
        apiserver restart) has no `details.name`, so it cannot be taken for the object's own
        absence: a caller about to delete something on the strength of a 404 must check this.
        """
        return self.details.get("name") == name and self.details.get("kind") == plural


class ConflictError(KubeError):
    """409: a resourceVersion precondition or an apply conflict; re-read and retry."""


class GoneError(KubeError):
    """410: the resourceVersion is too old to watch from; re-list."""


class InvalidError(KubeError):
    """422 (or 400): the apiserver rejected the object; the message names the field."""


class UnavailableError(KubeError):
    """The apiserver could not be reached or answered 5xx / 429; retry with backoff."""


def from_status(
    status: int | None, message: str, *, details: dict[str, Any] | None = None
) -> KubeError:
    """The matching error type for an HTTP status."""
    match status:
        case HTTPStatus.NOT_FOUND:
            return NotFoundError(message, status=status, details=details)
        case HTTPStatus.CONFLICT:
            return ConflictError(message, status=status)
        case HTTPStatus.GONE:
            return GoneError(message, status=status)
        case HTTPStatus.UNPROCESSABLE_ENTITY | HTTPStatus.BAD_REQUEST:
            return InvalidError(message, status=status)
        case HTTPStatus.TOO_MANY_REQUESTS:
            return UnavailableError(message, status=status)
        case int() if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return UnavailableError(message, status=status)
        case _:
            return KubeError(message, status=status)
