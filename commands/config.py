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
    # With several API processes, the background consumers run only in the process holding a
    # PostgreSQL advisory lock; another process takes over when the holder dies.
    leader_election: bool = False

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def to_env(self) -> dict[str, str]:
        """The REKOR_* variables that `from_env` reads back (for worker processes)."""
        pairs = {
            "REKOR_DATABASE_URL": self.database_url,
            "REKOR_NATS_URL": self.nats_url,
            "REKOR_S3_ENDPOINT": self.s3_endpoint,
            "REKOR_S3_ACCESS_KEY": self.s3_access_key,
            "REKOR_S3_SECRET_KEY": self.s3_secret_key,
            "REKOR_S3_BUCKET": self.s3_bucket,
            "REKOR_S3_REGION": self.s3_region,
            "REKOR_EGRESS_ALLOW": self.egress_allow,
            "REKOR_DATA_DIR": self.data_dir,
        }
        return {k: v for k, v in pairs.items() if v}

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
            "data_dir": env.get("REKOR_DATA_DIR", ".rekor"),
            "leader_election": env.get("REKOR_LEADER_ELECTION", "") == "1",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
