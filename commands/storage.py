"""Object storage for attachments: a thin aioboto3 wrapper over any S3 API.

Clients call S3 directly with presigned URLs (Rekor never proxies file bytes), so presigning is
done against the endpoint clients can reach (`public_endpoint`, by default the configured S3
endpoint) while HEAD/LIST/DELETE use the endpoint the server reaches.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

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
        self._signer = PresignerV4(self.public_endpoint, access_key or "", secret_key or "", region)

    def _config(self) -> AioConfig:
        # Path-style addressing works with every S3 server (and with IP endpoints). Short
        # timeouts and few retries: callers (the cleanup consumer) retry on their own schedule.
        return AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
        )

    async def start(self) -> None:
        """Open the client (no network I/O yet)."""
        self._client = await self._stack.enter_async_context(
            self._session.client("s3", endpoint_url=self.endpoint, config=self._config())
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

    def presign_put(
        self, key: str, content_type: str, expires_in: int, size: int | None = None
    ) -> str:
        """A URL that accepts one PUT of `key` with exactly this Content-Type (and
        Content-Length, when given): both are signed into the URL."""
        headers = {"content-type": content_type}
        if size is not None:
            headers["content-length"] = str(size)
        return self._signer.presign("PUT", f"{self.bucket}/{key}", expires_in, headers=headers)

    def presign_get(self, key: str, expires_in: int, *, download_name: str | None = None) -> str:
        """A URL that downloads `key` until it expires."""
        query = {}
        if download_name:
            query["response-content-disposition"] = content_disposition(download_name)
        return self._signer.presign("GET", f"{self.bucket}/{key}", expires_in, query=query)

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


class PresignerV4:
    """AWS Signature Version 4 query-string presigning for path-style S3 URLs.

    Presigning is pure computation; done here it costs a few HMACs, where botocore spends most
    of a presign resolving its endpoint rule set. Headers passed in are signed, so the request
    must carry exactly those values (that is how Content-Type is enforced on uploads).
    """

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str) -> None:
        parts = urlsplit(endpoint)
        self._base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._path = parts.path.rstrip("/")
        self._host = parts.netloc
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, datestamp: str) -> bytes:
        key = self._keys.get(datestamp)
        if key is None:
            key = ("AWS4" + self._secret_key).encode()
            for part in (datestamp, self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {datestamp: key}
        return key

    def presign(
        self,
        method: str,
        object_path: str,
        expires_in: int,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """The presigned URL of `method` on `object_path` (`<bucket>/<key>`)."""
        now = now or datetime.now(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        datestamp = amz_date[:8]
        scope = f"{datestamp}/{self._region}/s3/aws4_request"
        signed = {"host": self._host, **{k.lower(): v.strip() for k, v in (headers or {}).items()}}
        signed_names = ";".join(sorted(signed))
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self._access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_in),
            "X-Amz-SignedHeaders": signed_names,
            **(query or {}),
        }
        canonical_query = "&".join(
            f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items(), key=lambda kv: _enc(kv[0]))
        )
        uri = self._path + "/" + quote(object_path, safe="/~")
        canonical_request = "\n".join(
            [
                method,
                uri,
                canonical_query,
                "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
                signed_names,
                "UNSIGNED-PAYLOAD",
            ]
        )
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        signature = hmac.new(
            self._signing_key(datestamp), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return f"{self._base}/{quote(object_path, safe='/~')}?{canonical_query}" + (
            f"&X-Amz-Signature={signature}"
        )


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")


def content_disposition(filename: str) -> str:
    """`attachment` with the file's base name, RFC 6266/5987 encoded (any Unicode survives)."""
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
