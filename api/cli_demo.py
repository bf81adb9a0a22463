"""``tierflow demo`` and ``tierflow dev-s3``: trying tierflow without any infrastructure.

Registered on the main app by :mod:`tierflow.cli`.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from tierflow.cli_common import DataDir, console
from tierflow.cli_common import run_command as _run

__all__ = ["demo", "dev_s3"]


def demo(
    data_dir: DataDir = None,
    s3: Annotated[
        bool, typer.Option("--s3", help="keep warm and cold on a local moto S3 server")
    ] = False,
    size: Annotated[int, typer.Option("--size", hidden=True, min=20)] = 2000,
) -> None:
    """Run the end-to-end demo: thousands of workflows, every tier, SQL, replay, erasure."""
    from tierflow.demo import run_demo

    _run(lambda: run_demo(data_dir, s3=s3, size=size, console=console))


def dev_s3(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0: any free)")] = 9000,
    bucket: Annotated[str, typer.Option("--bucket", help="bucket to create")] = "tierflow",
) -> None:
    """Run a local S3 server (moto, on 127.0.0.1) for development until Ctrl-C."""
    from tierflow.devs3 import LocalS3

    async def serve() -> None:
        server = LocalS3(bucket=bucket, port=port).start()
        try:
            console.print(
                f"S3 (moto) on {server.endpoint}, bucket {bucket!r}; its data lives in memory "
                "and is gone when it stops. In another shell:"
            )
            for name, value in server.environment().items():
                print(f"export {name}={value}", flush=True)
            console.print("Ctrl-C to stop.")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(0.2):
                pass
        finally:
            server.stop()
            console.print("stopped")

    _run(serve)
