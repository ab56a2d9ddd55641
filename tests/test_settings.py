import json

import pytest
from pydantic import ValidationError

from cortex.settings import Settings


def test_production_refuses_the_dev_only_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORTEX_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="CORTEX_JWT_SECRET"):
        Settings()


def test_production_starts_with_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ENVIRONMENT": "production",
        "JWT_SECRET": "x" * 40,
        "API_KEYS": "key-one, key-two",
        "OPERATOR_KEYS": "ops",
        "COMPOSIO_WEBHOOK_SECRET": "whsec_cmVhbA==",
    }.items():
        monkeypatch.setenv(f"CORTEX_{name}", value)
    settings = Settings()
    assert settings.api_keys == ["key-one", "key-two"]


def test_urgency_table_is_configurable_and_must_cover_every_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {
        level: {
            "priority": "high",
            "channel_id": f"ch-{level}",
            "sound": None,
            "ttl": 60,
        }
        for level in ("low", "normal", "high", "critical")
    }
    monkeypatch.setenv("CORTEX_PUSH_URGENCY", json.dumps(table))
    assert Settings().push_urgency["low"].channel_id == "ch-low"

    del table["critical"]
    monkeypatch.setenv("CORTEX_PUSH_URGENCY", json.dumps(table))
    with pytest.raises(ValidationError, match="critical"):
        Settings()
