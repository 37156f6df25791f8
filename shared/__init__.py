"""Zorgpot shared package: event schemas, topics, settings, money/time/identity rules.

Every service imports this package; nothing in here does I/O except `db`, `kafka`, `outbox`
and `registry`, which are the adapters the services share.
"""
