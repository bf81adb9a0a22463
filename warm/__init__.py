"""Warm tier: object storage (``file://``, ``s3://``) and the Parquet archive format.

``warm.storage`` is the only package in tierflow that touches object-store
SDKs; ``warm.schema``, ``warm.writer`` and ``warm.reader`` define, write and
read the archive (see the README's "Archive format").
"""

__all__: list[str] = []
