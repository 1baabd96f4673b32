"""Schemathesis over the service's own OpenAPI document, one test per operation it lists (a
new route is fuzzed with no change here): the coverage phase (each field's boundaries, wrong
types and missing values, a missing body, a wrong and a malformed ``Content-Type``,
unexpected methods), then the fuzzing phase (generated valid and invalid requests). Never a
5xx, and every documented response matches its schema. A real `cvm serve` over HTTP (the
module's ``server`` fixture).

The operations are known when pytest collects this module, before any server runs: the
document is BentoML's for ``CVMService`` (built without starting it), and the first test
checks that the server serves exactly that one. (``schemathesis.pytest.from_fixture``, which
would load it from the server, fails under pytest 9.2: it sets ``Function._nodeid``.)"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from serving.service import CVMService
from tests.serving_fixtures import ADMIN_KEY, API_KEY, server  # noqa: F401 - the fixture

pytestmark = pytest.mark.server

PHASES = ["examples", "coverage", "fuzzing"]  # stateful needs OpenAPI links: the document has none
FUZZ_EXAMPLES = 50  # per operation, valid and invalid together; the coverage phase sends all of its cases
#: the coverage phase's Content-Type probes: a multipart type without boundary, an unsupported type
CONTENT_TYPE_PROBES = {"malformed_content_type", "unsupported_content_type"}

SPEC = json.loads(json.dumps(CVMService.openapi_spec.asdict()))
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.update(request_timeout=30)
schema.config.phases.update(phases=PHASES)
#: what the run sent, per operation ("POST /score"): (phase, coverage scenario or "", status) -> count
SENT: defaultdict[str, Counter] = defaultdict(Counter)


def test_the_server_serves_the_fuzzed_document(server):  # noqa: F811
    served = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    assert served == SPEC
    assert {"/score", "/recommend", "/admin/reload"} <= set(served["paths"]), sorted(served["paths"])


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          derandomize=True)
def test_no_5xx_and_responses_match_their_schema(case, server):  # noqa: F811
    op = case.operation
    phase = case.meta.phase if case.meta is not None else None
    scenario = str(getattr(phase.data, "scenario", "")) if phase is not None else ""
    key = ADMIN_KEY if op.path.startswith("/admin/") else API_KEY
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    SENT[f"{op.method.upper()} {op.path}"][(str(phase.name) if phase else "", scenario, response.status_code)] += 1
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    if op.method.upper() == "POST" and scenario in CONTENT_TYPE_PROBES:
        # a JSON-only API does not support these media types: 415 Unsupported Media Type (RFC 9110 15.5.16)
        assert response.status_code == 415, (scenario, response.status_code, response.text[:300])


def test_every_fuzzed_operation_went_through_both_phases():
    """The run above was not vacuous: each operation it fuzzed got coverage and fuzzing cases,
    and each POST the coverage phase's two Content-Type probes."""
    if not SENT:
        pytest.skip("checks test_no_5xx_and_responses_match_their_schema, run before it in the same session")
    for op, sent in SENT.items():
        assert {"coverage", "fuzzing"} <= {phase for phase, _, _ in sent}, (op, sent)
        if op.startswith("POST "):
            assert CONTENT_TYPE_PROBES <= {scenario for _, scenario, _ in sent}, (op, sent)
