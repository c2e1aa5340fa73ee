"""Object storage for attachments: a thin aioboto3 wrapper over any S3 API.

Clients call S3 directly with presigned URLs (Rekor never proxies file bytes), so presigning is
done against the endpoint clients can reach (`public_endpoint`, by default the configured S3
endpoint) while HEAD/LIST/DELETE use the endpoint the server reaches.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from events.errors import Unavailable

log = logging.getLogger("rekor.storage")

_MISSING = {"404", "NoSuchKey", "NotFound"}


class StorageUnavailable(Unavailable):
    """Object storage did not answer (or answered with a server error)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about a stored object."""

    key: str
    size: int
    content_type: str
    etag: str


class ObjectStorage:
    """One bucket on an S3 API. `start()` opens the clients, `stop()` closes them."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.public_endpoint = public_endpoint or endpoint
        self.bucket = bucket
        self._region = region
        self._session = aioboto3.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._presigner: Any = None

    def _config(self) -> AioConfig:
        # Path-style addressing works with every S3 server (and with IP endpoints); SigV4 is
        # what signs the Content-Type (and Content-Length) into an upload URL. Short timeouts
        # and few retries: callers (the cleanup consumer) retry on their own schedule.
        return AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
        )

    async def start(self) -> None:
        """Open the clients (no network I/O yet)."""
        self._client = await self._stack.enter_async_context(
            self._session.client("s3", endpoint_url=self.endpoint, config=self._config())
        )
        if self.public_endpoint == self.endpoint:
            self._presigner = self._client
        else:
            self._presigner = await self._stack.enter_async_context(
                self._session.client("s3", endpoint_url=self.public_endpoint, config=self._config())
            )

    async def stop(self) -> None:
        """Close the clients."""
        await self._stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (an external S3 may not have it yet)."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _MISSING and _code(exc) != "NoSuchBucket":
                raise _unavailable("checking the bucket", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("checking the bucket", exc) from exc
        try:
            await self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _unavailable("creating the bucket", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("creating the bucket", exc) from exc
        log.info("created bucket %s", self.bucket)

    async def presign_put(
        self, key: str, content_type: str, expires_in: int, size: int | None = None
    ) -> str:
        """A URL that accepts one PUT of `key` with exactly this Content-Type (and
        Content-Length, when given): both are signed into the URL."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if size is not None:
            params["ContentLength"] = size
        return str(
            await self._presigner.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_in, HttpMethod="PUT"
            )
        )

    async def presign_get(
        self, key: str, expires_in: int, *, download_name: str | None = None
    ) -> str:
        """A URL that downloads `key` until it expires."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if download_name:
            params["ResponseContentDisposition"] = content_disposition(download_name)
        return str(
            await self._presigner.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in, HttpMethod="GET"
            )
        )

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, type and etag, or None if it does not exist."""
        try:
            got = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise _unavailable("reading an object", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("reading an object", exc) from exc
        return ObjectInfo(
            key=key,
            size=int(got.get("ContentLength", 0)),
            content_type=str(got.get("ContentType") or "application/octet-stream"),
            etag=str(got.get("ETag", "")).strip('"'),
        )

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, in key order."""
        keys: list[str] = []
        token: str | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
                if token:
                    kwargs["ContinuationToken"] = token
                got = await self._client.list_objects_v2(**kwargs)
                keys.extend(item["Key"] for item in got.get("Contents", []))
                if not got.get("IsTruncated"):
                    break
                token = got.get("NextContinuationToken")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("listing objects", exc) from exc
        return sorted(keys)

    async def delete(self, keys: list[str]) -> None:
        """Delete objects; deleting a missing object is fine (idempotent)."""
        try:
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                if len(chunk) == 1:
                    await self._client.delete_object(Bucket=self.bucket, Key=chunk[0])
                    continue
                got = await self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
                failed = [e for e in got.get("Errors", []) if e.get("Code") not in _MISSING]
                if failed:
                    raise StorageUnavailable(
                        f"object storage refused to delete {len(failed)} object(s):"
                        f" {failed[0].get('Code')} {failed[0].get('Message', '')}"
                    )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("deleting objects", exc) from exc

    async def health(self) -> str:
        """`ok` when the bucket answers."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            return f"error: {type(exc).__name__}"
        return "ok"


def content_disposition(filename: str) -> str:
    """`attachment` with the file's base name, RFC 6266/5987 encoded (any Unicode survives)."""
    from urllib.parse import quote

    base = filename.rsplit("/", 1)[-1]
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in base)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(doing: str, exc: Exception) -> StorageUnavailable:
    detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    return StorageUnavailable(
        f"object storage is not available ({doing} failed: {detail}); retry in a moment",
        [{"path": "storage", "message": detail}],
    )
