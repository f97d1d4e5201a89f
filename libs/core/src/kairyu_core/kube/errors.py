"""kairyu's error ladder over the Kubernetes client: callers branch on types, not on the library.

The client library's exception is kept as `__cause__`.
"""

from __future__ import annotations

from http import HTTPStatus


class KubeError(Exception):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(KubeError):
    """404: the object (or its type) does not exist."""


class ConflictError(KubeError):
    """409: a resourceVersion precondition or an apply conflict; re-read and retry."""


class GoneError(KubeError):
    """410: the resourceVersion is too old to watch from; re-list."""


class InvalidError(KubeError):
    """422 (or 400): the apiserver rejected the object; the message names the field."""


class UnavailableError(KubeError):
    """The apiserver could not be reached or answered 5xx / 429; retry with backoff."""


def from_status(status: int | None, message: str) -> KubeError:
    """The matching error type for an HTTP status."""
    match status:
        case HTTPStatus.NOT_FOUND:
            return NotFoundError(message, status=status)
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
