"""Connecting to Temporal."""

from __future__ import annotations

from temporalio.client import Client

from cortex.settings import Settings


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace
    )
