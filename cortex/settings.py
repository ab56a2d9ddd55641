"""Configuration: every knob is a ``CORTEX_*`` environment variable.

The defaults run the embedded stack on one machine. Secrets default to values
that are public (they are in this file); ``CORTEX_ENVIRONMENT=production``
refuses to start with any of them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789"
DEV_API_KEY = "dev-only-api-key"
DEV_COMPOSIO_SECRET = "whsec_ZGV2LW9ubHktY29tcG9zaW8tc2VjcmV0"
DEV_OPERATOR_KEY = "dev-only-operator-key"


class PushOptions(BaseModel):
    """How one urgency level is pushed through Expo."""

    priority: Literal["default", "normal", "high"]
    channel_id: str
    sound: str | None
    ttl: int = Field(ge=0)


# urgency -> Expo delivery options; override with CORTEX_PUSH_URGENCY (JSON).
DEFAULT_PUSH_URGENCY = {
    "low": PushOptions(priority="normal", channel_id="low", sound=None, ttl=24 * 3600),
    "normal": PushOptions(
        priority="default", channel_id="events", sound="default", ttl=3600
    ),
    "high": PushOptions(
        priority="high", channel_id="important", sound="default", ttl=3600
    ),
    "critical": PushOptions(
        priority="high", channel_id="critical", sound="default", ttl=600
    ),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORTEX_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    log_format: Literal["text", "json"] = "text"
    # Where the worker serves the Temporal SDK's Prometheus metrics.
    worker_metrics_address: str = "127.0.0.1:9464"

    database_url: str = "sqlite:///./var/cortex.db"
    # PostgreSQL connections per process: kept open, and extra under load.
    database_pool_size: int = Field(5, gt=0)
    database_max_overflow: int = Field(10, ge=0)
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "cortex-delivery"

    ack_timeout_seconds: float = Field(300, gt=0)
    heartbeat_seconds: float = Field(15, gt=0)
    # How long one write to a stream may block before the client counts as gone.
    stream_send_timeout_seconds: float = Field(5, gt=0)
    # Newest unacked events replayed on a connect; more than that asks for a resync.
    stream_replay_limit: int = Field(500, gt=0)
    # How long a stream holds an event that overtook an earlier one of the user.
    stream_reorder_seconds: float = Field(1.0, ge=0)
    # Past these, new streams get 429 + Retry-After and the app relies on push.
    stream_max_per_user: int = Field(10, gt=0)
    stream_max_per_process: int = Field(10_000, gt=0)
    # Lifetime of a browser stream ticket (EventSource cannot send headers).
    stream_ticket_seconds: int = Field(60, gt=0)
    # Origins allowed to open the stream from a browser (comma-separated).
    cors_origins: Annotated[list[str], NoDecode] = []

    jwt_secret: str = DEV_JWT_SECRET
    api_keys: Annotated[list[str], NoDecode] = [DEV_API_KEY]
    operator_keys: Annotated[list[str], NoDecode] = [DEV_OPERATOR_KEY]
    composio_webhook_secret: str = DEV_COMPOSIO_SECRET
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = Field(256 * 1024, gt=0)

    expo_base_url: str = "https://exp.host"
    expo_access_token: str | None = None
    expo_timeout_seconds: float = Field(10, gt=0)
    # Expo refuses more than 600 notifications/s per project; all workers share it.
    expo_max_per_second: int = Field(600, gt=0)
    receipt_delay_seconds: float = Field(15 * 60, ge=0)
    push_urgency: dict[str, PushOptions] = DEFAULT_PUSH_URGENCY

    @field_validator("push_urgency")
    @classmethod
    def _every_urgency_mapped(
        cls, value: dict[str, PushOptions]
    ) -> dict[str, PushOptions]:
        missing = set(DEFAULT_PUSH_URGENCY) - set(value)
        if missing:
            raise ValueError(f"push_urgency lacks {', '.join(sorted(missing))}")
        return value

    @field_validator("api_keys", "operator_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        dev_values = {
            "CORTEX_JWT_SECRET": self.jwt_secret == DEV_JWT_SECRET,
            "CORTEX_API_KEYS": DEV_API_KEY in self.api_keys,
            "CORTEX_OPERATOR_KEYS": DEV_OPERATOR_KEY in self.operator_keys,
            "CORTEX_COMPOSIO_WEBHOOK_SECRET": (
                self.composio_webhook_secret == DEV_COMPOSIO_SECRET
            ),
        }
        offending = [name for name, is_dev in dev_values.items() if is_dev]
        if offending:
            raise ValueError(
                "production mode refuses dev-only secrets: " + ", ".join(offending)
            )
        if len(self.jwt_secret) < 32:
            raise ValueError("CORTEX_JWT_SECRET must be at least 32 characters")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
