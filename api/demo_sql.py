"""The demo's SQL: the questions it asks across the tiers, and a snippet that needs no tierflow.

The queries run through ``tf.sql`` (one confined DuckDB query over hot, warm
and cold). The snippet is what a user can paste to read the same warm and
cold files with DuckDB alone; the demo prints it and runs it, so what it
prints is known to work.
"""

from __future__ import annotations

import ast
import contextlib
import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.hot.models import EventType, Status
from tierflow.hot.router import Tier

if TYPE_CHECKING:
    from tierflow.facade import Tierflow

__all__ = ["QUERIES", "duckdb_snippet", "run_snippet"]

_TIER_ORDER = f"CASE tier WHEN '{Tier.HOT}' THEN 1 WHEN '{Tier.WARM}' THEN 2 ELSE 3 END"

QUERIES: dict[str, str] = {
    "tiers": f"""
        SELECT tier, count(*) AS workflows, count(DISTINCT workflow_type) AS types,
               min(finished_at)::DATE AS "first finished", max(finished_at)::DATE AS "last finished"
        FROM workflows GROUP BY tier ORDER BY {_TIER_ORDER}""",
    "failures": f"""
        SELECT workflow_type AS type, count(*) AS workflows,
               count(*) FILTER (WHERE status = '{Status.FAILED}') AS failed,
               count(*) FILTER (WHERE status = '{Status.CANCELLED}') AS cancelled,
               round(100.0 * count(*) FILTER (WHERE status = '{Status.FAILED}') / count(*), 1)
                   AS "failed %",
               string_agg(DISTINCT tier, ' ' ORDER BY tier) AS "read from"
        FROM workflows GROUP BY 1 ORDER BY failed DESC, type""",
    "p95": """
        SELECT workflow_type AS type, count(*) AS finished,
               to_milliseconds(quantile_cont(duration_ms, 0.5)::BIGINT)::VARCHAR AS p50,
               to_milliseconds(quantile_cont(duration_ms, 0.95)::BIGINT)::VARCHAR AS p95,
               to_milliseconds(max(duration_ms)::BIGINT)::VARCHAR AS longest
        FROM workflows GROUP BY 1 ORDER BY quantile_cont(duration_ms, 0.95) DESC""",
    "slowest_step": f"""
        WITH steps AS (
            SELECT workflow_type, step_name, workflow_id,
                   max(event_time) - min(event_time) AS took,
                   count(*) FILTER (WHERE event_type = '{EventType.STEP_FAILED}') AS failures
            FROM history WHERE step_name IS NOT NULL AND event_type LIKE 'step.%'
            GROUP BY ALL)
        SELECT workflow_type AS type, step_name AS step, count(*) AS runs,
               sum(failures) AS "failed attempts", quantile_disc(took, 0.95)::VARCHAR AS p95,
               max(took)::VARCHAR AS slowest, arg_max(workflow_id, took) AS "slowest in"
        FROM steps GROUP BY 1, 2 ORDER BY slowest DESC, p95 DESC LIMIT 5""",
    "cold_retried_order": f"""
        SELECT workflow_id FROM history
        WHERE tier = '{Tier.COLD}' AND workflow_type = 'process_order'
        GROUP BY 1
        ORDER BY count(*) FILTER (WHERE event_type = '{EventType.RETRY_SCHEDULED}') DESC, 1
        LIMIT 1""",
    "customer_count": """
        SELECT count(*), coalesce(string_agg(DISTINCT tier, ' ' ORDER BY tier), 'no tier')
        FROM workflows WHERE json_extract_string(attributes, '$.customer') = ?""",
}

_LOCAL = """\
import json
from pathlib import Path

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

lake = {lake!r}
# warm: the Parquet files listed by the manifests of committed batches
warm = [f"{{lake}}/{{f['key']}}" for m in sorted(Path(lake, "warm/manifests").glob("*.json"))
        for f in json.loads(m.read_text())["files"] if f["dataset"] == "workflows"]
# cold: the data files of the current snapshot of the Iceberg table tierflow.workflows
catalog = SqlCatalog("tierflow", uri={catalog_uri!r})
cold = [t.file.file_path.removeprefix("file://")
        for t in catalog.load_table("tierflow.workflows").scan().plan_files()]
print(duckdb.sql(f\"\"\"
    SELECT tier, status, count(*) AS workflows
    FROM read_parquet({{warm + cold}}, union_by_name = true)
    GROUP BY ALL ORDER BY ALL\"\"\").fetchall())
"""

_S3 = """\
import json
import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as fs
from pyiceberg.catalog.sql import SqlCatalog

# moto's placeholder keys; a real store takes its keys from the environment instead
s3, root = fs.FileSystem.from_uri(
    "s3://{key}:{secret}@{root}?scheme=http&endpoint_override={host}&region={region}")
# warm: the Parquet files listed by the manifests of committed batches
manifests = s3.get_file_info(fs.FileSelector(f"{{root}}/warm/manifests"))
warm = [f"{{root}}/{{f['key']}}" for m in manifests
        for f in json.loads(s3.open_input_file(m.path).read())["files"]
        if f["dataset"] == "workflows"]
# cold: the data files of the current snapshot of the Iceberg table tierflow.workflows
catalog = SqlCatalog("tierflow", uri={catalog_uri!r}, **{{
    "s3.endpoint": {endpoint!r}, "s3.region": {region!r},
    "s3.access-key-id": {key!r}, "s3.secret-access-key": {secret!r}}})
cold = [t.file.file_path.removeprefix("s3://")
        for t in catalog.load_table("tierflow.workflows").scan().plan_files()]
warm_files = ds.dataset(warm, filesystem=s3, format="parquet")
cold_files = ds.dataset(cold, filesystem=s3, format="parquet")
print(duckdb.sql(\"\"\"
    SELECT tier, status, count(*) AS workflows
    FROM (SELECT tier, status FROM warm_files UNION ALL SELECT tier, status FROM cold_files)
    GROUP BY ALL ORDER BY ALL\"\"\").fetchall())
"""


def duckdb_snippet(tf: Tierflow, data_dir: Path) -> str:
    """Python that counts the warm and cold workflows by tier and status with DuckDB alone.

    For ``file://`` it is DuckDB's ``read_parquet`` over the files; for S3 (DuckDB has
    no S3 access without extensions) pyarrow datasets that DuckDB scans. Only a local
    moto server's placeholder keys are ever written into it.
    """
    settings = tf.store.settings
    catalog_uri = f"sqlite:///{data_dir / 'catalog.sqlite'}"
    if not settings.is_s3:
        lake = tf.store.url.removeprefix("file://")
        return _LOCAL.format(lake=lake, catalog_uri=catalog_uri)
    from tierflow.devs3 import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY

    endpoint = settings.endpoint or ""
    return _S3.format(
        host=endpoint.removeprefix("http://"),
        endpoint=endpoint,
        region=settings.region,
        key=DUMMY_ACCESS_KEY,
        secret=DUMMY_SECRET_KEY,
        root=tf.store.url.removeprefix("s3://"),
        catalog_uri=catalog_uri,
    )


def run_snippet(snippet: str) -> list[tuple[Any, ...]]:
    """Run the snippet as a user would and return the rows it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(textwrap.dedent(snippet), "<demo snippet>", "exec"), {})
    printed = out.getvalue().strip()
    # It prints a Python list of tuples; literal_eval reads it back without running code.
    rows: list[tuple[Any, ...]] = ast.literal_eval(printed)
    return rows
