"""The HTTP client, on the standard library only (``urllib.request`` and ``json``)."""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import LlmemError, error_for
from ._types import KeyInfo, Memory, NewKey

__version__ = "0.1.0"

_Query = Sequence[Tuple[str, str]]


class Client:
    """A client of the memory REST API of ``llmem serve``.

    >>> c = Client("http://127.0.0.1:8787", api_key="llmem-sk-...")
    >>> c.add("I am allergic to peanuts", user_id="alice")
    >>> [m.memory for m in c.search("what can't I eat?", user_id="alice")]

    ``base_url`` is the server's address, with or without the ``/v1`` suffix that
    ``llmem serve`` prints. ``api_key`` goes out as ``Authorization: Bearer <key>``.
    ``timeout`` (seconds) bounds each request.
    """

    def __init__(
        self, base_url: str, api_key: Optional[str] = None, timeout: float = 30.0
    ) -> None:
        base = base_url.strip().rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")].rstrip("/")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8787, not {base_url!r}"
            )
        self.base_url = base
        self.api_key = api_key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # -- memories ------------------------------------------------------------------------

    def add(
        self,
        text: Optional[str] = None,
        *,
        messages: Optional[Sequence[Mapping[str, Any]]] = None,
        user_id: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        kind: Optional[str] = None,
    ) -> List[Memory]:
        """Stores ``text``, or one memory per non-empty message of ``messages``
        (``[{"role": ..., "content": ...}]``); returns the memories added."""
        if (text is None) == (messages is None):
            raise ValueError("add() takes either text or messages (exactly one)")
        body: Dict[str, Any] = {}
        if text is not None:
            body["text"] = text
        else:
            body["messages"] = [dict(m) for m in messages or []]
        _put(body, "user_id", user_id)
        _put(body, "metadata", dict(metadata) if metadata is not None else None)
        _put(body, "kind", kind)
        data = self._request("POST", "/v1/memories", body=body)
        return _memories(data)

    def get(self, memory_id: str, *, user_id: Optional[str] = None) -> Memory:
        """The memory ``memory_id``; :class:`NotFoundError` if this caller has none."""
        data = self._request(
            "GET", f"/v1/memories/{_seg(memory_id)}", query=_q(user_id=user_id)
        )
        return Memory.from_json(data)

    def list(
        self,
        *,
        user_id: Optional[str] = None,
        filter: Optional[Mapping[str, Any]] = None,
        limit: Optional[int] = None,
    ) -> List[Memory]:
        """The memories of ``user_id`` (oldest first), those matching ``filter`` only
        (a Mongo-like filter on metadata, e.g. ``{"topic": "food"}``)."""
        query = _q(
            user_id=user_id,
            limit=str(limit) if limit is not None else None,
            filter=_json(filter) if filter is not None else None,
        )
        data = self._request("GET", "/v1/memories", query=query)
        return _memories(data)

    def search(
        self,
        query: str,
        *,
        user_id: Optional[str] = None,
        limit: int = 10,
        filter: Optional[Mapping[str, Any]] = None,
    ) -> List[Memory]:
        """The memories of ``user_id`` that best answer ``query``, best first, each with its
        ``score``."""
        body: Dict[str, Any] = {"query": query, "limit": limit}
        _put(body, "user_id", user_id)
        _put(body, "filter", dict(filter) if filter is not None else None)
        data = self._request("POST", "/v1/memories/search", body=body)
        return _memories(data)

    def update(
        self,
        memory_id: str,
        text: str,
        *,
        metadata: Optional[Mapping[str, Any]] = None,
        user_id: Optional[str] = None,
    ) -> Memory:
        """Replaces the text (and, when given, the metadata) of ``memory_id``."""
        body: Dict[str, Any] = {"text": text}
        _put(body, "metadata", dict(metadata) if metadata is not None else None)
        _put(body, "user_id", user_id)
        data = self._request("PUT", f"/v1/memories/{_seg(memory_id)}", body=body)
        return Memory.from_json(data)

    def delete(self, memory_id: str, *, user_id: Optional[str] = None) -> None:
        """Deletes ``memory_id``; :class:`NotFoundError` if this caller has none."""
        self._request(
            "DELETE", f"/v1/memories/{_seg(memory_id)}", query=_q(user_id=user_id)
        )

    def delete_all(
        self,
        *,
        user_id: Optional[str] = None,
        filter: Optional[Mapping[str, Any]] = None,
    ) -> int:
        """Deletes the memories of ``user_id`` that match ``filter`` (all of them when no
        filter is given); returns how many were deleted."""
        if filter is not None:
            query = _q(user_id=user_id, filter=_json(filter))
        else:
            query = _q(user_id=user_id, all="true")
        data = self._request("DELETE", "/v1/memories", query=query)
        return int(_obj(data).get("deleted", 0))

    # -- keys (admin key only) -----------------------------------------------------------

    def create_key(self, tenant: str, *, admin: bool = False) -> NewKey:
        """A new API key for ``tenant`` (an admin key when ``admin``)."""
        data = self._request(
            "POST", "/v1/admin/keys", body={"tenant": tenant, "admin": admin}
        )
        return NewKey.from_json(_obj(data))

    def list_keys(self) -> List[KeyInfo]:
        """Every key, revoked ones included (never their secrets)."""
        data = _obj(self._request("GET", "/v1/admin/keys"))
        items = data.get("data", [])
        if not isinstance(items, list):
            raise _malformed("`data` is not a list")
        return [KeyInfo.from_json(k) for k in items]

    def revoke_key(self, key_id: str) -> None:
        """Revokes the key ``key_id``: it is refused (401) from now on."""
        self._request("DELETE", f"/v1/admin/keys/{_seg(key_id)}")

    # -- health --------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether the server answers ``GET /health`` with success (no key needed)."""
        try:
            self._request("GET", "/health", auth=False)
        except LlmemError:
            return False
        return True

    # -- plumbing ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[_Query] = None,
        body: Optional[Mapping[str, Any]] = None,
        auth: bool = True,
    ) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(list(query))
        headers = {
            "Accept": "application/json",
            "User-Agent": f"llmem-client-python/{__version__}",
        }
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _from_http_error(e) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise LlmemError(
                    0, "timeout_error", f"no answer from {url} within {self.timeout:g} s"
                ) from e
            raise LlmemError(
                0, "connection_error", f"could not reach {url}: {e.reason}"
            ) from e
        except (socket.timeout, TimeoutError) as e:
            raise LlmemError(
                0,
                "timeout_error",
                f"no answer from {url} within {self.timeout:g} s",
            ) from e
        except (OSError, http.client.HTTPException) as e:
            raise LlmemError(
                0, "connection_error", f"the connection to {url} failed: {e}"
            ) from e
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise LlmemError(
                0,
                "invalid_response",
                f"{method} {url} answered something that is not JSON: {raw[:200]!r}",
            ) from e


