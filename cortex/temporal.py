"""Connecting to Temporal and preparing a namespace for the delivery workflow."""

from __future__ import annotations

import logging
from functools import lru_cache

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, RPCStatusCode

from cortex.settings import Settings
from cortex.shared import SEARCH_ATTRIBUTES

logger = logging.getLogger(__name__)


async def connect(settings: Settings, metrics_address: str | None = None) -> Client:
    """A client whose SDK logs go through Python logging (so they are JSON
    when ours are) and, given an address, whose SDK metrics are served there
    for Prometheus."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        runtime=_runtime(metrics_address),
    )


@lru_cache
def _runtime(metrics_address: str | None) -> Runtime:
    # One per process: a runtime owns threads and, here, a metrics port.
    telemetry = TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
        ),
        metrics=PrometheusConfig(bind_address=metrics_address)
        if metrics_address
        else None,
    )
    return Runtime(telemetry=telemetry)


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register the workflow's search attributes where they are missing.

    The embedded dev server gets them on its command line; a cluster (or the
    test server) gets them here, when the worker starts.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as error:
        # The time-skipping test server can add attributes but not list them.
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
        logger.info("registered search attributes %s", ", ".join(sorted(missing)))
