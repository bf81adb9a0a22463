"""Read the cold tables with Daft on a local Ray cluster and compare with tierflow's counts.

Runs in infra/scaleout/.venv (daft 0.7, ray, pyarrow<26, pyiceberg 0.12), not in
tierflow's venv: nothing of tierflow is imported. The tables are found through
the same pyiceberg SQL catalog (catalog.sqlite) and S3 settings tierflow wrote
them with (``<work>/connection.json``), wrapped as a Daft catalog
(``Catalog.from_iceberg``); Daft plans the scan from the Iceberg metadata and
reads the Parquet files itself, on Ray workers.

Counts: total rows, rows per ``finished_date`` (both tables), per
``event_type`` (history), per ``status`` (workflows), distinct ``workflow_id``.
They must equal ``<work>/expected.json`` (tierflow_counts.py, main venv);
any difference exits 1.

Usage: python read_cold.py --work DIR --ray-address 127.0.0.1:PORT
       (RAY_AUTH_MODE / RAY_AUTH_TOKEN in the environment when the cluster has token auth)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import daft
import pyarrow as pa
import pyiceberg
import ray
from daft import col
from daft.catalog import Catalog
from daft.io import IOConfig, S3Config
from pyiceberg.catalog.sql import SqlCatalog

GROUPS = {"workflows": ("finished_date", "status"), "history": ("finished_date", "event_type")}


def group_counts(df: daft.DataFrame, column: str) -> dict[str, int]:
    """Rows per value of ``column``, computed by Daft (on the Ray cluster)."""
    out = df.groupby(column).agg(col("workflow_id").count().alias("n")).to_pydict()
    return {str(k): int(v) for k, v in zip(out[column], out["n"], strict=True)}


def main() -> int:
    """Read, count, compare; 0 when everything agrees."""
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--ray-address", required=True, help="GCS address, e.g. 127.0.0.1:6390")
    p.add_argument("--expected", help="tierflow's counts (default <work>/expected.json)")
    p.add_argument("--out", help="where to write Daft's counts (default <work>/daft.json)")
    args = p.parse_args()
    work = Path(args.work).resolve()
    conn = json.loads((work / "connection.json").read_text())
    expected = json.loads(Path(args.expected or work / "expected.json").read_text())
    s3 = conn["s3"]

    t0 = time.perf_counter()
    # Connect to the running cluster as a driver (not Ray Client), on loopback only.
    ray.init(address=args.ray_address, _node_ip_address="127.0.0.1", logging_level="warning")
    daft.set_runner_ray(address=args.ray_address, noop_if_initialized=True)
    # Without this a low-cardinality group-by on 2 cores takes ~15x longer (measured).
    daft.set_execution_config(shuffle_aggregation_default_partitions=2)
    nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    t_connect = time.perf_counter() - t0

    # The same catalog tierflow wrote through: pyiceberg's SQL catalog on catalog.sqlite,
    # warehouse and FileIO properties from connection.json.
    ice = SqlCatalog(
        conn["catalog_name"], uri=conn["catalog_uri"], warehouse=conn["warehouse"], **s3
    )
    io = IOConfig(
        s3=S3Config(
            endpoint_url=s3["s3.endpoint"],
            region_name=s3["s3.region"],
            key_id=s3["s3.access-key-id"],
            access_key=s3["s3.secret-access-key"],
            force_virtual_addressing=False,
            use_ssl=s3["s3.endpoint"].startswith("https"),
        )
    )
    catalog = Catalog.from_iceberg(ice)

    result: dict[str, Any] = {
        "engine": f"daft {daft.__version__} on ray {ray.__version__} (pyarrow {pa.__version__}, "
        f"pyiceberg {pyiceberg.__version__})",
        "ray_nodes": nodes,
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "seconds": {"connect": round(t_connect, 2)},
    }
    mismatches: list[str] = []
    for dataset, groups in GROUPS.items():
        t1 = time.perf_counter()
        table = ice.load_table(("tierflow", dataset))
        if table.metadata_location != conn["tables"][dataset]:
            print(f"note: {dataset} metadata moved on since populate: {table.metadata_location}")
        # Daft reads through the Daft catalog wrapper; io_config carries the endpoint
        # (Daft's own S3 client, not pyiceberg's FileIO, fetches the data files).
        df = daft.read_iceberg(table, io_config=io)
        df = df.select("workflow_id", *groups).collect()  # materialised once on the cluster
        got: dict[str, Any] = {
            "rows": len(df),
            "distinct_workflow_id": len(df.select("workflow_id").distinct().collect()),
        }
        for g in groups:
            got[f"by_{g}"] = dict(sorted(group_counts(df, g).items()))
        # Also through the Daft catalog object (the same SQL catalog, Daft's API).
        got["rows_via_daft_catalog"] = catalog.read_table(f"tierflow.{dataset}").count_rows()
        result["seconds"][dataset] = round(time.perf_counter() - t1, 2)
        result[dataset] = got
        want = expected[dataset]
        for key in ("rows", "distinct_workflow_id", *(f"by_{g}" for g in groups)):
            if got[key] != want[key]:
                mismatches.append(f"{dataset}.{key}: daft {got[key]} != tierflow {want[key]}")
        if got["rows_via_daft_catalog"] != want["rows"]:
            mismatches.append(f"{dataset}: Daft catalog read {got['rows_via_daft_catalog']} rows")
    result["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    result["mismatches"] = mismatches
    Path(args.out or work / "daft.json").write_text(json.dumps(result, indent=1))
    ray.shutdown()

    print(
        "daft:", json.dumps({k: result[k] for k in ("engine", "ray_nodes", "ray_cpus", "seconds")})
    )
    for dataset, groups in GROUPS.items():
        got, want = result[dataset], expected[dataset]
        print(
            f"{dataset}: rows daft={got['rows']} tierflow={want['rows']}; "
            f"distinct workflow_id daft={got['distinct_workflow_id']} "
            f"tierflow={want['distinct_workflow_id']}"
        )
        for g in groups:
            for k in sorted(set(got[f"by_{g}"]) | set(want[f"by_{g}"])):
                a, b = got[f"by_{g}"].get(k), want[f"by_{g}"].get(k)
                verdict = "ok" if a == b else "MISMATCH"
                print(f"  {g}={k:<20} daft={a!s:>7} tierflow={b!s:>7} {verdict}")
    if mismatches:
        print("MISMATCH:", *mismatches, sep="\n  ")
        return 1
    print("OK: Daft on Ray and tierflow agree on every count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
