"""What every ``tierflow`` subcommand module shares: consoles, options, exit codes, runners.

:mod:`tierflow.cli` and the ``cli_*`` modules build on it (none imports another's
commands, so ``python -m tierflow.cli`` imports each module once).

Exit codes, the same for every command:

======  ==============================================================================
code    meaning
======  ==============================================================================
0       done
1       failed (a workflow failed, replay diverged, an export did not verify, storage)
2       usage: a bad option or argument, input tierflow refuses (``InvalidArgument``)
3       not found: no workflow with that id, no object at that key
4       refused or held: the workflow is under legal hold, still running, already
        finished, or already exists
======  ==============================================================================
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from tierflow.hot.errors import (
    InvalidArgument,
    TierflowError,
    WorkflowAlreadyExists,
    WorkflowAlreadyFinished,
    WorkflowOnHold,
    WorkflowStillRunning,
)

if TYPE_CHECKING:
    from tierflow.facade import Tierflow
    from tierflow.hot.authoring import WorkflowDefinition

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "FROM_OPTIONS",
    "AppOpt",
    "AsJson",
    "CatalogUrl",
    "DataDir",
    "S3Endpoint",
    "StorageUrl",
    "Where",
    "console",
    "err_console",
    "exit_code",
    "load_workflows",
    "parse_attribute",
    "parse_json",
    "print_table",
    "run_command",
    "storage_options",
    "with_tf",
]

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4

DataDir = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="TIERFLOW_DATA_DIR",
        help="Data directory [default: ./tierflow-data]",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StorageUrl = Annotated[
    str | None,
    typer.Option(
        "--storage-url", envvar="TIERFLOW_STORAGE_URL", help="s3://bucket/prefix or file:///path"
    ),
]
S3Endpoint = Annotated[str | None, typer.Option("--s3-endpoint", envvar="TIERFLOW_S3_ENDPOINT")]
CatalogUrl = Annotated[
    str | None,
    typer.Option(
        "--catalog-url",
        envvar="TIERFLOW_CATALOG_URL",
        help="Iceberg catalog: sqlite:///..., postgresql+psycopg://..., http(s)://... (REST)",
    ),
]
AppOpt = Annotated[
    str, typer.Option("--app", "-a", help="Module defining the workflows, e.g. mypkg.flows")
]


@dataclass(frozen=True)
class Where:
    """Where a command's data lives: the data directory and the warm and cold storage.

    Attributes:
        data_dir: ``--data-dir`` (``TIERFLOW_DATA_DIR``).
        storage_url: ``--storage-url`` (``TIERFLOW_STORAGE_URL``).
        s3_endpoint: ``--s3-endpoint`` (``TIERFLOW_S3_ENDPOINT``).
        catalog_url: ``--catalog-url`` (``TIERFLOW_CATALOG_URL``).
    """

    data_dir: str | None = None
    storage_url: str | None = None
    s3_endpoint: str | None = None
    catalog_url: str | None = None

    def options(self) -> dict[str, Any]:
        """The storage keywords of ``Tierflow(...)`` (everything but the data directory)."""
        return {
            "storage_url": self.storage_url,
            "s3_endpoint": self.s3_endpoint,
            "catalog_url": self.catalog_url,
        }


FROM_OPTIONS = Where()
"""The default of a command's ``where`` parameter: :func:`storage_options` fills it in."""

_WHERE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("data_dir", DataDir),
    ("storage_url", StorageUrl),
    ("s3_endpoint", S3Endpoint),
    ("catalog_url", CatalogUrl),
)


