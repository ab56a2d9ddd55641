"""Starting deliveries and signalling ACKs: the API's side of Temporal."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from cortex.models import utcnow
from cortex.settings import Settings
from cortex.shared import (
    ACK_SIGNAL,
    DELIVERY_WORKFLOW,
    DeliveryInput,
    NewEvent,
    Redrive,
    delivery_workflow_id,
)

logger = logging.getLogger(__name__)

_RPC_TIMEOUT = timedelta(seconds=5)


@dataclass
class Started:
    workflow_id: str
    duplicate: bool


def temporal_of(request: Request) -> Client:
    client: Client | None = request.app.state.temporal
    if client is None:
        raise HTTPException(503, detail="delivery engine unavailable, retry later")
    return client


async def start_delivery(
    request: Request, event: NewEvent, redrive: Redrive | None = None
) -> Started:
    """Start the event's delivery workflow, once per idempotency key.

    Nothing is written to the database here: the workflow stores the event.
    So when Temporal is down the caller gets a 503, retries, and there is
    nothing half-stored to clean up.
    """
    settings: Settings = request.app.state.settings
    client = temporal_of(request)
    event.received_at = utcnow().isoformat()
    workflow_id = delivery_workflow_id(event.idempotency_key)
    summary = f"{event.title} to {event.user_id}"
    if redrive is not None:
        # A new workflow per re-drive; the original keeps its own history.
        workflow_id = f"{workflow_id}-redrive-{uuid.uuid4().hex[:8]}"
        summary = f"re-drive of event {redrive.event_id}: {summary}"
    try:
        await client.start_workflow(
            DELIVERY_WORKFLOW,
            DeliveryInput(
                event=event,
                ack_timeout_seconds=settings.ack_timeout_seconds,
                receipt_delay_seconds=settings.receipt_delay_seconds,
                redrive=redrive,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            # A closed delivery is not started again: a repeated webhook after
            # the ACK must not deliver a second time.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=summary[:200],
            rpc_timeout=_RPC_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        return Started(workflow_id, duplicate=True)
    except RPCError as error:
        logger.warning("could not start delivery %s: %s", workflow_id, error.status)
        raise HTTPException(
            503, detail="delivery engine unavailable, retry later"
        ) from None
    logger.info(
        "delivery %s started for user %s",
        workflow_id,
        event.user_id,
        extra={"workflow_id": workflow_id, "user_id": event.user_id},
    )
    return Started(workflow_id, duplicate=False)


async def signal_ack(request: Request, workflow_id: str) -> None:
    """Tell a waiting delivery that the app ACKed. Best effort: the ACK is
    already in the database, and a closed or unreachable workflow is fine."""
    client: Client | None = request.app.state.temporal
    if client is None:
        return
    try:
        await client.get_workflow_handle(workflow_id).signal(
            ACK_SIGNAL, rpc_timeout=_RPC_TIMEOUT
        )
    except RPCError as error:
        logger.debug("ack signal to %s not delivered: %s", workflow_id, error.status)
