"""Starters of the event-stream components (registered in commands/bootstrap.py)."""

from __future__ import annotations

from typing import Any

from stream.config import StreamConfig
from stream.hooks import HookApplier
from stream.notify import Notifier
from stream.relay import Relay
from stream.triggers import TriggerWorker


async def start_notifier(service: Any, settings: Any) -> tuple[str, Any]:
    """LISTEN/NOTIFY fan-out (the change feed uses it even without background workers)."""
    service.stream_config = StreamConfig.from_env(egress_allow=settings.egress_allow)
    notifier = Notifier(settings.database_url)
    notifier.start()
    return "stream.notifier", notifier


async def start_relay(service: Any, settings: Any) -> tuple[str, Any]:
    """The Postgres -> JetStream relay (needs NATS)."""
    if not settings.nats_url or not settings.run_workers:
        return "stream.relay", None
    relay = Relay(
        service, service.stream_config, settings.nats_url, service.extensions["stream.notifier"]
    )
    relay.start()
    return "stream.relay", relay


async def start_triggers(service: Any, settings: Any) -> tuple[str, Any]:
    """The trigger consumer and delivery workers (need NATS)."""
    if not settings.nats_url or not settings.run_workers:
        return "stream.triggers", None
    worker = TriggerWorker(service, service.stream_config, settings.nats_url)
    worker.start()
    return "stream.triggers", worker


async def start_hooks(service: Any, settings: Any) -> tuple[str, Any]:
    """The hook payload applier (Postgres only)."""
    if not settings.run_workers:
        return "stream.hooks", None
    applier = HookApplier(service)
    applier.start()
    return "stream.hooks", applier


STARTERS = [start_notifier, start_relay, start_triggers, start_hooks]
