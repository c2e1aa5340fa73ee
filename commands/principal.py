"""Who is calling, through which interface, and what they may do."""

from __future__ import annotations

from typing import Any

import msgspec

from events.errors import Forbidden

PERMISSIONS = ("read", "write", "admin", "promote")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller. `workspaces` None means every workspace. A scope entry also
    covers that workspace's previews (`<ws>--<name>`)."""

    key_id: str | None
    name: str
    permissions: frozenset[str]
    workspaces: tuple[str, ...] | None = None
    interface: str = "rest"
    correlation_id: str | None = None
    idempotency_key: str | None = None

    def can_see(self, workspace_id: str) -> bool:
        """True if the key's workspace scope covers this workspace."""
        if self.workspaces is None:
            return True
        root = workspace_id.split("--", 1)[0]
        return workspace_id in self.workspaces or root in self.workspaces

    def has(self, permission: str) -> bool:
        """`admin` implies read and write; `write` implies read. `promote` stands alone."""
        if permission in self.permissions:
            return True
        if permission in ("read", "write") and "admin" in self.permissions:
            return True
        return permission == "read" and "write" in self.permissions

    def require(self, workspace_id: str | None, permission: str) -> None:
        """Raise FORBIDDEN unless the caller has `permission` on `workspace_id`
        (None = a global operation, which needs an unscoped key)."""
        if workspace_id is None:
            if self.workspaces is not None:
                raise Forbidden(
                    f"this API key is scoped to workspaces {list(self.workspaces)}; the operation"
                    " needs a key for all workspaces"
                )
        elif not self.can_see(workspace_id):
            raise Forbidden(
                f"this API key may not access workspace '{workspace_id}'",
                [{"path": "workspace_id", "message": f"allowed: {list(self.workspaces or [])}"}],
            )
        if not self.has(permission):
            raise Forbidden(
                f"this API key lacks the '{permission}' permission",
                [{"path": "permissions", "message": f"key has: {sorted(self.permissions)}"}],
            )

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """Event metadata describing this caller."""
        meta: dict[str, Any] = {"actor": self.name, "interface": self.interface}
        if self.key_id:
            meta["actor_key_id"] = self.key_id
        if self.correlation_id:
            meta["correlation_id"] = self.correlation_id
        if self.idempotency_key:
            meta["idempotency_key"] = self.idempotency_key
        meta.update({k: v for k, v in extra.items() if v is not None})
        return meta


SYSTEM = Principal(key_id=None, name="system", permissions=frozenset(PERMISSIONS))
