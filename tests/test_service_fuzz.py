"""Schemathesis over the running service's own OpenAPI document: generated requests, valid
and invalid, to every operation; never a 5xx, and every documented response matches its
schema. A real `cvm serve` over HTTP (the module's ``server`` fixture)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.serving_fixtures import API_KEY, server  # noqa: F401 - the fixture

pytestmark = pytest.mark.server

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 60  # per operation and generation mode


def test_no_5xx_and_responses_match_their_schema(server):  # noqa: F811
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /score", "POST /recommend", "POST /admin/reload"} <= paths, paths
    calls = 0
    for op in operations:
        # invalid inputs only exist for operations that take one (the POST bodies)
        modes = [schemathesis.GenerationMode.POSITIVE] + ([schemathesis.GenerationMode.NEGATIVE]
                                                          if op.method.upper() == "POST" else [])
        for mode in modes:

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True)
            def run(case):
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=server.url, headers=HEADERS, timeout=30,
                                       checks=[not_a_server_error, response_schema_conformance])

            run()
    assert calls >= len(operations) + 3
