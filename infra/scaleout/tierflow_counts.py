"""tierflow's own numbers for the cold tables (main .venv: pyarrow 26, tierflow's code).

Opens both tables through tierflow's ``ColdTables`` (the same catalog.sqlite and
S3 settings that wrote them), lists the live data files with pyiceberg's
``plan_files()``, and counts over a ``pyarrow.dataset`` of exactly those files
(tierflow's own read path, the fastest one measured). It also checks
that these counts agree with the snapshot summaries (``total-records``) and
with what tier() reported moving to warm and to cold (``populate.json``), and
writes ``<work>/expected.json``.

Usage: python tierflow_counts.py --work DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.warm.storage import ObjectStore, StorageSettings

GROUPS = {"workflows": ("finished_date", "status"), "history": ("finished_date", "event_type")}


def group_counts(tbl: pa.Table, column: str) -> dict[str, int]:
    """Rows per value of ``column``."""
    out = tbl.group_by(column).aggregate([([], "count_all")])
    keys, counts = out[column].to_pylist(), out["count_all"].to_pylist()
    return {str(k): int(v) for k, v in zip(keys, counts, strict=True)}


def main() -> int:
    """Count, cross-check, write expected.json; 0 when tierflow's own numbers agree."""
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    args = p.parse_args()
    work = Path(args.work).resolve()
    conn = json.loads((work / "connection.json").read_text())
    s3 = conn["s3"]
    store = ObjectStore(
        StorageSettings(
            url=conn["warehouse"].removesuffix("/cold"),
            endpoint=conn["endpoint"],
            region=s3["s3.region"],
            access_key=s3["s3.access-key-id"],
            secret_key=s3["s3.secret-access-key"],
        )
    )
    cold = ColdTables(CatalogSettings(url=conn["catalog_uri"], name=conn["catalog_name"]), store)
    fs = store.settings.arrow_filesystem()
    result: dict[str, Any] = {"engine": f"pyiceberg plan_files + pyarrow {pa.__version__}"}
    problems: list[str] = []
    t0 = time.perf_counter()
    for dataset, groups in GROUPS.items():
        table = cold.table(dataset)
        files = [t.file.file_path for t in table.scan().plan_files()]
        paths = [f.removeprefix("s3://") for f in files]
        cols = sorted({*groups, "workflow_id"})
        rows = ds.dataset(paths, format="parquet", filesystem=fs).to_table(columns=cols)
        counts: dict[str, Any] = {
            "rows": rows.num_rows,
            "files": len(files),
            "snapshots": len(table.metadata.snapshots),
            "distinct_workflow_id": len(rows["workflow_id"].unique()),
        }
        for g in groups:
            counts[f"by_{g}"] = dict(sorted(group_counts(rows, g).items()))
        summary = table.current_snapshot().summary  # type: ignore[union-attr]
        total = int(summary.additional_properties["total-records"]) if summary else -1
        if total != rows.num_rows:
            problems.append(f"{dataset}: snapshot total-records {total} != scanned {rows.num_rows}")
        result[dataset] = counts
    result["seconds"] = round(time.perf_counter() - t0, 3)
    cold.close()

    moved = json.loads((work / "populate.json").read_text())
    if result["workflows"]["rows"] != moved["warm_workflows"]:
        problems.append(
            f"workflows: cold {result['workflows']['rows']} != warm {moved['warm_workflows']}"
        )
    if result["history"]["rows"] != moved["warm_events"]:
        problems.append(f"history: cold {result['history']['rows']} != warm {moved['warm_events']}")
    if (moved.get("cold_workflows"), moved.get("cold_events")) != (
        result["workflows"]["rows"],
        result["history"]["rows"],
    ):
        problems.append(f"the warm -> cold reports moved other counts: {moved}")
    if result["workflows"]["rows"] != sum(moved["started"].values()):
        problems.append("workflows: cold rows != workflows started")
    if result["history"]["distinct_workflow_id"] != result["workflows"]["rows"]:
        problems.append("history holds a different set of workflows than workflows")
    result["problems"] = problems
    (work / "expected.json").write_text(json.dumps(result, indent=1))
    print("tierflow:", json.dumps({k: result[k] for k in ("engine", "seconds", "problems")}))
    for dataset in GROUPS:
        print(f"tierflow: {dataset}: {json.dumps(result[dataset])}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
