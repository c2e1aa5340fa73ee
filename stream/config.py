"""Tunables of the event-stream components, from REKOR_* environment variables."""

from __future__ import annotations

import os

import msgspec


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


class StreamConfig(msgspec.Struct, kw_only=True):
    """Retry policy, limits and names. Defaults suit production; tests shorten the backoff."""

    egress_allow: str = ""
    stream_name: str = "REKOR"
    duplicate_window_s: float = 120.0
    # JetStream replicas of the stream: 3 on a 3-node cluster (R3), 1 on a single server.
    stream_replicas: int = 1
    relay_batch: int = 1000
    relay_poll_s: float = 1.0
    trigger_consumer: str = "rekor_triggers"
    trigger_timeout_s: float = 15.0
    trigger_backoff_base_s: float = 2.0
    trigger_backoff_max_s: float = 3600.0
    trigger_max_attempts: int = 8
    trigger_concurrency: int = 64
    hook_max_bytes: int = 256 * 1024

    @classmethod
    def from_env(cls, egress_allow: str | None = None) -> StreamConfig:
        """Read REKOR_TRIGGER_BACKOFF_BASE (seconds), REKOR_TRIGGER_BACKOFF_MAX,
        REKOR_TRIGGER_MAX_ATTEMPTS, REKOR_TRIGGER_TIMEOUT, REKOR_HOOK_MAX_BYTES,
        REKOR_RELAY_POLL, REKOR_STREAM_NAME, REKOR_STREAM_REPLICAS and REKOR_EGRESS_ALLOW."""
        return cls(
            egress_allow=(
                egress_allow
                if egress_allow is not None
                else os.environ.get("REKOR_EGRESS_ALLOW", "")
            ),
            stream_name=os.environ.get("REKOR_STREAM_NAME", "REKOR"),
            stream_replicas=_int("REKOR_STREAM_REPLICAS", 1),
            relay_poll_s=_float("REKOR_RELAY_POLL", 1.0),
            trigger_timeout_s=_float("REKOR_TRIGGER_TIMEOUT", 15.0),
            trigger_backoff_base_s=_float("REKOR_TRIGGER_BACKOFF_BASE", 2.0),
            trigger_backoff_max_s=_float("REKOR_TRIGGER_BACKOFF_MAX", 3600.0),
            trigger_max_attempts=_int("REKOR_TRIGGER_MAX_ATTEMPTS", 8),
            hook_max_bytes=_int("REKOR_HOOK_MAX_BYTES", 256 * 1024),
        )
