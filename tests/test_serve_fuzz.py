"""Schemathesis against the gateway's own OpenAPI document: generated requests (valid and
invalid bodies for every operation) never get a 5xx. The gateway runs as a real process in
front of the dev backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests._process import gateway_with_backends


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_with_backends(tmp_path_factory.mktemp("fuzz")) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_schema(gateway: str) -> Any:
    return schemathesis.openapi.from_url(f"{gateway}/openapi.json")


schema = schemathesis.pytest.from_fixture("gateway_schema")


@schema.parametrize()
@settings(max_examples=40, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx(case: Any) -> None:
    response = case.call(timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
