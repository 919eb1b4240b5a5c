"""Schemathesis against the gateway's own OpenAPI document: generated requests (valid and
invalid bodies for every operation) never get a 5xx. The gateway runs as a real process in
front of the dev backends. (Schemathesis' Python API, not its pytest plugin, which breaks on
some pytest releases.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests._process import gateway_with_backends

EXAMPLES = 40


def test_no_request_gets_a_5xx(tmp_path: Path) -> None:
    with gateway_with_backends(tmp_path) as gateway:
        schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/route",
                                                  "/v1/feedback", "/v1/models", "/health"}
        calls = 0
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(timeout=10)
                case.validate_response(response, checks=[not_a_server_error])

            check()
        assert calls >= 2 * len(operations)        # it did generate requests
