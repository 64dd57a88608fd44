"""A small typed client for the memory REST API of ``llmem serve``.

>>> from llmem_client import Client
>>> client = Client("http://127.0.0.1:8787", api_key="llmem-sk-...")
>>> client.add("Alice is allergic to peanuts", user_id="alice")
"""

from ._client import Client, __version__
from ._errors import (
    AuthenticationError,
    BadRequestError,
    LlmemError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    UpstreamError,
)
from ._types import KeyInfo, Memory, NewKey

__all__ = [
    "Client",
    "Memory",
    "NewKey",
    "KeyInfo",
    "LlmemError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "BadRequestError",
    "UpstreamError",
    "UnavailableError",
    "__version__",
]
