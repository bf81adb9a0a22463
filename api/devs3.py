"""A local S3 server for development and the demo: moto on 127.0.0.1.

moto is a development dependency (``pip install -e '.[dev]'``), never needed
in production; this module imports it only when a server is started, and
says how to install it when it is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tierflow.hot.errors import TierflowError

__all__ = ["DUMMY_ACCESS_KEY", "DUMMY_REGION", "DUMMY_SECRET_KEY", "LocalS3"]

# moto accepts any key pair; these say plainly that they are not real.
DUMMY_ACCESS_KEY = "tierflow-dev"
DUMMY_SECRET_KEY = "tierflow-dev-secret"
DUMMY_REGION = "us-east-1"

_INSTALL_HINT = (
    "a local S3 server needs moto, a development dependency: "
    "pip install 'moto[server]>=5.2,<6' (or, in a checkout, pip install -e '.[dev]')"
)


@dataclass
class LocalS3:
    """moto's S3 API over HTTP on 127.0.0.1, with one bucket created.

    Args:
        bucket: The bucket to create (3 characters or more).
        port: TCP port; 0 picks a free one.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    bucket: str = "tierflow"
    port: int = 0
    _server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._server is None:
            raise TierflowError("the local S3 server is not running")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def storage_url(self) -> str:
        """Where tierflow keeps its warm and cold data on this server."""
        return f"s3://{self.bucket}/tierflow"

    def environment(self) -> dict[str, str]:
        """The variables that point tierflow (and the AWS SDKs) at this server."""
        return {
            "TIERFLOW_STORAGE_URL": self.storage_url,
            "TIERFLOW_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_REGION": DUMMY_REGION,
            # S3-compatible stores other than AWS: send checksums only when an API needs one.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
        }

    def start(self) -> LocalS3:
        """Start the server on 127.0.0.1 and create the bucket.

        Raises:
            TierflowError: moto is not installed (the message says how to install it),
                or the port is taken.
        """
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise TierflowError(_INSTALL_HINT) from exc
        # werkzeug logs every request at INFO: keep the terminal for what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise TierflowError(f"cannot listen on 127.0.0.1:{self.port}: {exc}") from exc
        self._server = server
        # The bucket is made with the plain S3 call (PUT /<bucket>): moto accepts it unsigned,
        # and the object-store SDKs stay in tierflow.warm.storage.
        import httpx

        response = httpx.put(f"{self.endpoint}/{self.bucket}", timeout=30)
        if response.status_code != 200:
            self.stop()
            raise TierflowError(
                f"creating bucket {self.bucket!r} failed: HTTP {response.status_code}"
            )
        return self

    def stop(self) -> None:
        """Stop the server (everything it held is gone)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
