"""`rekor serve`: start (or connect to) the stack, make the first admin key, run the API."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import uvicorn

from commands.config import Settings


class _StopRequested(Exception):
    """SIGINT/SIGTERM after uvicorn's graceful shutdown."""


def _stop_requested(signum: int, frame: object) -> None:
    raise _StopRequested


def _progress(message: str) -> None:
    print(f"rekor: {message}", file=sys.stderr, flush=True)


def configure_logging(level: str = "INFO") -> None:
    """Structured logs: one JSON object per line on stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format='{"ts": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s",'
        ' "msg": %(message)r}',
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


async def _first_admin_key(settings: Settings) -> str | None:
    from commands.bootstrap import build_service

    service = await build_service(settings.database_url, min_size=1, max_size=2)
    try:
        return await service.ensure_admin_key()
    finally:
        await service.close()


def serve(
    host: str, port: int, data_dir: str, *, access_log: bool = False, workers: int = 1
) -> int:
    """Run Rekor until SIGINT/SIGTERM; returns the process exit code."""
    if not 1 <= workers <= 32:
        _progress("--workers must be between 1 and 32")
        return 1
    from deploy.stack import EmbeddedStack, StackError

    configure_logging()
    if not access_log:
        logging.getLogger("rekor.access").setLevel(logging.WARNING)
    data_path = Path(data_dir).resolve()
    data_path.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stack = EmbeddedStack.from_env(data_path, progress=_progress)
    try:
        endpoints = stack.start()
    except StackError as exc:
        _progress(f"could not start the stack: {exc}")
        stack.stop()
        return 5
    try:
        settings = Settings.from_env(
            database_url=endpoints.database_url,
            nats_url=endpoints.nats_url,
            s3_endpoint=endpoints.s3_endpoint,
            s3_access_key=endpoints.s3_access_key,
            s3_secret_key=endpoints.s3_secret_key,
            s3_bucket=endpoints.s3_bucket,
            s3_region=endpoints.s3_region,
            data_dir=str(data_path),
        )
        key = asyncio.run(_first_admin_key(settings))
        key_file = data_path / "admin.key"
        if key is not None:
            key_file.write_text(key + "\n")
            os.chmod(key_file, 0o600)
            _progress(f"first start: created admin API key (also in {key_file}):")
            print(key, flush=True)
        url = f"http://{host}:{port}"
        with open(data_path / "server.url", "w") as fh:
            fh.write(url + "\n")
        _progress(
            f"stack ready in {time.monotonic() - started:.1f}s; serving {url}"
            + (f" with {workers} workers" if workers > 1 else "")
        )
        _progress(f"OpenAPI: {url}/schema/openapi.json   health: {url}/health   MCP: {url}/mcp")
        if workers > 1:
            # Worker processes build their app from the environment (api.asgi); one of them,
            # elected by an advisory lock, runs the background consumers.
            os.environ.update(settings.to_env())
            os.environ["REKOR_LEADER_ELECTION"] = "1"
            if not access_log:
                os.environ["REKOR_QUIET_ACCESS_LOG"] = "1"
            app: object = "api.asgi:app_from_env"
        else:
            from api.app import create_app

            app = create_app(settings)
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            # The supervisor handles SIGINT/SIGTERM itself: it stops the workers and returns.
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return 0
        server = uvicorn.Server(config)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
        # previous handler; these handlers turn that into a normal exit so the stack below is
        # stopped in order and the exit code is 0.
        signal.signal(signal.SIGTERM, _stop_requested)
        signal.signal(signal.SIGINT, _stop_requested)
        try:
            server.run()
        except _StopRequested:
            pass
        return 0
    finally:
        # A second Ctrl-C (impatience, or `uv run` passing the terminal's signal on as well)
        # must not cut the stack's orderly stop short and leave its servers running; each
        # part has its own stop deadline.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _progress("stopping")
        stack.stop()
