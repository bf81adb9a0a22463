"""schemathesis against the live OpenAPI document: no 5xx, every response matches its schema.

A fresh file:// server with an all-scope key; a few examples per operation
(positive and negative), so the module runs in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.conftest import Api, running_api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("http-openapi"), "file", None) as api:
        yield api


MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def test_every_operation_answers_within_its_schema(api: Api) -> None:
    # Loaded from the live server, as a client would. (schemathesis' pytest plugin,
    # ``from_fixture``, does not work with pytest 9, hence the loop over operations.)
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {api.keys['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:
        for mode in MODES:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=3,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(
                    base_url=api.base_url, headers=headers, checks=CHECKS, timeout=60
                )

            try:
                call()
            except Unsatisfiable:
                # No parameters and no body (/healthz): there is no invalid request to make.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # collect every operation's failure, then report all
                # Hypothesis wraps a failure it could not repeat (FlakyFailure, an exception
                # group): name what the first call saw, or the report says nothing useful.
                inner = "; ".join(repr(e) for e in getattr(exc, "exceptions", ()))
                failures.append(f"{operation.label} ({mode.value}): {exc} {inner}")
    assert not failures, "\n\n".join(failures)
