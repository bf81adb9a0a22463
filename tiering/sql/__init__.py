"""SQL across tiers: one read-only, confined DuckDB query over hot, warm and cold.

- :mod:`~tierflow.tiering.sql.engine` — :class:`TierSQL`: the cut, the files,
  the hot rows, the one retry rule;
- :mod:`~tierflow.tiering.sql.cut` — what one query reads, as of one index read;
  :mod:`~tierflow.tiering.sql.files` — the Parquet files of that cut;
  :mod:`~tierflow.tiering.sql.inputs` — placeholder values and ``as_of``;
- :mod:`~tierflow.tiering.sql.hot`, :mod:`~tierflow.tiering.sql.hot_cache` —
  hot instances as Arrow, and the cache of finished ones;
- :mod:`~tierflow.tiering.sql.plan` — which hot instances a query's plan touches;
- :mod:`~tierflow.tiering.sql.guard`, :mod:`~tierflow.tiering.sql.fence` — the
  statement allowlist and the kernel fence of the worker;
- :mod:`~tierflow.tiering.sql.pool`, :mod:`~tierflow.tiering.sql.worker` — the
  worker processes that run queries under hard time and memory limits;
  :mod:`~tierflow.tiering.sql.template` — the warm process they are forked from;
- :mod:`~tierflow.tiering.sql.result` — limits and results;
  :mod:`~tierflow.tiering.sql.output` — writing a result for the CLI.


Names are imported on first use: the worker process imports this package and
needs none of the engine's (pyiceberg among them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.tiering.sql.engine import QueryTimeout, TierSQL
    from tierflow.tiering.sql.guard import VIEWS
    from tierflow.tiering.sql.inputs import AsOf
    from tierflow.tiering.sql.result import SqlLimits, SqlResult, replace_limits

__all__ = ["VIEWS", "AsOf", "QueryTimeout", "SqlLimits", "SqlResult", "TierSQL", "replace_limits"]

_HOME = {
    "AsOf": "inputs",
    "QueryTimeout": "engine",
    "TierSQL": "engine",
    "VIEWS": "guard",
    "SqlLimits": "result",
    "SqlResult": "result",
    "replace_limits": "result",
}


__getattr__ = lazy_names(__name__, _HOME)
