"""What every ``tierflow`` subcommand module shares: the consoles, common options, runners.

:mod:`tierflow.cli` and :mod:`tierflow.cli_compliance` both build on it (neither imports
the other's commands, so ``python -m tierflow.cli`` imports each module once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from tierflow.hot.errors import TierflowError

if TYPE_CHECKING:
    from tierflow.facade import Tierflow
    from tierflow.hot.authoring import WorkflowDefinition

__all__ = [
    "AsJson",
    "CatalogUrl",
    "DataDir",
    "S3Endpoint",
    "StorageUrl",
    "console",
    "err_console",
    "run_command",
    "with_tf",
]

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

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


def run_command(make: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; a ``TierflowError`` prints its message and exits 2."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except TierflowError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


async def with_tf(
    data_dir: str | None,
    fn: Callable[[Tierflow], Awaitable[T]],
    workflows: Sequence[WorkflowDefinition] = (),
    scheduler: bool = False,
    **options: Any,
) -> T:
    """Open a ``Tierflow`` on ``data_dir``, call ``fn`` with it, and close it."""
    from tierflow.facade import Tierflow  # not at import: a refused statement needs none of it

    tf = Tierflow(data_dir, workflows, **options)
    try:
        if scheduler:
            await tf.start_scheduler()
        else:
            tf.open()
        return await fn(tf)
    finally:
        await tf.aclose()
