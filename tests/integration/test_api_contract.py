"""Property-based test of the admin API against the running service: schemathesis generates requests for
every operation of the served /openapi.json (valid ones and invalid ones, for an enabled realm and for any
realm) and checks each answer: never a server error, and a status, content type and body as documented."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import ADMIN_TOKEN

pytestmark = [
    pytest.mark.integration,
    # schemathesis' strategies draw from `random` (its concern, not a test's): Hypothesis warns about it
    pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"),
]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 25  # per operation; those reading a Kafka topic per request get fewer (the run stays well under 60 s)
KAFKA_READS = {"listParked", "replayParked", "listTenantDeadLetters", "replayTenantDeadLetters"}
KAFKA_READS |= {"listDeadLetters", "replayDeadLetters"}
KAFKA_EXAMPLES = 6


Operation = APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]


@dataclass
class Run:
    url: str
    realm: str
    base_url: str
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    failures: dict[str, str] = field(default_factory=dict)
    cases: int = 0


async def test_no_operation_answers_a_server_error_or_off_contract(pipeline: Pipeline) -> None:
    """Over every operation: no 5xx, and every answer's status, content type and body match the document."""
    realm = pipeline.realm()
    base_url = await pipeline.enable(realm)
    status, document = await pipeline.api.call("GET", "/openapi.json")
    assert status == 200
    run = Run(pipeline.api.url, realm, base_url)
    await asyncio.to_thread(fuzz, document, run)
    assert run.failures == {}, "\n\n".join(f"{op}:\n{failure}" for op, failure in run.failures.items())
    assert run.cases >= EXAMPLES


def fuzz(document: dict[str, Any], run: Run) -> None:
    """Each operation in turn, with its realm enabled again first (an earlier DELETE may have disabled it)."""
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        enabled = requests.put(
            f"{run.url}/tenants/{run.realm}",
            json={"base_url": run.base_url, "token": SCIM_TOKEN},
            headers=run.headers,
            timeout=30,
        )
        assert enabled.status_code in (200, 201), enabled.text
        examples = KAFKA_EXAMPLES if operation.definition.raw.get("operationId") in KAFKA_READS else EXAMPLES

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        )
        @hypothesis.given(case=st.one_of(strategies(operation, run)))
        def check(case: Case) -> None:
            run.cases += 1
            response = case.call(base_url=run.url, headers=run.headers, timeout=30)
            case.validate_response(response, checks=CHECKS, headers=run.headers)

        try:
            check()
        except Exception:
            run.failures[operation.label] = traceback.format_exc(limit=0)


def strategies(operation: Operation, run: Run) -> list[st.SearchStrategy[Case]]:
    """Valid and invalid requests, for any realm and for the enabled one; for PUT also valid ones naming the
    real downstream and its token, so that enables and rotations get past validation and store."""
    realms: list[dict[str, Any] | None] = [None, {"realm": run.realm}] if "{realm}" in operation.path else [None]
    found = [operation.as_strategy(mode, path_parameters=realm) for mode in GenerationMode for realm in realms]
    if operation.method.upper() == "PUT":
        found += [
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=realm).map(
                lambda case: with_downstream(case, run)
            )
            for realm in realms
        ]
    return found


def with_downstream(case: Case, run: Run) -> Case:
    if isinstance(case.body, dict):
        case.body = {**case.body, "base_url": run.base_url, "token": SCIM_TOKEN}
    return case