def _from_http_error(e: urllib.error.HTTPError) -> LlmemError:
    status = e.code
    try:
        raw = e.read()
    except Exception:  # the body is a courtesy: the status decides the class
        raw = b""
    type_ = "http_error"
    message = ""
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        type_ = str(err.get("type") or type_)
        message = str(err.get("message") or "")
    elif isinstance(err, str):
        message = err
    if not message:
        text = raw.decode("utf-8", "replace").strip() if raw else ""
        message = text[:500] or (e.reason if isinstance(e.reason, str) else "") or f"HTTP {status}"
    retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
    return error_for(status, type_, message, retry_after)


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _put(body: Dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _q(**params: Optional[str]) -> List[Tuple[str, str]]:
    return [(k, v) for k, v in params.items() if v is not None]


def _seg(part: str) -> str:
    if not isinstance(part, str) or not part:
        raise ValueError(f"an id must be a non-empty string, not {part!r}")
    return urllib.parse.quote(part, safe="")


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), separators=(",", ":"))


def _obj(data: Any) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise _malformed("the answer is not a JSON object")
    return data


def _memories(data: Any) -> List[Memory]:
    results = _obj(data).get("results")
    if not isinstance(results, list):
        raise _malformed("`results` is not a list")
    return [Memory.from_json(m) for m in results]


def _malformed(what: str) -> LlmemError:
    return LlmemError(0, "invalid_response", f"unexpected answer from the server: {what}")
