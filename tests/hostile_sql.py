"""Hostile SQL, shared by every test that checks confinement (Python API, CLI, HTTP).

``PROBES`` read what they must not (settings, files, views' text) or change the
session; :func:`statements_against` wraps writes of one target in every way
DuckDB's parser accepts (and some it does not). Each must be refused, and
:func:`archive` (the sha256 of every object of a store) must not change.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["PROBES", "archive", "statements_against"]


def archive(store: Any) -> dict[str, str]:
    """sha256 of every object of the store (warm and cold, data and metadata)."""
    return {k: hashlib.sha256(store.get(k)).hexdigest() for k, _ in store.list("")}


def statements_against(target: str) -> list[str]:
    """Writes of ``target``, wrapped every way DuckDB's parser accepts (and some it does not)."""
    copy = f"COPY (SELECT 42 AS x) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)"
    writes = [
        copy,
        f"COPY (SELECT 1) TO '{target}' (FORMAT csv)",
        "INSERT INTO history SELECT * FROM history",
        "UPDATE history SET payload = 'x'",
        "DELETE FROM workflows",
        f"ATTACH '{target}' AS x",
        f"EXPORT DATABASE '{target}'",
    ]
    out = []
    for w in writes:
        quoted = w.replace("'", "''")
        twice = quoted.replace("'", "''")
        out += [
            w,
            f"WITH x AS ({w}) SELECT * FROM x",
            f"WITH a AS (WITH b AS ({w}) SELECT * FROM b) SELECT * FROM a",
            f"SELECT * FROM ({w})",
            f"SELECT (SELECT count(*) FROM ({w}))",
            f"SELECT * FROM json_execute_serialized_sql(json_serialize_sql('{quoted}'))",
            f"SELECT json_execute_serialized_sql(json_serialize_sql('{quoted}'))",
            f"SELECT * FROM query('{quoted}')",
            f"SELECT * FROM query_table('{quoted}')",
            "SELECT * FROM query('SELECT * FROM json_execute_serialized_sql("
            f"json_serialize_sql(''{twice}''))')",
            f"FROM workflows, (WITH x AS ({w}) SELECT * FROM x)",
        ]
    return out


PROBES = [
    "SELECT current_setting('allowed_paths')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_views()",
    "SELECT sql FROM duckdb_views",
    "SELECT * FROM information_schema.tables",
    "SELECT pg_get_viewdef('history')",
    "SELECT * FROM test_all_types()",
    "SELECT * FROM read_parquet('/etc/hostname')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT getvariable('x')",
    "SELECT * FROM main.history",
    "SHOW TABLES",
    "WITH duckdb_settings AS (SELECT 1) SELECT * FROM duckdb_settings",
    "UPDATE EXTENSIONS",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "PRAGMA threads=1",
    "CALL pragma_version()",
    "SELECT 1; SELECT 2",
]
