"""The hostile SQL list over HTTP: each statement refused with a 4xx, the archive unchanged.

The statements are the ones the Python API's confinement tests use
(``tests/hostile_sql.py``), run through ``POST /v1/sql`` against a cut of hot,
warm and cold data on file:// and on moto.
"""

from __future__ import annotations

from pathlib import Path

from tests.hostile_sql import PROBES, archive, statements_against
from tests.http.conftest import Api, run_order, tier_now

LEGIT = "SELECT tier, count(*) FROM workflows WHERE workflow_id LIKE ? GROUP BY 1 ORDER BY 1"


def test_hostile_sql_is_refused_and_changes_nothing(api: Api, uid, tmp_path: Path):
    prefix = uid("hostile")
    for n in range(2):
        run_order(api, f"{prefix}-c{n}", "h", n)
    tier_now(api, "warm")
    tier_now(api, "cold")
    run_order(api, f"{prefix}-w0", "h", 0)
    tier_now(api, "warm")
    run_order(api, f"{prefix}-h0", "h", 0)
    c = api.client("analyst")

    def legit() -> list:
        r = c.post("/v1/sql", json={"sql": LEGIT, "params": [f"{prefix}-%"]})
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    expected = legit()
    assert expected == [["cold", 2], ["hot", 1], ["warm", 1]]
    store = api.tf.store
    before = archive(store)
    assert any(k.endswith(".parquet") for k in before)
    target = store.path(sorted(k for k in before if k.endswith(".parquet"))[0])
    if store.settings.is_s3:
        target = f"s3://{target}"
    # An archive file as the target of every write (the local-file variants are covered by
    # the Python API's tests; the HTTP layer adds nothing path-specific).
    attacks = [*PROBES, *statements_against(target)]
    for i, query in enumerate(attacks):
        r = c.post("/v1/sql", json={"sql": query})
        assert 400 <= r.status_code < 500, (query, r.status_code, r.text)
        error = r.json()["error"]
        assert error["message"].startswith(("SQL refused", "SQL error")), (query, error)
        assert str(tmp_path) not in error["message"]
        if i % 20 == 0:
            assert legit() == expected, query
    assert legit() == expected
    assert archive(store) == before
    assert list(tmp_path.iterdir()) == []
