"""The statement check of SQL across tiers: only reads of tierflow's views get through.

Runs in the SQL worker (:mod:`tierflow.tiering.sql.worker`), under the
query's time limit. A statement type alone is no fence (DuckDB runs a
``COPY`` inside a ``WITH`` of a ``SELECT``), so the check reads the
statement's whole parsed tree (``json_serialize_sql``) and allows only:

- query nodes: ``SELECT``, set operations (``UNION`` ...), CTEs and
  recursive CTEs; anything else (a ``COPY``, ``INSERT`` ... node, any
  statement info) is refused wherever it sits;
- table references: tierflow's views (:data:`VIEWS`) and the query's own
  CTEs, by plain name (no schema, catalog, file name or ``AT`` clause);
  joins, subqueries, ``VALUES``, ``DESCRIBE``/``SUMMARIZE`` of a query or a
  view; the table functions :data:`TABLE_FUNCTIONS` and nothing else (no
  ``read_*``, ``glob``, ``query``, ``json_execute_serialized_sql``,
  ``duckdb_*``, ``pragma_*``, ``parquet_*`` ...);
- functions: DuckDB's built-in scalar, aggregate and window functions and
  macros, minus those that read configuration, the catalog, logs or SQL
  text (:func:`denied_function`), called without a schema.

What passes still runs in a sandbox that can open no file but the cut's
Parquet files, in a process that cannot write any file (the kernel fence,
:mod:`tierflow.tiering.sql.fence`), with hard time and memory limits.
"""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb
from tierflow.hot.errors import InvalidArgument

__all__ = [
    "TABLE_FUNCTIONS",
    "VIEWS",
    "Checker",
    "check_kind",
    "denied_function",
    "first_line",
    "scrub",
    "statement_kind",
]

VIEWS: frozenset[str] = frozenset(
    f"{prefix}{d}" for prefix in ("", "hot_", "warm_", "cold_") for d in ("workflows", "history")
) | {"audit"}
"""Every view a query can read (``audit``: the compliance audit log)."""

TABLE_FUNCTIONS: frozenset[str] = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree"}
)
"""Table functions a query may call: they compute from their arguments and read nothing."""

_DENIED = re.compile(
    r"^(duckdb_.*|pragma_.*|read_.*|parquet_.*|glob|query|query_table|sniff_csv|test_.*"
    r"|current_setting|getvariable|json_(execute_serialized_sql|serialize_sql|deserialize_sql"
    r"|serialize_plan)|write_log|parse_duckdb_log_message|which_secret|get_block_size"
    r"|pg_(?!typeof$|size_pretty$).*|(col|obj|shobj)_description|has_.*_privilege"
    r"|inet_.*|format_pg_type|format_type|map_to_pg_oid|map_type_id_to_pg_oid)$"
)
# Query nodes a SELECT may contain.
_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "CTE_NODE", "RECURSIVE_CTE_NODE"})
_JOINS = frozenset({"JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST"})
_MAX_NODES = 1_000_000

# Statement types, as they are called in refusals.
_NAMES = {
    "COPY": "COPY (file export)",
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
    "LOAD": "INSTALL/LOAD of an extension",
    "SET": "SET/PRAGMA/USE (configuration)",
    "VARIABLE_SET": "SET VARIABLE",
    "PRAGMA": "PRAGMA",
    "CREATE": "DDL (CREATE)",
    "CREATE_FUNC": "DDL (CREATE FUNCTION)",
    "DROP": "DDL (DROP)",
    "ALTER": "DDL (ALTER)",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "EXPORT": "EXPORT DATABASE",
    "CALL": "CALL (table function call or CHECKPOINT)",
    "EXPLAIN": "EXPLAIN",
    "TRANSACTION": "a transaction statement",
}


def denied_function(name: str) -> bool:
    """Whether a built-in function reads configuration, the catalog, logs, files or SQL text."""
    return bool(_DENIED.match(name.lower()))


def statement_kind(query: str) -> str:
    """The type of the one statement in ``query`` (``"SELECT"`` ...), parsed, never run.

    Raises:
        InvalidArgument: Not a string, empty, unparsable, or not exactly one statement.
    """
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("SQL refused: empty query (expected one SELECT statement)")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidArgument(f"SQL refused: cannot parse it: {scrub(first_line(exc))}") from None
    except (ValueError, RuntimeError) as exc:
        raise InvalidArgument(f"SQL refused: unsupported statement ({first_line(exc)})") from None
    if len(statements) != 1:
        raise InvalidArgument(
            f"SQL refused: {len(statements)} statements; send exactly one SELECT statement"
        )
    try:
        kind = statements[0].type
    except ValueError as exc:  # e.g. UPDATE EXTENSIONS: a type the Python API cannot name
        raise InvalidArgument(f"SQL refused: unsupported statement ({first_line(exc)})") from None
    return str(kind).rsplit(".", 1)[-1]


def check_kind(query: str) -> None:
    """Refuse a text that is not exactly one ``SELECT`` statement (parsed, never run).

    The cheap first look: the engine uses it to refuse ``COPY``, ``SET`` ...
    without starting a worker; the worker's :class:`Checker` reads the tree.

    Raises:
        InvalidArgument: The message names the statement type.
    """
    kind = statement_kind(query)
    if kind != "SELECT":
        what = _NAMES.get(kind, kind)
        raise InvalidArgument(f"SQL refused: {what} is not allowed; only SELECT/WITH queries are")


