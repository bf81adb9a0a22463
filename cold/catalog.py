"""Where the cold tables are found: the Iceberg catalog, and opening the tables through it.

By default the catalog is pyiceberg's SQL catalog in ``<data_dir>/catalog.sqlite``;
any pyiceberg catalog works by URL (``TIERFLOW_CATALOG_URL``):

- ``sqlite:///abs/path.sqlite``, ``postgresql+psycopg://user@host/db``: a SQL catalog;
- ``http://...`` / ``https://...``: a REST catalog.

Further catalog properties come from ``TIERFLOW_CATALOG_<NAME>`` variables, named the
way pyiceberg names its own (``__`` becomes ``.``, ``_`` becomes ``-``, lowercased):
``TIERFLOW_CATALOG_TOKEN`` is ``token``, ``TIERFLOW_CATALOG_S3__SIGNER_URI`` is
``s3.signer-uri``.

The warehouse is ``<storage URL>/cold``, on the same store as warm, and the
FileIO properties (region, endpoint, keys) come from the store's settings
(:meth:`tierflow.warm.storage.StorageSettings.iceberg_io_properties`), so warm
and cold reach storage the same way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table
from tierflow.cold import tables
from tierflow.cold.fileio import DURABLE_FILE_IO, OBJECT_FILE_IO
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.warm.storage import ObjectStore

__all__ = ["CatalogSettings", "ColdTables", "redact_url"]

_ENV_PREFIX = "TIERFLOW_CATALOG_"
_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "http", "https")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


@dataclass(frozen=True)
class CatalogSettings:
    """How to reach the Iceberg catalog.

    Attributes:
        url: ``sqlite:///...``, ``postgresql+psycopg://...`` or ``http(s)://...``.
        name: The catalog's name (pyiceberg's, and the SQL catalog's ``catalog_name``).
        properties: Extra pyiceberg catalog properties (may hold secrets: never logged).
    """

    url: str
    name: str = "tierflow"
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in _SCHEMES:
            raise InvalidArgument(
                f"catalog URL {redact_url(self.url)!r}: expected sqlite:///path, "
                "postgresql+psycopg://... or http(s)://... (a REST catalog)"
            )

    @property
    def is_rest(self) -> bool:
        """True for a REST catalog."""
        return urlsplit(self.url).scheme in ("http", "https")

    @classmethod
    def from_env(
        cls, url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None
    ) -> CatalogSettings:
        """Resolve the catalog from an argument, ``TIERFLOW_CATALOG_URL`` or the default.

        Args:
            url: Catalog URL; wins over the environment.
            data_dir: Default location of ``catalog.sqlite`` when no URL is set.

        Raises:
            InvalidArgument: No URL and no data directory, or a malformed URL.
        """
        env = os.environ
        resolved = url or env.get(f"{_ENV_PREFIX}URL") or None
        if resolved is None:
            if data_dir is None:
                raise InvalidArgument("no catalog: pass catalog_url= or set TIERFLOW_CATALOG_URL")
            resolved = f"sqlite:///{Path(data_dir).resolve() / 'catalog.sqlite'}"
        props = {
            _property_name(k[len(_ENV_PREFIX) :]): v
            for k, v in env.items()
            if k.startswith(_ENV_PREFIX) and k != f"{_ENV_PREFIX}URL"
        }
        return cls(url=resolved, properties=props)

    def pyiceberg_properties(self, store: ObjectStore) -> dict[str, str]:
        """Everything ``load_catalog`` needs: type, uri, warehouse, FileIO and extra properties.

        The result holds secrets: pass it to pyiceberg, never print it.
        """
        props: dict[str, str] = {
            "type": "rest" if self.is_rest else "sql",
            "uri": self.url,
            "warehouse": warehouse(store),
        }
        props.update(store.settings.iceberg_io_properties())
        # Local warehouse: every file fsync'd before the catalog points at it. S3: each file
        # one PUT, and no HEAD for the length of a file just written.
        props["py-io-impl"] = OBJECT_FILE_IO if store.settings.is_s3 else DURABLE_FILE_IO
        props.update(self.properties)
        return props


def _property_name(env_suffix: str) -> str:
    return env_suffix.lower().replace("__", ".").replace("_", "-")


def warehouse(store: ObjectStore) -> str:
    """The Iceberg warehouse location: ``<store URL>/cold``."""
    return f"{store.url.rstrip('/')}/cold"


class ColdTables:
    """The two cold tables, opened through the catalog (lazily, once per process).

    Args:
        catalog: How to reach the catalog.
        store: The object store the warehouse lives in (warm's store).
        layout: File sizes and row groups of newly created tables.
    """

    def __init__(
        self,
        catalog: CatalogSettings,
        store: ObjectStore,
        layout: tables.ColdLayout | None = None,
    ) -> None:
        self.settings = catalog
        self.store = store
        self.layout = layout or tables.ColdLayout()
        self._catalog: Catalog | None = None
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ColdTables(catalog={redact_url(self.settings.url)!r}, store={self.store.url!r})"

    @property
    def where(self) -> str:
        """The catalog URL, safe to print."""
        return redact_url(self.settings.url)

    def _error(self, what: str, exc: BaseException) -> StorageError:
        text = str(exc)
        for secret in (self.settings.url, *self.settings.properties.values()):
            if secret and len(secret) > 3 and secret in text:
                text = text.replace(secret, "***")
        return StorageError(f"Iceberg catalog {self.where}: {what}: {text}", url=self.where)

    @property
    def catalog(self) -> Catalog:
        """The pyiceberg catalog (connected on first use).

        Raises:
            StorageError: The catalog cannot be loaded or reached.
        """
        with self._lock:
            if self._catalog is None:
                props = self.settings.pyiceberg_properties(self.store)
                self._check_sqlite_parent()
                try:
                    self._catalog = load_catalog(self.settings.name, **props)
                except Exception as exc:  # pyiceberg, SQLAlchemy and HTTP errors alike
                    raise self._error("cannot open the catalog", exc) from exc
            return self._catalog

    def _check_sqlite_parent(self) -> None:
        # SQLAlchemy's error for a missing directory is "unable to open database file";
        # say which directory instead.
        parts = urlsplit(self.settings.url)
        if parts.scheme != "sqlite":
            return
        # SQLAlchemy's rule: what follows "sqlite:///" is the path ("////abs" is absolute).
        path = Path(parts.path[1:] or ".")
        if not path.parent.is_dir():
            raise StorageError(
                f"Iceberg catalog {self.where}: directory {path.parent} does not exist",
                url=self.where,
            )

    def check(self) -> None:
        """Verify that the catalog answers and the store is usable, before anything moves.

        Raises:
            StorageError: The catalog or the store is missing or unreachable.
        """
        self.store.check()
        try:
            self.catalog.list_namespaces()
        except StorageError:
            raise
        except Exception as exc:
            raise self._error("not reachable", exc) from exc

    def exists(self) -> bool:
        """True when both tables exist in the catalog.

        Raises:
            StorageError: The catalog cannot be reached.
        """
        try:
            return all(self.catalog.table_exists(tables.identifier(d)) for d in tables.DATASETS)
        except StorageError:
            raise
        except Exception as exc:
            raise self._error("cannot look up the tables", exc) from exc

    def table(self, dataset: str, *, create: bool = False, refresh: bool = False) -> Table:
        """Return one cold table, loaded through the catalog (cached; ``refresh`` reloads it).

        Args:
            dataset: "workflows" or "history".
            create: Create the namespace and table if missing (the load from warm does).
            refresh: Reload the table's current metadata from the catalog.

        Raises:
            StorageError: The table is missing (and ``create`` is False) or the catalog fails.
        """
        ident = tables.identifier(dataset)
        cached = self._tables.get(dataset)
        if cached is not None and not refresh:
            return cached
        try:
            if cached is not None:
                table = cached.refresh()
            else:
                try:
                    table = self.catalog.load_table(ident)
                except NoSuchTableError:
                    if not create:
                        raise
                    # Load first: pyiceberg's create_table_if_not_exists writes a metadata
                    # file before it finds the table exists, leaving an orphan each time.
                    table = self._create(dataset)
        except NoSuchTableError as exc:
            raise StorageError(
                f"cold table {'.'.join(ident)} is not in the Iceberg catalog {self.where} "
                "(set TIERFLOW_CATALOG_URL to the catalog the archive was written with)",
                url=self.where,
            ) from exc
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(f"cannot open table {'.'.join(ident)}", exc) from exc
        self._tables[dataset] = table
        return table

    def _create(self, dataset: str) -> Table:
        ident = tables.identifier(dataset)
        self.catalog.create_namespace_if_not_exists(tables.NAMESPACE)
        try:
            return self.catalog.create_table(
                ident,
                schema=tables.iceberg_schema(dataset),
                partition_spec=tables.partition_spec(dataset),
                sort_order=tables.sort_order(dataset),
                properties=tables.table_properties(dataset, self.layout),
            )
        except TableAlreadyExistsError:  # another process created it meanwhile
            return self.catalog.load_table(ident)

    def tables(self, *, create: bool = False, refresh: bool = False) -> dict[str, Table]:
        """Both tables, by dataset name."""
        return {d: self.table(d, create=create, refresh=refresh) for d in tables.DATASETS}

    def close(self) -> None:
        """Drop cached tables and the catalog connection."""
        with self._lock:
            self._tables.clear()
            catalog, self._catalog = self._catalog, None
        engine: Any = getattr(catalog, "engine", None)
        if engine is not None:
            engine.dispose()
