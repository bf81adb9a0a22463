"""Object-store access for the warm and cold tiers: the one package that talks to storage SDKs.

Everything tierflow keeps outside the hot tier lives under one location, given as a URL
(``file:///abs/path`` or ``s3://bucket/optional/prefix``); :class:`ObjectStore` maps keys onto
it. Nothing else in tierflow imports boto3, botocore or pyarrow's S3 classes. The modules:

* :mod:`~tierflow.warm.storage.settings`: :class:`StorageSettings`, which builds every client
  in one place and hands the same settings to pyiceberg
  (:meth:`StorageSettings.iceberg_io_properties`), and :func:`single_put_uploads` for the
  pyarrow filesystem pyiceberg makes from them.
* :mod:`~tierflow.warm.storage.locations`: storage URLs, S3 endpoints and keys.
* :mod:`~tierflow.warm.storage.errors`: SDK and OS errors turned into
  :class:`hot.errors.StorageError`, credentials scrubbed from messages and logs.
* :mod:`~tierflow.warm.storage.streams`: the streams handed to callers.
* :mod:`~tierflow.warm.storage.store`: :class:`ObjectStore` and :class:`WriteBatch`, over one
  backend picked by URL scheme (:mod:`~tierflow.warm.storage.backend`, the Protocol;
  :mod:`~tierflow.warm.storage.local` and :mod:`~tierflow.warm.storage.s3`, the backends).
"""

from tierflow.warm.storage.errors import ObjectNotFound
from tierflow.warm.storage.settings import StorageSettings, single_put_uploads
from tierflow.warm.storage.store import ObjectStore, WriteBatch

__all__ = ["ObjectNotFound", "ObjectStore", "StorageSettings", "WriteBatch", "single_put_uploads"]
