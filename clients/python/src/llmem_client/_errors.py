"""The errors the client raises, one class per kind of HTTP answer."""

from __future__ import annotations

from typing import Dict, Optional, Type


class LlmemError(Exception):
    """Any failure of a call: an error answer of the server, or no answer at all.

    ``status`` is the HTTP status (0 when the server could not be reached or answered
    something that is not HTTP), ``type`` the error type of the JSON body (for example
    ``"not_found_error"``) and ``message`` the server's message.
    """

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def __str__(self) -> str:
        if self.status:
            return f"{self.status} {self.type}: {self.message}"
        return f"{self.type}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, type={self.type!r}, message={self.message!r})"


class AuthenticationError(LlmemError):
    """401: no key, an unknown key or a revoked key."""


class PermissionDeniedError(LlmemError):
    """403: the key is valid but may not do this (an admin route called with a tenant key)."""


class NotFoundError(LlmemError):
    """404: no such memory for this caller (also when the id belongs to another tenant)."""


class BadRequestError(LlmemError):
    """400, 413 or 422: the request is wrong (bad input, unknown filter operator, too large)."""


class UpstreamError(LlmemError):
    """502: the upstream model failed."""


class UnavailableError(LlmemError):
    """503: the service cannot answer now; ``retry_after`` is the seconds the server asks to
    wait (from the ``Retry-After`` header), or ``None``."""

    def __init__(
        self, status: int, type: str, message: str, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(status, type, message)
        self.retry_after = retry_after


_BY_STATUS: Dict[int, Type[LlmemError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: BadRequestError,
    422: BadRequestError,
    502: UpstreamError,
    503: UnavailableError,
}


def error_for(
    status: int, type: str, message: str, retry_after: Optional[float] = None
) -> LlmemError:
    """The error of the class that fits ``status``."""
    cls = _BY_STATUS.get(status, LlmemError)
    if cls is UnavailableError:
        return UnavailableError(status, type, message, retry_after)
    return cls(status, type, message)