def storage_options(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a command ``--data-dir``, ``--storage-url``, ``--s3-endpoint`` and ``--catalog-url``.

    The command declares one parameter ``where: Where = FROM_OPTIONS`` instead of the four;
    typer sees the four (appended to its other parameters) and the command receives them
    as one :class:`Where`. One declaration of the four options serves every command that
    reaches the warm and cold storage.
    """
    signature = inspect.signature(fn, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "where"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=alias)
        for name, alias in _WHERE_OPTIONS
    ]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> T:
        where = Where(**{name: kwargs.pop(name, None) for name, _ in _WHERE_OPTIONS})
        return fn(*args, where=where, **kwargs)

    params = [*kept, *added]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    # typer reads the annotations too; give it the evaluated ones of the new signature.
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def exit_code(exc: TierflowError) -> int:
    """The exit code of a command that ended with ``exc`` (see the module's table)."""
    if isinstance(exc, LookupError):  # WorkflowNotFound, ObjectNotFound
        return EXIT_NOT_FOUND
    if isinstance(exc, InvalidArgument):
        return EXIT_USAGE
    if isinstance(
        exc, WorkflowOnHold | WorkflowStillRunning | WorkflowAlreadyFinished | WorkflowAlreadyExists
    ):
        return EXIT_REFUSED
    return EXIT_FAILURE


def run_command(make: Callable[[], Awaitable[T]], as_json: bool = False) -> T:
    """Run a command's coroutine; a ``TierflowError`` exits with its code (:func:`exit_code`).

    The message goes to stderr: as ``{"error": {"code", "message"}}`` with ``--json``
    (``code`` is the exception's class name), else as text.
    """
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except TierflowError as exc:
        if as_json:
            error = {"code": type(exc).__name__, "message": exc.message}
            sys.stderr.write(json.dumps({"error": error}) + "\n")
        else:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(exit_code(exc)) from None


async def with_tf(
    data_dir: str | None,
    fn: Callable[[Tierflow], Awaitable[T]],
    workflows: Sequence[WorkflowDefinition] = (),
    scheduler: bool = False,
    prepare: Callable[[Tierflow], object] | None = None,
    **options: Any,
) -> T:
    """Open a ``Tierflow`` on ``data_dir``, call ``fn`` with it, and close it.

    ``prepare(tf)`` runs before the engine opens (event-stream subscribers must be
    registered by then to see every event).
    """
    from tierflow.facade import Tierflow  # not at import: a refused statement needs none of it

    tf = Tierflow(data_dir, workflows, **options)
    try:
        if prepare is not None:
            prepare(tf)
        if scheduler:
            await tf.start_scheduler()
        else:
            tf.open()
        return await fn(tf)
    finally:
        await tf.aclose()


def load_workflows(module_name: str) -> list[WorkflowDefinition]:
    """Import ``module_name`` and return every workflow it defines (a usage error if none)."""
    from tierflow.hot.authoring import WorkflowDefinition

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    found = [v for v in vars(module).values() if isinstance(v, WorkflowDefinition)]
    if not found:
        raise typer.BadParameter(f"module {module_name!r} defines no @workflow functions")
    return found


def parse_attribute(text: str, option: str = "--attribute") -> dict[str, Any]:
    """``NAME=VALUE`` from the command line as ``{name: value}``.

    VALUE is read as JSON when it is a number, ``true``, ``false`` or ``null`` (so
    ``code=5`` is the number 5 and ``code='"5"'`` the text 5); anything else is text.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"{option} must be NAME=VALUE, got {text!r}")
    value: Any = raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    if parsed is None or isinstance(parsed, bool | int | float | str):
        value = parsed
    return {name: value}


def parse_json(text: str, option: str) -> Any:
    """``text`` read as JSON; a usage error naming ``option`` if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{option} is not JSON: {exc}") from exc


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], ids: Sequence[str] = ()
) -> None:
    """Print a table that fits the terminal by folding cells, never by cutting an identifier.

    Args:
        columns: The column headers.
        rows: The cells, row by row.
        ids: The headers of columns that hold identifiers: they keep the width of their
            longest cell (a cut id is useless: it cannot be pasted into the next command);
            the other columns fold onto more lines when the terminal is narrow. Ids wider
            than the terminal make the table wider than the terminal: it wraps there, the
            ids stay whole.
    """
    cells = [list(row) for row in rows]
    table = Table()
    needed = 1  # the left border; each column adds its padding and a border (3)
    for i, name in enumerate(columns):
        if name in ids:
            width = max([len(name), *(len(row[i]) for row in cells)])
            table.add_column(name, no_wrap=True, min_width=width)
            needed += width + 3
        else:
            table.add_column(name, overflow="fold")
            needed += 1 + 3
    for row in cells:
        table.add_row(*row)
    console.print(table, width=max(console.width, needed), crop=False)
