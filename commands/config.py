"""Runtime settings: where the parts are and the limits. Built once by the entry point."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service needs to run. Parts left None are not started (e.g. no NATS)."""

    database_url: str
    nats_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "rekor"
    s3_region: str = "us-east-1"
    data_dir: str = ".rekor"
    max_body_bytes: int = 2 * 1024 * 1024
    egress_allow: str = ""
    # Background consumers (event relay, trigger delivery, hook mapping) run in this process.
    run_workers: bool = True

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from REKOR_* environment variables, then explicit overrides."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("REKOR_DATABASE_URL", ""),
            "nats_url": env.get("REKOR_NATS_URL") or None,
            "s3_endpoint": env.get("REKOR_S3_ENDPOINT") or None,
            "s3_access_key": env.get("REKOR_S3_ACCESS_KEY") or None,
            "s3_secret_key": env.get("REKOR_S3_SECRET_KEY") or None,
            "s3_bucket": env.get("REKOR_S3_BUCKET", "rekor"),
            "s3_region": env.get("REKOR_S3_REGION", "us-east-1"),
            "egress_allow": env.get("REKOR_EGRESS_ALLOW", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
