"""``tierflow serve``: the HTTP API of an application's workflows, under uvicorn.

By default the server also runs the workflows (one command is enough to try
tierflow over HTTP). With ``--no-worker`` it runs none: it opens the data
directory, answers the API and queues what it is asked to start, and
``tierflow worker`` processes on the same data directory run the instances
(signals, cancels and terminations reach whichever worker runs one).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli_common import EXIT_REFUSED, DataDir, err_console, exit_code, load_workflows
from tierflow.hot.errors import TierflowError

if TYPE_CHECKING:
    from tierflow.facade import Tierflow

__all__ = ["MetricsServer", "check_host", "load_target", "register"]


def load_target(spec: str, data_dir: str | None) -> Tierflow:
    """The ``Tierflow`` that ``--app`` names.

    Args:
        spec: ``module:attr`` where ``attr`` is a ``Tierflow`` (served as it is
            configured) or a list of workflows; or ``module`` alone, every workflow
            it defines.
        data_dir: The data directory for a list of workflows (a ``Tierflow`` has its own).

    Raises:
        typer.BadParameter: The module cannot be imported, or ``attr`` is missing or
            neither a ``Tierflow`` nor a list of workflows.
    """
    from tierflow.facade import Tierflow
    from tierflow.hot.authoring import WorkflowDefinition

    module_name, sep, attr = spec.partition(":")
    if not sep:
        return Tierflow(data_dir, load_workflows(module_name))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = getattr(module, attr, None)
    if isinstance(target, Tierflow):
        return target
    if (
        isinstance(target, list | tuple)
        and target
        and all(isinstance(w, WorkflowDefinition) for w in target)
    ):
        return Tierflow(data_dir, list(target))
    raise typer.BadParameter(
        f"{spec!r} must name a Tierflow or a non-empty list of @workflow functions, "
        f"got {type(target).__name__}"
    )


def serve(
    app_spec: Annotated[
        str,
        typer.Option(
            "--app",
            "-a",
            help="module:attr, attr a Tierflow or a list of workflows; or a module (all its "
            "workflows)",
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (beyond loopback needs API keys)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="Run no workflows here: `tierflow worker`s on the same data directory do",
        ),
    ] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (off: it costs throughput)")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Serve the HTTP API (/v1, /healthz, /readyz, /metrics) until interrupted.

    Refuses (exit 4) to listen beyond loopback when no API keys are configured
    (TIERFLOW_API_KEYS_FILE or TIERFLOW_API_KEYS).
    """
    import uvicorn
    from tierflow.http import create_app

    check_host(host)
    try:
        tf = load_target(app_spec, data_dir)
        app = create_app(tf, engine="open" if no_worker else "run")
    except TierflowError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(exit_code(exc)) from None
    mode = "API only: workers run the workflows" if no_worker else "API and workflows"
    err_console.print(f"tierflow serving {tf.data_dir} on http://{host}:{port} ({mode})")
    # loop "auto": uvloop (a dependency); http "auto": h11 (see pyproject on httptools).
    config = uvicorn.Config(
        app, host=host, port=port, access_log=access_log, log_level="info", lifespan="on"
    )
    uvicorn.Server(config).run()


def check_host(host: str) -> None:
    """Exit 4 (refused) if ``host`` is beyond loopback and no API keys are configured."""
    from tierflow.http import InsecureBindError, check_bind

    try:
        check_bind(host)
    except InsecureBindError as exc:
        err_console.print(f"[red]refused:[/red] {exc.message}", highlight=False)
        raise typer.Exit(EXIT_REFUSED) from None


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of a ``tierflow worker``, beside its engine.

    Built before the engine opens (its step-latency subscriber must see every step), served
    on the worker's own event loop by :meth:`serve`, stopped by :meth:`stop`. The same rule
    as ``serve`` applies: beyond loopback only with API keys, and then scraping needs a key
    with the ``read`` scope.

    Args:
        tf: The worker's tierflow, not opened yet.
        host: Address to listen on.
        port: Port to listen on.

    Raises:
        InsecureBindError: ``host`` is not loopback and no API keys are configured.
        InvalidArgument: The API keys are malformed or unreadable.
    """

    def __init__(self, tf: Tierflow, host: str, port: int) -> None:
        import uvicorn
        from tierflow.http import check_bind, create_app

        check_bind(host)
        app = create_app(tf, engine="external", api=False)
        config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or a SIGINT/SIGTERM, which uvicorn passes on when done)."""
        await self._server.serve()

    def stop(self) -> None:
        """Ask the server to finish (it completes the requests in flight)."""
        self._server.should_exit = True


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``tierflow`` app."""
    app.command()(serve)
