"""Attachments through REST against the real stack: presigned PUTs of real bytes to the
embedded S3, versions, folders, downloads, deletes removed from storage by the cleanup consumer
(also across a storage outage), and every bad input refused with nothing written."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import msgspec
import pytest
from botocore.config import Config

from commands.config import Settings
from deploy.stack import EmbeddedStack, StackEndpoints
from tests.conftest import ROOT, Server

COLLECTION = "runbooks"


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(endpoints: StackEndpoints) -> Any:
    """An independent S3 client to look at the bucket directly (not Rekor's code)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoints.s3_endpoint,
        aws_access_key_id=endpoints.s3_access_key,
        aws_secret_access_key=endpoints.s3_secret_key,
        region_name=endpoints.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


def stored_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    got = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in got.get("Contents", []))


async def eventually(check: Any, what: str, within: float = 30.0) -> Any:
    """Poll `check()` until it returns something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # e.g. S3 still restarting
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def new_record(api: httpx.AsyncClient, ws: str) -> str:
    r = await api.put(f"/v1/{ws}/collections/{COLLECTION}", json={"json_schema": {}})
    assert r.status_code in (200, 201), r.text
    r = await api.post(f"/v1/{ws}/collections/{COLLECTION}/records", json={"data": {"t": 1}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def base(ws: str, record_id: str, collection: str = COLLECTION) -> str:
    return f"/v1/{ws}/collections/{collection}/records/{record_id}/attachments"


async def put_bytes(upload: dict[str, Any], body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as raw:
        return await raw.request(
            upload["method"], upload["upload_url"], content=body, headers=upload["headers"]
        )


async def upload(
    api: httpx.AsyncClient,
    ws: str,
    record_id: str,
    filename: str,
    body: bytes,
    content_type: str = "text/markdown",
) -> dict[str, Any]:
    """The whole flow: presign, PUT the bytes to S3, complete."""
    r = await api.post(
        base(ws, record_id), json={"filename": filename, "content_type": content_type}
    )
    assert r.status_code == 200, r.text
    put = await put_bytes(r.json(), body)
    assert put.status_code == 200, put.text
    r = await api.post(base(ws, record_id) + "/complete", json={"filename": filename})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def download(api: httpx.AsyncClient, ws: str, record_id: str, filename: str) -> bytes:
    r = await api.get(base(ws, record_id) + "/url", params={"filename": filename})
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(timeout=30) as raw:
        got = await raw.get(r.json()["url"])
    assert got.status_code == 200, got.text
    return got.content


async def head_seq(api: httpx.AsyncClient, ws: str) -> int:
    return int((await api.get(f"/v1/workspaces/{ws}")).json()["head_seq"])


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


# -- the story --------------------------------------------------------------------------------


async def test_upload_version_list_download_delete(
    api: httpx.AsyncClient, ws: str, s3: Any, endpoints: StackEndpoints
) -> None:
    rid = await new_record(api, ws)
    r = await api.post(
        base(ws, rid), json={"filename": "docs/runbook.md", "content_type": "text/markdown"}
    )
    assert r.status_code == 200, r.text
    grant = r.json()
    assert grant["method"] == "PUT" and grant["filename"] == "docs/runbook.md"
    assert grant["headers"] == {"Content-Type": "text/markdown"}
    assert grant["upload_url"].startswith(endpoints.s3_endpoint + "/")
    assert grant["expires_at"].endswith("Z")
    # The content type is signed: a PUT with another type is refused by S3 itself.
    wrong = await put_bytes({**grant, "headers": {"Content-Type": "text/plain"}}, b"x")
    assert wrong.status_code == 403, wrong.text
    assert (await put_bytes(grant, b"# Runbook v1\n")).status_code == 200
    r = await api.post(base(ws, rid) + "/complete", json={"filename": "docs/runbook.md"})
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert v1["filename"] == "docs/runbook.md" and v1["size"] == len(b"# Runbook v1\n")
    assert v1["content_type"] == "text/markdown" and v1["version"] == 1
    assert v1["etag"] == hashlib.md5(b"# Runbook v1\n").hexdigest()
    assert v1["seq"] == await head_seq(api, ws)

    # The key is derived from workspace, collection, record and a hash of the filename.
    keys = stored_keys(s3, endpoints.s3_bucket, f"ws/{ws}/{COLLECTION}/{rid}/")
    assert len(keys) == 1 and "runbook.md" not in keys[0] and "docs" not in keys[0]

    # A second upload of the same filename is version 2; both stay downloadable.
    v2 = await upload(api, ws, rid, "docs/runbook.md", b"# Runbook v2, longer\n")
    assert v2["version"] == 2 and v2["seq"] > v1["seq"]
    assert await download(api, ws, rid, "docs/runbook.md") == b"# Runbook v2, longer\n"
    r = await api.get(base(ws, rid) + "/url", params={"filename": "docs/runbook.md", "version": 1})
    async with httpx.AsyncClient() as raw:
        assert (await raw.get(r.json()["url"])).content == b"# Runbook v1\n"

    await upload(api, ws, rid, "docs/screenshots/error.png", b"\x89PNG....", "image/png")
    await upload(api, ws, rid, "notes.txt", b"hello", "text/plain; charset=utf-8")

    # Listing: all, by folder prefix, paginated.
    r = await api.get(base(ws, rid))
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [a["filename"] for a in listed["data"]] == [
        "docs/runbook.md",
        "docs/screenshots/error.png",
        "notes.txt",
    ]
    runbook = listed["data"][0]
    assert runbook["version"] == 2 and runbook["size"] == len(b"# Runbook v2, longer\n")
    assert runbook["content_type"] == "text/markdown" and runbook["updated_at"].endswith("Z")
    assert listed["meta"] == {"limit": 100, "next_cursor": None}
    docs = (await api.get(base(ws, rid), params={"prefix": "docs/"})).json()["data"]
    assert [a["filename"] for a in docs] == ["docs/runbook.md", "docs/screenshots/error.png"]
    shots = (await api.get(base(ws, rid), params={"prefix": "docs/s"})).json()["data"]
    assert [a["filename"] for a in shots] == ["docs/screenshots/error.png"]
    page1 = (await api.get(base(ws, rid), params={"limit": 2})).json()
    assert len(page1["data"]) == 2 and page1["meta"]["next_cursor"]
    page2 = (
        await api.get(base(ws, rid), params={"limit": 2, "cursor": page1["meta"]["next_cursor"]})
    ).json()
    assert [a["filename"] for a in page2["data"]] == ["notes.txt"]
    assert page2["meta"]["next_cursor"] is None

    # History shows each version, with the actor.
    r = await api.get(base(ws, rid) + "/history", params={"filename": "docs/runbook.md"})
    assert r.status_code == 200, r.text
    history = r.json()["data"]
    assert [(h["version"], h["event"], h["size"]) for h in history] == [
        (1, "attachment.added", v1["size"]),
        (2, "attachment.added", v2["size"]),
    ]
    assert all(h["actor"] == "test admin" for h in history)

    # The audit log has the event with the metadata.
    r = await api.get(f"/v1/{ws}/events", params={"after_seq": v2["seq"] - 1, "limit": 1})
    if r.status_code == 200:  # the audit-log endpoint belongs to another part of Rekor
        event = r.json()["data"][0]
        assert event["type"] == "attachment.added"
        assert event["data"]["filename"] == "docs/runbook.md" and event["metadata"]["actor"]

    # Delete: gone from listings at once, from S3 once the cleanup consumer ran (every version).
    prefix = f"ws/{ws}/{COLLECTION}/{rid}/"
    assert len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 4
    r = await api.delete(base(ws, rid), params={"filename": "docs/runbook.md"})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["version"] == 3
    names = [a["filename"] for a in (await api.get(base(ws, rid))).json()["data"]]
    assert names == ["docs/screenshots/error.png", "notes.txt"]
    await eventually(
        lambda: len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 2, "objects deleted"
    )
    assert_error(
        await api.get(base(ws, rid) + "/url", params={"filename": "docs/runbook.md"}),
        404,
        "NOT_FOUND",
    )
    assert_error(
        await api.delete(base(ws, rid), params={"filename": "docs/runbook.md"}), 404, "NOT_FOUND"
    )
    history = (
        await api.get(base(ws, rid) + "/history", params={"filename": "docs/runbook.md"})
    ).json()["data"]
    assert [h["event"] for h in history][-1] == "attachment.deleted"

    # Uploading the filename again starts after the delete: version 4.
    again = await upload(api, ws, rid, "docs/runbook.md", b"v4")
    assert again["version"] == 4


async def test_record_delete_removes_its_attachments(
    api: httpx.AsyncClient, ws: str, s3: Any, endpoints: StackEndpoints
) -> None:
    rid = await new_record(api, ws)
    await upload(api, ws, rid, "a.txt", b"a", "text/plain")
    await upload(api, ws, rid, "b/c.txt", b"c", "text/plain")
    # An upload that was never completed goes too.
    r = await api.post(base(ws, rid), json={"filename": "orphan.bin", "content_type": "a/b"})
    assert (await put_bytes(r.json(), b"orphan")).status_code == 200
    prefix = f"ws/{ws}/{COLLECTION}/{rid}/"
    assert len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 3

    r = await api.delete(f"/v1/{ws}/collections/{COLLECTION}/records/{rid}")
    assert r.status_code == 200, r.text
    assert_error(await api.get(base(ws, rid)), 404, "NOT_FOUND")
    await eventually(lambda: stored_keys(s3, endpoints.s3_bucket, prefix) == [], "record purge")
    # Each attachment's end is in the log (as its own event).
    r = await api.get(base(ws, rid) + "/history", params={"filename": "b/c.txt"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][-1]["event"] == "attachment.deleted"
    assert r.json()["data"][-1]["reason"] == "record_deleted"


async def test_workspace_delete_removes_its_objects(
    api: httpx.AsyncClient, ws: str, s3: Any, endpoints: StackEndpoints
) -> None:
    rid = await new_record(api, ws)
    await upload(api, ws, rid, "a.txt", b"a", "text/plain")
    assert len(stored_keys(s3, endpoints.s3_bucket, f"ws/{ws}/")) == 1
    assert (await api.delete(f"/v1/workspaces/{ws}")).status_code == 200
    await eventually(lambda: stored_keys(s3, endpoints.s3_bucket, f"ws/{ws}/") == [], "purge")


async def test_reupload_supersedes_uncompleted_upload(
    api: httpx.AsyncClient, ws: str, s3: Any, endpoints: StackEndpoints
) -> None:
    rid = await new_record(api, ws)
    grants = []
    for _ in range(2):
        r = await api.post(base(ws, rid), json={"filename": "f.txt", "content_type": "text/plain"})
        grants.append(r.json())
    assert (await put_bytes(grants[0], b"first")).status_code == 200
    assert (await put_bytes(grants[1], b"second")).status_code == 200
    done = (await api.post(base(ws, rid) + "/complete", json={"filename": "f.txt"})).json()
    assert done["version"] == 1 and done["size"] == len(b"second"), "latest signed upload wins"
    # The superseded upload can never be completed: the cleanup removes it.
    prefix = f"ws/{ws}/{COLLECTION}/{rid}/"
    await eventually(lambda: len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 1, "discard")
    # Nothing new uploaded: completing again is refused and writes nothing.
    seq = await head_seq(api, ws)
    err = assert_error(
        await api.post(base(ws, rid) + "/complete", json={"filename": "f.txt"}), 404, "NOT_FOUND"
    )
    assert "upload" in err["message"]
    assert await head_seq(api, ws) == seq


async def test_concurrent_completes_record_one_version(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    r = await api.post(base(ws, rid), json={"filename": "race.txt", "content_type": "text/plain"})
    assert (await put_bytes(r.json(), b"once")).status_code == 200
    seq = await head_seq(api, ws)
    results = await asyncio.gather(
        *(api.post(base(ws, rid) + "/complete", json={"filename": "race.txt"}) for _ in range(4))
    )
    assert sorted(r.status_code for r in results) == [201, 404, 404, 404], [r.text for r in results]
    assert await head_seq(api, ws) == seq + 1
    history = await api.get(base(ws, rid) + "/history", params={"filename": "race.txt"})
    assert [h["version"] for h in history.json()["data"]] == [1]


# -- bad input: clear errors, nothing written -------------------------------------------------

BAD_FILENAMES = [
    pytest.param("../etc/passwd", id="dotdot-leading"),
    pytest.param("docs/../../secret", id="dotdot-inner"),
    pytest.param("docs/..", id="dotdot-trailing"),
    pytest.param("/etc/passwd", id="leading-slash"),
    pytest.param("docs\\runbook.md", id="backslash"),
    pytest.param("docs/run\nbook.md", id="newline"),
    pytest.param("docs/run\x00book.md", id="nul"),
    pytest.param("tab\tname", id="tab"),
    pytest.param("docs/\x7fdel", id="del"),
    pytest.param("invoice\u202etxt.exe", id="bidi-override"),
    pytest.param("docs//runbook.md", id="empty-segment"),
    pytest.param("docs/", id="trailing-slash"),
    pytest.param("./runbook.md", id="dot-segment"),
    pytest.param("", id="empty"),
    pytest.param("a" * 1025, id="1025-bytes"),
    pytest.param("é" * 513, id="1026-utf8-bytes"),
]


@pytest.mark.parametrize("filename", BAD_FILENAMES)
async def test_bad_filenames_are_refused(
    api: httpx.AsyncClient, ws: str, filename: str, s3: Any, endpoints: StackEndpoints
) -> None:
    rid = await new_record(api, ws)
    seq = await head_seq(api, ws)
    body = {"filename": filename, "content_type": "text/plain"}
    err = assert_error(await api.post(base(ws, rid), json=body), 422, "VALIDATION_ERROR")
    assert err["details"][0]["path"] == "$.filename"
    for r in (
        await api.post(base(ws, rid) + "/complete", json={"filename": filename}),
        await api.get(base(ws, rid) + "/url", params={"filename": filename}),
        await api.delete(base(ws, rid), params={"filename": filename}),
    ):
        assert_error(r, 422, "VALIDATION_ERROR")
    assert await head_seq(api, ws) == seq
    assert stored_keys(s3, endpoints.s3_bucket, f"ws/{ws}/") == []


async def test_filename_limits_and_odd_but_valid_names(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    for name in [
        "a" * 1024,
        "é" * 512,
        "docs/100% _done_.md",
        "..hidden/x..y",
        "日本/ファイル.txt",
    ]:
        done = await upload(api, ws, rid, name, b"ok", "text/plain")
        assert done["filename"] == name
        assert await download(api, ws, rid, name) == b"ok"


@pytest.mark.parametrize(
    "content_type",
    ["text", "text/", "/plain", "text/plain/extra", "text plain", "", "tëxt/plain", 42, None],
)
async def test_bad_content_types_are_refused(
    api: httpx.AsyncClient, ws: str, content_type: Any
) -> None:
    rid = await new_record(api, ws)
    seq = await head_seq(api, ws)
    r = await api.post(base(ws, rid), json={"filename": "x.txt", "content_type": content_type})
    # Wrong JSON types are refused by the request schema (400), bad strings by the service.
    if isinstance(content_type, str):
        err = assert_error(r, 422, "VALIDATION_ERROR")
        assert err["details"][0]["path"] == "$.content_type"
    else:
        assert_error(r, 400, "VALIDATION_ERROR")
    assert await head_seq(api, ws) == seq


async def test_other_bad_requests(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    seq = await head_seq(api, ws)
    ok = {"filename": "x.txt", "content_type": "text/plain"}
    for extra, path in [
        ({"expires_in": 0}, "$.expires_in"),
        ({"expires_in": 3601}, "$.expires_in"),
        ({"size": -1}, "$.size"),
    ]:
        err = assert_error(
            await api.post(base(ws, rid), json={**ok, **extra}), 422, "VALIDATION_ERROR"
        )
        assert err["details"][0]["path"] == path
    assert_error(await api.post(base(ws, rid), json={**ok, "nope": 1}), 400, "VALIDATION_ERROR")
    assert_error(await api.get(base(ws, rid), params={"limit": 0}), 422, "VALIDATION_ERROR")
    assert_error(await api.get(base(ws, rid), params={"cursor": "zz"}), 422, "VALIDATION_ERROR")
    assert_error(
        await api.get(base(ws, rid) + "/url", params={"filename": "x.txt", "expires_in": 7200}),
        422,
        "VALIDATION_ERROR",
    )
    assert await head_seq(api, ws) == seq


async def test_complete_without_upload(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    seq = await head_seq(api, ws)
    r = await api.post(base(ws, rid), json={"filename": "never.txt", "content_type": "text/plain"})
    assert r.status_code == 200  # a URL was signed, but nothing was PUT
    err = assert_error(
        await api.post(base(ws, rid) + "/complete", json={"filename": "never.txt"}),
        404,
        "NOT_FOUND",
    )
    assert "PUT" in err["message"]
    assert await head_seq(api, ws) == seq
    assert (await api.get(base(ws, rid))).json()["data"] == []


async def test_missing_record_workspace_or_attachment(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    missing = "0196f3c2-0000-7000-8000-000000000000"
    body = {"filename": "x.txt", "content_type": "text/plain"}
    for path in (base(ws, missing), base(ws, rid, "other"), base("ws_nope_nope", rid)):
        assert_error(await api.post(path, json=body), 404, "NOT_FOUND")
        assert_error(await api.post(path + "/complete", json={"filename": "x"}), 404, "NOT_FOUND")
        assert_error(await api.get(path), 404, "NOT_FOUND")
        assert_error(await api.get(path + "/url", params={"filename": "x"}), 404, "NOT_FOUND")
        assert_error(await api.delete(path, params={"filename": "x"}), 404, "NOT_FOUND")
    assert_error(await api.post(base(ws, "not-a-uuid"), json=body), 422, "VALIDATION_ERROR")
    err = assert_error(
        await api.get(base(ws, rid) + "/url", params={"filename": "x.txt"}), 404, "NOT_FOUND"
    )
    assert "x.txt" in err["message"]


async def test_expired_urls_are_refused_by_s3(api: httpx.AsyncClient, ws: str) -> None:
    rid = await new_record(api, ws)
    await upload(api, ws, rid, "d.txt", b"data", "text/plain")
    r = await api.post(
        base(ws, rid), json={"filename": "late.txt", "content_type": "text/plain", "expires_in": 1}
    )
    grant = r.json()
    r = await api.get(base(ws, rid) + "/url", params={"filename": "d.txt", "expires_in": 1})
    get_url = r.json()["url"]

    async def refused() -> bool:
        async with httpx.AsyncClient() as raw:
            put = await raw.put(grant["upload_url"], content=b"late", headers=grant["headers"])
            got = await raw.get(get_url)
        return put.status_code == 403 and got.status_code == 403

    deadline = time.monotonic() + 15
    while not await refused():
        assert time.monotonic() < deadline, "S3 still accepts expired URLs"
        await asyncio.sleep(0.25)
    async with httpx.AsyncClient() as raw:
        put = await raw.put(grant["upload_url"], content=b"late", headers=grant["headers"])
    assert "expired" in put.text.lower(), put.text


async def test_storage_outage_never_loses_a_delete(
    api: httpx.AsyncClient, ws: str, stack: EmbeddedStack, s3: Any, endpoints: StackEndpoints
) -> None:
    if os.environ.get("REKOR_S3_ENDPOINT"):
        pytest.skip("needs the embedded S3 (it is stopped and restarted)")
    rid = await new_record(api, ws)
    await upload(api, ws, rid, "keep.txt", b"keep", "text/plain")
    await upload(api, ws, rid, "gone.txt", b"gone", "text/plain")
    prefix = f"ws/{ws}/{COLLECTION}/{rid}/"
    assert len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 2
    stack.stop_s3()
    try:
        r = await api.delete(base(ws, rid), params={"filename": "gone.txt"})
        assert r.status_code == 200, r.text
        names = [a["filename"] for a in (await api.get(base(ws, rid))).json()["data"]]
        assert names == ["keep.txt"]
        # Presigning works offline, but completing needs storage: a clear 503.
        r = await api.post(base(ws, rid) + "/complete", json={"filename": "keep.txt"})
        assert_error(r, 503, "UNAVAILABLE")
        health = (await api.get("/health")).json()
        assert health["checks"]["attachments"].startswith("error"), health
    finally:
        stack.start_s3()
    await eventually(
        lambda: len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 1,
        "the delete retried after the outage",
        within=60,
    )
    # The other attachment survived (a freshly restarted SeaweedFS may answer 500 for a moment).
    r = await api.get(base(ws, rid) + "/url", params={"filename": "keep.txt"})
    url = r.json()["url"]
    await eventually(lambda: httpx.get(url).content == b"keep", "keep.txt readable again")


# -- size limit: a server with a tiny limit ---------------------------------------------------


@pytest.fixture
async def small_api(
    settings: Settings, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API of an in-process Rekor (real database and S3) whose attachment limit is
    1,000 bytes: the limit is read when the app starts."""
    from litestar.testing import AsyncTestClient

    from api.app import create_app

    monkeypatch.setenv("REKOR_MAX_ATTACHMENT_BYTES", "1000")
    # No background workers: the session server's consumers already serve this database.
    lean = msgspec.structs.replace(settings, run_workers=False)
    async with AsyncTestClient(app=create_app(lean), timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield client


async def test_oversize_upload_is_deleted_and_refused(
    small_api: httpx.AsyncClient, ws: str, s3: Any, endpoints: StackEndpoints
) -> None:
    api = small_api
    rid = await new_record(api, ws)
    r = await api.post(
        base(ws, rid), json={"filename": "big.bin", "content_type": "a/b", "size": 1001}
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert (await upload(api, ws, rid, "ok.bin", b"x" * 1000, "application/octet-stream"))[
        "size"
    ] == 1000
    seq = await head_seq(api, ws)
    r = await api.post(base(ws, rid), json={"filename": "big.bin", "content_type": "a/b"})
    assert (await put_bytes(r.json(), b"x" * 1001)).status_code == 200
    prefix = f"ws/{ws}/{COLLECTION}/{rid}/"
    assert len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 2
    err = assert_error(
        await api.post(base(ws, rid) + "/complete", json={"filename": "big.bin"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert "1000" in err["message"]
    assert len(stored_keys(s3, endpoints.s3_bucket, prefix)) == 1, "oversize object deleted"
    assert await head_seq(api, ws) == seq
    names = [a["filename"] for a in (await api.get(base(ws, rid))).json()["data"]]
    assert names == ["ok.bin"]


# -- the CLI ----------------------------------------------------------------------------------


def rekor(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    module: str = "cli.main",
    code: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`rekor ARGS` through the console entry point (cli.main: plain uploads take its fast
    path, every other command line the full parser), through `module`, or through the
    Python `code` given."""
    runner = ["-c", code] if code is not None else ["-m", module]
    return subprocess.run(
        [sys.executable, *runner, *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_upload_url_list_delete(
    api: httpx.AsyncClient, ws: str, server: Server, admin_key: str, tmp_path: Path
) -> None:
    rid = await new_record(api, ws)
    env = {
        **os.environ,
        "REKOR_URL": server.url,
        "REKOR_API_KEY": admin_key,
        "REKOR_WORKSPACE": ws,
        "REKOR_CONFIG": str(tmp_path / "none.json"),
    }
    env.pop("REKOR_MAX_ATTACHMENT_BYTES", None)
    runbook = tmp_path / "runbook.md"
    runbook.write_bytes(b"# Runbook\n" + b"step\n" * 300_000)  # ~1.5 MB: streamed, progress
    # The seed's three commands, verbatim (the file read from --file).
    p = rekor(
        [
            "attachments",
            "upload",
            COLLECTION,
            rid,
            "--filename",
            "docs/runbook.md",
            "--content-type",
            "text/markdown",
            "--file",
            str(runbook),
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout)
    assert done["version"] == 1 and done["size"] == runbook.stat().st_size
    p = rekor(
        ["attachments", "url", COLLECTION, rid, "--filename", "docs/runbook.md"], env, tmp_path
    )
    assert p.returncode == 0, p.stderr
    url = json.loads(p.stdout)["url"]
    async with httpx.AsyncClient() as raw:
        assert (await raw.get(url)).content == runbook.read_bytes()
    p = rekor(["attachments", "list", COLLECTION, rid, "--prefix", "docs/"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    assert [a["filename"] for a in listed["data"]] == ["docs/runbook.md"]

    # Without --file the name is the file to read; a bad name exits 1 with the API's error.
    (tmp_path / "notes.txt").write_text("n")
    p = rekor(
        [
            "attachments",
            "upload",
            COLLECTION,
            rid,
            "--filename",
            "notes.txt",
            "--content-type",
            "text/plain",
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    p = rekor(
        [
            "attachments",
            "upload",
            COLLECTION,
            rid,
            "--filename",
            "../x",
            "--content-type",
            "text/plain",
            "--file",
            str(runbook),
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 1 and "VALIDATION_ERROR" in p.stderr + p.stdout
    p = rekor(["attachments", "delete", COLLECTION, rid, "--filename", "notes.txt"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    names = [a["filename"] for a in (await api.get(base(ws, rid))).json()["data"]]
    assert names == ["docs/runbook.md"]


async def test_upload_fast_path_matches_the_full_cli(
    api: httpx.AsyncClient, ws: str, server: Server, admin_key: str, tmp_path: Path
) -> None:
    """A plain `rekor attachments upload` runs without loading the command-line parser, and
    does exactly what the full CLI does: same output, same errors, same exit codes."""
    rid = await new_record(api, ws)
    env = {
        **os.environ,
        "REKOR_URL": server.url,
        "REKOR_API_KEY": admin_key,
        "REKOR_CONFIG": str(tmp_path / "none.json"),
    }
    env.pop("REKOR_MAX_ATTACHMENT_BYTES", None)
    env.pop("REKOR_WORKSPACE", None)
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"x" * 10_000)
    args = ["attachments", "upload", COLLECTION, rid, f"--filename=d/{doc.name}", "-w", ws]
    args += ["--file", str(doc), "--quiet", "-o", "json"]
    probe = (
        "import sys; from cli.main import parse_upload, run_upload;"
        " code = run_upload(parse_upload(sys.argv[1:]));"
        " sys.stderr.write('cyclopts loaded: %s' % ('cyclopts' in sys.modules)); sys.exit(code)"
    )
    fast = rekor(args, env, tmp_path, code=probe)
    assert fast.returncode == 0, fast.stderr
    assert "cyclopts loaded: False" in fast.stderr
    full = rekor(args, env, tmp_path, module="cli.app")
    assert full.returncode == 0, full.stderr
    one, two = json.loads(fast.stdout), json.loads(full.stdout)
    assert (one["version"], two["version"]) == (1, 2)
    same = ("filename", "size", "content_type", "etag")
    assert {k: one[k] for k in same} == {k: two[k] for k in same}
    assert (one["filename"], one["size"], one["content_type"]) == (
        "d/doc.txt",
        10_000,
        "text/plain",
    )

    # The same mistakes give the same error and exit code either way.
    for bad in (
        ["--filename", "../x", "--file", str(doc)],  # refused by the API
        ["--filename", "y.txt", "--file", str(tmp_path / "missing")],  # not readable
        ["--filename", "y.txt", "--file", str(doc), "--url", "http://127.0.0.1:9"],
    ):
        argv = ["attachments", "upload", COLLECTION, rid, "-w", ws, *bad]
        if "--url" in bad:  # the global flag goes first
            argv = [*bad[-2:], *argv[:-2]]
        a, b = rekor(argv, env, tmp_path), rekor(argv, env, tmp_path, module="cli.app")
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), argv
        assert a.returncode in (1, 5) and '"error"' in a.stderr


def test_upload_fast_path_parses_only_what_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from cli.attachments import upload
    from cli.main import GLOBAL_OPTIONS, UPLOAD_FLAGS, UPLOAD_OPTIONS, parse_upload

    # It knows every option of the command, no more.
    names = set(inspect.signature(upload).parameters) - {"collection", "record"}
    assert set(UPLOAD_OPTIONS.values()) | set(UPLOAD_FLAGS.values()) == names
    assert set(GLOBAL_OPTIONS.values()) == {"url", "api_key"}

    monkeypatch.delenv("REKOR_WORKSPACE", raising=False)
    base = ["attachments", "upload", "docs", "INC-1", "--filename", "a.md", "-w", "ws"]
    assert parse_upload(base) == {
        "collection": "docs",
        "record": "INC-1",
        "filename": "a.md",
        "workspace": "ws",
    }
    got = parse_upload(["--url=http://h:1", *base, "--quiet", "-o", "table", "--file=./b"])
    assert got is not None
    assert (got["url"], got["quiet"], got["output"], got["file"]) == (
        "http://h:1",
        True,
        "table",
        "./b",
    )
    # Anything else goes to the full parser (which explains the mistake or prints help).
    for argv in (
        [*base, "--help"],
        [*base, "--no-quiet"],
        [*base, "-o", "yaml"],
        [*base, "--filename", "again.md"],
        [*base, "extra"],
        [*base[:4], "-w", "ws"],  # no --filename
        [*base[:6]],  # no workspace
        [*base, "--content-type"],  # option without its value
        [*base, "--source", "-x"],
        [*base, "--", "x"],
        ["attachments", "list", "docs", "INC-1", "-w", "ws"],
        ["--verbose", *base],
        [],
    ):
        assert parse_upload(argv) is None, argv
    monkeypatch.setenv("REKOR_WORKSPACE", "ws_env")
    assert parse_upload([*base[:6]])["workspace"] == "ws_env"  # type: ignore[index]


async def test_uploads_nobody_completes_are_removed_after_retention(
    api: httpx.AsyncClient,
    ws: str,
    s3: Any,
    endpoints: StackEndpoints,
    service: Any,
    settings: Settings,
) -> None:
    """An upload URL is remembered until its upload is completed; one expired for longer than
    the retention period is deleted from storage by the cleanup, one expired for more than
    half of it can no longer be completed, and a completed attachment is never touched."""
    from commands.attachment_cleanup import StorageCleanup, start_attachments
    from commands.attachments import upload_retention_seconds

    rid = await new_record(api, ws)
    done = await upload(api, ws, rid, "kept.md", b"kept")
    r = await api.post(base(ws, rid), json={"filename": "lost.md", "content_type": "text/plain"})
    assert (await put_bytes(r.json(), b"lost")).status_code == 200
    r = await api.post(base(ws, rid), json={"filename": "late.md", "content_type": "text/plain"})
    assert (await put_bytes(r.json(), b"late")).status_code == 200

    async def grants() -> dict[str, str]:
        async with service.connection() as conn:
            cur = await conn.execute(
                "SELECT key, expires_at FROM attachment_uploads WHERE workspace_id = %s", (ws,)
            )
            return {key.rsplit("/", 2)[-2]: key for key, _ in await cur.fetchall()}

    import hashlib

    def hashed(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()[:32]

    outstanding = await grants()
    assert set(outstanding) == {hashed("lost.md"), hashed("late.md")}  # kept.md: completed
    async with service.connection() as conn:
        cur = await conn.execute(
            "SELECT data->>'key' FROM events WHERE workspace_id = %s AND type = 'attachment.added'",
            (ws,),
        )
        kept_key = (await cur.fetchone())[0]
        retention = upload_retention_seconds()
        # Time passes (the clock is the database's): lost.md's URL expired a full retention
        # period ago, late.md's more than half of one; kept.md gets a stale grant on purpose.
        await conn.execute(
            "UPDATE attachment_uploads SET expires_at = now() - make_interval(secs => %s)"
            " WHERE key = %s",
            (retention + 60, outstanding[hashed("lost.md")]),
        )
        await conn.execute(
            "UPDATE attachment_uploads SET expires_at = now() - make_interval(secs => %s)"
            " WHERE key = %s",
            (retention * 0.75, outstanding[hashed("late.md")]),
        )
        await conn.execute(
            "INSERT INTO attachment_uploads (workspace_id, key, expires_at)"
            " VALUES (%s, %s, now() - interval '1000 days')",
            (ws, kept_key),
        )

    r = await api.post(base(ws, rid) + "/complete", json={"filename": "late.md"})
    assert_error(r, 404, "NOT_FOUND")
    assert "expired too long ago" in r.json()["error"]["message"]

    # The storage client as Rekor builds it (no consumer of its own: the sweep is run here).
    _, component = await start_attachments(
        service, msgspec.structs.replace(settings, run_workers=False)
    )
    try:
        cleanup = StorageCleanup(endpoints.database_url, component.storage, bucket_ready=True)
        async with service.connection() as conn:
            await cleanup.sweep_uploads(conn)
    finally:
        await component.stop()

    def exists(key: str) -> bool:
        try:
            s3.head_object(Bucket=endpoints.s3_bucket, Key=key)
            return True
        except Exception:
            return False

    assert not exists(outstanding[hashed("lost.md")])  # swept
    assert exists(outstanding[hashed("late.md")])  # not yet past the whole retention
    assert exists(kept_key)  # completed: never deleted, whatever the grants say
    assert await download(api, ws, rid, "kept.md") == b"kept"
    assert done["version"] == 1
    left = await grants()
    assert set(left) == {hashed("late.md")}


# -- unit: the presigner signs exactly as botocore does ---------------------------------------


@pytest.mark.parametrize(
    ("method", "key", "headers", "query"),
    [
        ("PUT", "ws/a/c/r/h/000000000001-x", {"Content-Type": "text/markdown"}, {}),
        ("PUT", "k", {"Content-Type": "text/plain; charset=utf-8", "Content-Length": "5"}, {}),
        ("GET", "odd key/ü+%~=&", {}, {"response-content-disposition": 'attachment; x="ü"'}),
    ],
)
def test_presigner_matches_botocore(
    method: str,
    key: str,
    headers: dict[str, str],
    query: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from commands.storage import PresignerV4

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    endpoint = "http://127.0.0.1:8333"
    path = f"/bucket/{quote(key, safe='/~')}"
    url = endpoint + path + (("?" + urlencode(query, quote_via=quote)) if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    botocore.auth.S3SigV4QueryAuth(
        Credentials("AKID", "SECRET"), "s3", "us-east-1", expires=900
    ).add_auth(request)
    expected = dict(parse_qsl(urlsplit(request.url).query))

    ours = PresignerV4(endpoint, "AKID", "SECRET", "us-east-1").presign(
        method, f"bucket/{key}", 900, headers=headers, query=query, now=now
    )
    assert urlsplit(ours).path == path
    assert dict(parse_qsl(urlsplit(ours).query)) == expected
