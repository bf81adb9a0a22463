"""Forensics for erasure tests: every place a marker survives, on disk and in the bucket.

An erasure is proven by looking for the erased workflow's id (or a unique
marker from its input) in every byte tierflow keeps, both as stored and as
each format decodes:

- **raw**: the bytes of every file under the data directory and of every
  object in the store (SQLite databases with their free pages, ``-wal`` and
  ``-shm`` files, the catalog, JSON, Parquet footers and page indexes);
- **parquet**: Parquet files read back (pages are zstd-compressed, so a raw
  search misses their values), every column searched;
- **avro**: Avro containers (Iceberg manifests and manifest lists) with each
  block decompressed by pyiceberg's codecs (manifests keep column bounds,
  which a raw search misses once deflated);
- **gzip**: gzip'd files (``*.gz.metadata.json``) decompressed.

The marker is searched as UTF-8 and as JSON escapes it (``"\\u00e9"``, ``\\"``).
:func:`find_marker` returns one line per finding, ``"<where> [<how>]"``, where
``<where>`` is a path or ``<store url>/<key>`` and ``<how>`` says how it was
decoded (for SQLite, whether the hit is on a free page or in a WAL frame).
An empty list means the marker is gone.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tierflow.warm.storage import ObjectStore

__all__ = ["find_marker", "scan_bytes"]

_PARQUET = b"PAR1"
_AVRO = b"Obj\x01"
# gzip's magic and its one compression method (deflate): two bytes alone start one random
# file in 65,536 (the audit key is 32 random bytes), which then failed to decompress.
_GZIP = b"\x1f\x8b\x08"
_SQLITE = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def find_marker(data_dir: Path, store: ObjectStore, marker: str) -> list[str]:
    """Every place ``marker`` appears under ``data_dir`` and in ``store``, raw or decoded.

    Args:
        data_dir: The tierflow data directory (hot files, index, catalog, keys...).
        store: The warm/cold object store; every object is read (``file://`` stores
            inside ``data_dir`` are scanned once).
        marker: The text to look for (a workflow id, a unique input value).

    Returns:
        ``"<path or store url/key> [<how>]"`` per finding; empty when nothing holds it.
    """
    if not marker:
        raise ValueError("an empty marker matches everything")
    needles = _needles(marker)
    found: list[str] = []
    seen: set[str] = set()
    data_dir = Path(data_dir).resolve()
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        seen.add(str(path))
        found += [f"{path} [{how}]" for how in scan_bytes(path.read_bytes(), needles, path.name)]
    local_root = None if store.settings.is_s3 else os.path.realpath(store.root)
    for key, _ in store.list("", unfinished=True):
        if local_root is not None and os.path.realpath(store.path(key)) in seen:
            continue
        # Not store.get: pyarrow decompresses a ".gz" key on the way ("detect").
        with store.fs.open_input_stream(store.path(key), compression=None) as src:
            data = bytes(src.readall())
        where = f"{store.url.rstrip('/')}/{key}"
        found += [f"{where} [{how}]" for how in scan_bytes(data, needles, key)]
    return found


def scan_bytes(data: bytes, needles: tuple[bytes, ...], name: str = "") -> list[str]:
    """How ``data`` holds any of ``needles``: raw, and through each format it decodes as.

    Args:
        data: A file's or an object's bytes.
        needles: Byte strings to look for (see :func:`find_marker`).
        name: The file name (a ``-wal`` file is read as a SQLite WAL).

    Returns:
        One label per way the needle was found (``"raw"``, ``"parquet"``, ...).
    """
    hows: list[str] = []
    raw = [i for n in needles for i in _offsets(data, n)]
    if raw:
        hows.append(_raw_label(data, sorted(raw), name))
    if data[:4] == _PARQUET and data[-4:] == _PARQUET:
        hows += [f"parquet column {c}" for c in _parquet_hits(data, needles)]
    if data[:4] == _AVRO:
        hows += [f"avro {part}" for part in _avro_hits(data, needles)]
    if data[:3] == _GZIP:
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            # A gzip file that cannot be read could hide a marker; other bytes that only
            # start like gzip are not gzip, and their raw bytes were searched above.
            if ".gz" in name:
                hows.append(f"gzip unreadable: {exc}")
        else:
            hows += [f"gzip/{how}" for how in scan_bytes(inner, needles, name)]
    return hows


def _needles(marker: str) -> tuple[bytes, ...]:
    forms = {marker.encode(), json.dumps(marker)[1:-1].encode()}
    return tuple(sorted(forms))


def _offsets(data: bytes, needle: bytes) -> Iterator[int]:
    start = data.find(needle)
    while start != -1:
        yield start
        start = data.find(needle, start + 1)


# ------------------------------------------------------------------------------------ SQLite


def _raw_label(data: bytes, offsets: list[int], name: str) -> str:
    """``raw``, with the SQLite page (free or live) or WAL frame of the first hit."""
    if data[:16] == _SQLITE:
        page_size = _sqlite_page_size(data)
        free = _sqlite_free_pages(data, page_size)
        pages = sorted({off // page_size + 1 for off in offsets})
        kinds = sorted({"free page" if p in free else "page" for p in pages})
        return f"raw sqlite {'/'.join(kinds)} {pages[:5]}"
    if name.endswith("-wal") and len(data) >= 32:
        magic, _, page_size = struct.unpack(">III", data[:12])
        if magic in _WAL_MAGIC and page_size:
            frame = 24 + page_size
            frames = sorted({max(0, off - 32) // frame + 1 for off in offsets})
            return f"raw sqlite wal frame {frames[:5]}"
    return "raw"


def _sqlite_page_size(data: bytes) -> int:
    size = int.from_bytes(data[16:18], "big")
    return 65536 if size == 1 else max(size, 512)


def _sqlite_free_pages(data: bytes, page_size: int) -> set[int]:
    """The database's freelist (trunk and leaf pages), from the header's first trunk page."""
    free: set[int] = set()
    trunk = int.from_bytes(data[32:36], "big")
    while trunk and trunk not in free and trunk * page_size <= len(data):
        free.add(trunk)
        base = (trunk - 1) * page_size
        following = int.from_bytes(data[base : base + 4], "big")
        count = int.from_bytes(data[base + 4 : base + 8], "big")
        count = min(count, (page_size - 8) // 4)
        for i in range(count):
            at = base + 8 + 4 * i
            free.add(int.from_bytes(data[at : at + 4], "big"))
        trunk = following
    return free


# ------------------------------------------------------------------------------------ Parquet


def _parquet_hits(data: bytes, needles: tuple[bytes, ...]) -> list[str]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        return [f"<unreadable: {exc}>"]
    hits: list[str] = []
    texts = [n.decode() for n in needles]
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            try:
                column = column.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = pa.chunked_array([pa.array([str(v) for v in column.to_pylist()])])
        for text in texts:
            matched = pc.any(pc.match_substring(column, text)).as_py()
            if matched:
                hits.append(name)
                break
    return hits


# ------------------------------------------------------------------------------------ Avro


def _avro_hits(data: bytes, needles: tuple[bytes, ...]) -> list[str]:
    """Search every decompressed block of an Avro container (pyiceberg's decoder and codecs)."""
    from pyiceberg.avro.decoder import new_decoder
    from pyiceberg.avro.file import META_SCHEMA, SYNC_SIZE, AvroFileHeader
    from pyiceberg.avro.resolver import construct_reader

    try:
        decoder = new_decoder(data)
        header = construct_reader(META_SCHEMA, {-1: AvroFileHeader}).read(decoder)
        codec = header.compression_codec()
    except Exception as exc:  # a damaged container is a finding of its own
        return [f"<unreadable header: {exc}>"]
    hits: list[str] = []
    block = 0
    while decoder.tell() < len(data):
        try:
            decoder.read_int()  # records in the block
            payload = decoder.read_bytes()
            if codec is not None:
                payload = codec.decompress(payload)
            decoder.skip(SYNC_SIZE)
        except (EOFError, ValueError, zlib.error) as exc:
            hits.append(f"<unreadable block {block}: {exc}>")
            break
        if any(n in payload for n in needles):
            hits.append(f"block {block} decompressed")
        block += 1
    return hits
