"""Consumers of the event stream: the Postgres -> JetStream relay, outbound trigger delivery,
inbound hook mapping, and their pure helpers (egress guard, signatures, trigger filters)."""