class Checker:
    """Checks statements against the allowlist; owns a parse-only DuckDB connection.

    The connection holds no data and runs nothing but ``json_serialize_sql``
    (which parses) and, once, the list of built-in functions.
    """

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
        rows = self._con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'window', 'macro')"
        ).fetchall()
        self.functions = frozenset(r[0] for r in rows if not denied_function(r[0]))
        # Names a CTE may not take: one could shadow a catalog view in one scope only.
        catalog = self._con.execute(
            "SELECT lower(view_name) FROM duckdb_views() UNION SELECT lower(function_name) "
            "FROM duckdb_functions() WHERE function_type IN ('table', 'table_macro')"
        ).fetchall()
        self._reserved = frozenset(r[0] for r in catalog)
        self._con.execute("SET enable_external_access=false")
        self._con.execute("SET lock_configuration=true")

    def close(self) -> None:
        """Close the parse-only connection."""
        self._con.close()

    def check(self, query: str) -> None:
        """Refuse anything but a read of tierflow's views (see the module docstring).

        Raises:
            InvalidArgument: The message names what was refused.
        """
        check_kind(query)
        text = self._con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
        try:
            tree = json.loads(text[0] if text else "null")
        except RecursionError:
            raise InvalidArgument("SQL refused: the query is nested too deeply") from None
        if not isinstance(tree, dict) or tree.get("error"):
            why = tree.get("error_message") if isinstance(tree, dict) else None
            if why and ("allocat" in why or "Out of Memory" in why):
                raise InvalidArgument(
                    f"SQL refused: the query needs more than the memory limit to parse: {why}"
                )
            raise InvalidArgument(f"SQL refused: not a plain SELECT ({why or 'unreadable'})")
        statements = tree.get("statements") or []
        if len(statements) != 1:
            raise InvalidArgument("SQL refused: send exactly one SELECT statement")
        self._walk(statements[0])

    def _walk(self, root: Any) -> None:
        ctes = _cte_names(root)
        bad = sorted(ctes & self._reserved)
        if bad:
            raise InvalidArgument(f"SQL refused: a CTE may not be named {bad[0]!r}")
        names = VIEWS | ctes
        stack = [root]
        seen = 0
        while stack:
            item = stack.pop()
            seen += 1
            if seen > _MAX_NODES:
                raise InvalidArgument("SQL refused: the query is too large")
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            if "info_type" in item:
                raise InvalidArgument(
                    f"SQL refused: {item['info_type']} inside a query; only SELECT is allowed"
                )
            kind = item.get("type")
            if "class" in item:
                if item["class"] in ("FUNCTION", "WINDOW"):
                    self._function(item)
            elif isinstance(kind, str) and kind.endswith("_NODE"):
                if kind not in _NODES:
                    raise InvalidArgument(
                        f"SQL refused: {kind.removesuffix('_NODE').replace('_', ' ')} inside a "
                        "query; only SELECT is allowed"
                    )
            elif isinstance(kind, str) and "query_location" in item and "alias" in item:
                item = self._table_ref(item, names)
            stack.extend(item.values())

    def _function(self, node: dict[str, Any]) -> None:
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog"):
            raise InvalidArgument(f"SQL refused: call {name}() without a schema")
        if name not in self.functions:
            raise InvalidArgument(f"SQL refused: function {name}() is not available here")

    def _table_ref(self, ref: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
        """Check one table reference; return what to walk below it."""
        kind = ref["type"]
        if kind == "BASE_TABLE":
            name = str(ref.get("table_name", ""))
            if ref.get("schema_name") or ref.get("catalog_name") or ref.get("at_clause"):
                raise InvalidArgument(f"SQL refused: read {name!r} by its plain name")
            if name.lower() not in names:
                raise InvalidArgument(
                    f"SQL refused: {name!r} is not a tierflow view; read {', '.join(sorted(VIEWS))}"
                )
            return ref
        if kind == "TABLE_FUNCTION":
            fn = ref.get("function") or {}
            name = str(fn.get("function_name", "")).lower()
            if name not in TABLE_FUNCTIONS or fn.get("schema") or fn.get("catalog"):
                raise InvalidArgument(f"SQL refused: table function {name}() is not available")
            # Walk the arguments, not the call itself (not a scalar function).
            return {"arguments": fn.get("arguments"), "sample": ref.get("sample")}
        if kind == "SHOW_REF":
            if ref.get("query") is None and str(ref.get("table_name", "")).lower() not in VIEWS:
                raise InvalidArgument("SQL refused: SHOW lists the catalog; DESCRIBE a view")
            return ref
        if kind in _JOINS or kind == "PIVOT":
            return ref
        raise InvalidArgument(f"SQL refused: {kind} is not allowed in a query")


def _cte_names(root: Any) -> frozenset[str]:
    out: set[str] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            cte_map = item.get("cte_map")
            if isinstance(cte_map, dict):
                for entry in cte_map.get("map") or []:
                    if isinstance(entry, dict):
                        out.add(str(entry.get("key", "")).lower())
            stack.extend(item.values())
    return frozenset(out)


def first_line(exc: Any) -> str:
    """The first line of an error's text (DuckDB adds hints and links below it)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_PATH = re.compile(r"(?<![\w.>])/(?:[^\s/'\"]+/)+[^\s/'\"]*")


def scrub(text: str, roots: tuple[str, ...] = ()) -> str:
    """``text`` without absolute paths: archive roots named, any other path shown as ``<path>``."""
    for root in sorted((r for r in roots if r), key=len, reverse=True):
        text = text.replace(root, "<archive>")
    return _PATH.sub("<path>", text)
