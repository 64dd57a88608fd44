"""The values the API answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional


@dataclass(frozen=True)
class Memory:
    """One memory as the server answers it.

    ``score`` is set on search results only; ``event`` (``"ADD"`` or ``"UPDATE"``) on the
    answers to changes only.
    """

    id: str
    memory: str
    user_id: Optional[str] = None
    kind: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict, hash=False)
    created_at: Optional[str] = None
    updated_at: Optional[str] = None
    score: Optional[float] = None
    event: Optional[str] = None

    @property
    def text(self) -> str:
        """The memory's text (the same as ``memory``)."""
        return self.memory

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Memory":
        """A memory from its JSON object; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a memory is a JSON object, not {type(data).__name__}")
        score = data.get("score")
        metadata = data.get("metadata")
        return cls(
            id=str(data["id"]),
            memory=str(data.get("memory", "")),
            user_id=data.get("user_id"),
            kind=data.get("kind"),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
            score=float(score) if score is not None else None,
            event=data.get("event"),
        )


@dataclass(frozen=True)
class NewKey:
    """A key just created. ``key`` is the secret, shown this once: the server keeps its hash only."""

    id: str
    key: str = field(repr=False)
    tenant: str
    admin: bool = False
    created_at: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "NewKey":
        return cls(
            id=str(data["id"]),
            key=str(data["key"]),
            tenant=str(data.get("tenant", "")),
            admin=bool(data.get("admin", False)),
            created_at=data.get("created_at"),
        )


@dataclass(frozen=True)
class KeyInfo:
    """A key as the admin listing shows it (never the secret)."""

    id: str
    tenant: str
    admin: bool = False
    created_at: Optional[str] = None
    revoked_at: Optional[str] = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "KeyInfo":
        return cls(
            id=str(data["id"]),
            tenant=str(data.get("tenant", "")),
            admin=bool(data.get("admin", False)),
            created_at=data.get("created_at"),
            revoked_at=data.get("revoked_at"),
        )
