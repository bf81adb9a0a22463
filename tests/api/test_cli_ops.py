"""The CLI's read commands, ``--json``, exit codes and ``serve``'s refusal, in-process.

Exit codes (tierflow.cli_common): 0 ok, 1 failure, 2 usage, 3 not found, 4 refused or
held. The held erase (4) is checked with the compliance commands
(tests/tiering/test_compliance_cli.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tierflow import Tierflow, cli_common
from tierflow.cli import app
from typer.testing import CliRunner

from tests.cli_runner import Cli
from tests.http.http_app import WORKFLOWS, greet, order

pytestmark = pytest.mark.timeout(60)

APP = "tests.http.http_app"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, dict[str, str]]:
    """Two finished orders of two customers, and a greeting waiting for its signal.

    One data directory for the module (opening it is most of a command's cost); the
    tests only read it, but for one signal the last test sends.
    """
    tag = uuid.uuid4().hex[:8]
    ids = {"o1": f"order-1-{tag}", "o2": f"order-2-{tag}", "g": f"greet-{tag}"}
    data = tmp_path_factory.mktemp("cli") / "data"

    async def go() -> None:
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.run(order, {"customer": "c-1", "n": 1}, workflow_id=ids["o1"])
            await tf.run(order, {"customer": "c-2", "n": 2}, workflow_id=ids["o2"])
            await tf.run(greet, "ada", workflow_id=ids["g"])

    asyncio.run(go())
    return Cli(data), ids


def test_query_list_filters_and_json(seeded: tuple[Cli, dict[str, str]]):
    cli, ids = seeded

    assert cli.json("query", ids["g"], "who", "--app", APP) == {"result": "ada"}
    echoed = cli.json("query", ids["g"], "echo", "--app", APP, "--args", '[1, "x"]')
    assert echoed == {"result": [1, "x"]}
    text, _ = cli("query", ids["g"], "who", "--app", APP)
    assert json.loads(text) == "ada"

    def listed(*args: str) -> list[str]:
        return [i["workflow_id"] for i in cli.json("list", *args)["items"]]

    assert set(listed()) == set(ids.values())
    assert set(listed("--status", "completed")) == {ids["o1"], ids["o2"]}
    assert listed("--status", "paused", "--type", "greet") == [ids["g"]]
    assert listed("--type", "order", "--attribute", "customer=c-2") == [ids["o2"]]
    assert listed("--attribute", "n=1") == [ids["o1"]]  # a number is a number
    assert listed("--attribute", 'n="1"') == []  # ... and a JSON string is text
    assert set(listed("--tier", "hot")) == set(ids.values())
    assert listed("--tier", "cold") == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert listed("--created-after", later) == []
    assert len(listed("--created-before", later)) == 3
    assert set(listed("--finished-before", later)) == {ids["o1"], ids["o2"]}  # g runs on
    assert listed("--started-after", later) == []
    # Cursor paging: two pages of 2 and 1, every id once.
    first = cli.json("list", "--limit", "2")
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = cli.json("list", "--limit", "2", "--cursor", first["next_cursor"])
    assert rest["next_cursor"] is None
    paged = [i["workflow_id"] for i in first["items"] + rest["items"]]
    assert sorted(paged) == sorted(ids.values())

    described = cli.json("describe", ids["o1"])
    assert described["status"] == "completed" and described["result"] == 3
    history = cli.json("history", ids["o1"])
    assert history["tier"] == "hot" and history["events"][-1]["event_type"] == "workflow.completed"
    # Printed as it is read, yet the text json.dumps gives the whole document.
    text, _ = cli("history", ids["o1"], "--json")
    assert text == asyncio.run(_whole_history(cli.data, ids["o1"])) + "\n"
    out, err = cli("history", "no-such-order", "--json", code=3)
    assert out == "" and json.loads(err)["error"]["code"] == "WorkflowNotFound"


async def _whole_history(data: Path, wid: str) -> str:
    async with Tierflow(data, WORKFLOWS) as tf:
        events = await tf.history(wid)
    doc = {"workflow_id": wid, "tier": "hot", "events": [e.to_dict() for e in events]}
    return json.dumps(doc)


def test_tables_fold_other_columns_but_never_cut_an_id(cli: Cli, uid, monkeypatch):
    wid = uid("an-order-with-a-rather-long-workflow-id-that-must-survive")
    asyncio.run(_one_order(cli.data, wid))
    monkeypatch.setattr(cli_common.console, "width", 50)
    text, _ = cli("list")
    assert wid in text  # whole, on one line
    assert "an-order" in text.splitlines()[3]  # the first row: the id is not folded


async def _one_order(data: Path, wid: str) -> None:
    async with Tierflow(data, WORKFLOWS) as tf:
        await tf.run(order, {"customer": "c", "n": 1}, workflow_id=wid)


def test_exit_codes_not_found_3_usage_2_refused_4(seeded, uid, monkeypatch):
    cli, ids = seeded
    nobody = uid("nobody")
    for args in (("describe", nobody), ("history", nobody), ("cancel", nobody)):
        _, err = cli(*args, code=3)
        assert nobody in err
    _, err = cli("describe", nobody, "--json", code=3)
    assert json.loads(err)["error"]["code"] == "WorkflowNotFound"
    # Usage: bad options, bad JSON, bad times, input tierflow refuses.
    cli("list", "--limit", "0", code=2)
    cli("list", "--created-after", "yesterday", code=2)
    cli("list", "--attribute", "customer", code=2)
    cli("signal", ids["g"], "go", "--payload", "{not json", code=2)
    cli("query", ids["g"], "who", "--app", APP, "--args", '{"a": 1}', code=2)
    _, err = cli("query", ids["g"], "nope", "--app", APP, code=2)  # no such handler
    assert "nope" in err
    cli("no-such-command", code=2)
    # Refused: signalling a finished workflow.
    _, err = cli("signal", ids["o1"], "go", "--json", code=4)
    assert json.loads(err)["error"]["code"] == "WorkflowAlreadyFinished"

    # serve: no API keys and a host beyond loopback -> refused before anything starts.
    monkeypatch.delenv("TIERFLOW_API_KEYS", raising=False)
    monkeypatch.delenv("TIERFLOW_API_KEYS_FILE", raising=False)
    _, err = cli("serve", "--app", APP, "--host", "0.0.0.0", code=4)
    assert "without API keys" in " ".join(err.split())
    cli("serve", "--app", "tests.no_such_module", code=2)
    cli("serve", "--app", f"{APP}:add", code=2)  # neither a Tierflow nor a list of workflows

    assert cli.json("signal", ids["g"], "go", "--payload", '"hi"')["delivered"] is True


def test_shell_completion_is_offered():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout
