"""TFRecord files, read and written without TensorFlow: the record framing.

A TFRecord file is a stream of records, each framed as (all integers little-endian)::

    uint64 length | uint32 masked CRC-32C of the 8 length bytes | payload | uint32 masked CRC-32C of payload

and the whole stream may be wrapped in one GZIP or ZLIB stream (GZIP for every DeepMind image
dataset). Decompression and framing are done here, with zlib-ng (the same DEFLATE streams as
``zlib``, inflated about 2.8× faster, which is most of the cost of counting and skipping records)
and ``struct``; both CRCs are verified, so a flipped byte is reported with its file and record
number instead of turning into a wrong pixel.

The payloads are serialized ``tf.train.Example`` protos, decoded by ``objdisc.data.tf_example``.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from zlib_ng import zlib_ng

from objdisc.io import atomic_write

Compression = Literal["GZIP", "ZLIB"] | None

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_IN_CHUNK = 1 << 20  # compressed bytes read from disk at a time
_OUT_CHUNK = 1 << 18  # smallest decompressed piece asked of zlib while reading
_SKIP_CHUNK = 1 << 22  # decompressed bytes discarded at a time while skipping records
_WBITS = {"GZIP": 31, "ZLIB": 15}


class TFRecordError(ValueError):
    """A corrupt or truncated TFRecord file, or an Example that does not match the declared
    features; the message names the file and the record number.

    ``ends_at`` is set when nothing from that record on can be read (a truncated or corrupt
    compressed stream, a cut or garbled record header): the file's readable part ends there.
    A payload CRC mismatch leaves it None: the framing is intact and later records still read.
    """

    def __init__(self, message: str, ends_at: int | None = None) -> None:
        super().__init__(message)
        self.ends_at = ends_at

    def __reduce__(self):  # keep ``ends_at`` through pickling (worker processes)
        return (type(self), (self.args[0], self.ends_at))


# --------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), masked as TFRecord does


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
    """Table-driven CRC-32C; the fallback when ``google-crc32c`` (a zarr dependency) is missing."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    import google_crc32c

    def crc32c(data: bytes) -> int:
        """CRC-32C of ``data`` (hardware-accelerated through google-crc32c)."""
        return google_crc32c.value(bytes(data))

except ImportError:  # pragma: no cover - google-crc32c comes with zarr
    crc32c = _crc32c_python


def masked_crc32c(data: bytes) -> int:
    """The checksum TFRecord stores: CRC-32C rotated right by 15 bits plus a constant (mod 2^32)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Byte streams (plain or through zlib) and record framing


def _normalise_compression(compression: str | None) -> str | None:
    if compression is None or compression == "":
        return None
    upper = str(compression).upper()
    if upper in ("GZIP", "ZLIB", "AUTO"):
        return upper
    if upper == "NONE":
        return None
    raise ValueError(f"unknown TFRecord compression '{compression}' (GZIP, ZLIB, None or auto)")


def detect_compression(path: str | Path) -> Compression:
    """GZIP, ZLIB or None, from the first bytes of ``path``.

    A valid record header (length plus its masked CRC) means an uncompressed file; a stray match
    has probability 2^-32. Otherwise the GZIP magic number or a valid ZLIB header decides.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size)
    if not head:
        return None
    if len(head) == _HEADER.size and masked_crc32c(head[:8]) == _HEADER.unpack(head)[1]:
        return None
    if head[:2] == b"\x1f\x8b":
        return "GZIP"
    if len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "ZLIB"
    raise TFRecordError(f"{path}: not a TFRecord file (no valid record header, GZIP or ZLIB stream)")


class _StreamError(Exception):
    """Raised by ``_ByteStream``; turned into a TFRecordError that names the record."""


class _ByteStream:
    """Sequential ``read``/``skip`` over a file, inflated on the fly when compressed."""

    def __init__(self, path: Path, compression: Compression) -> None:
        self._file = open(path, "rb")
        self._size = os.fstat(self._file.fileno()).st_size
        self._wbits = _WBITS[compression] if compression else None
        self._inflater = zlib_ng.decompressobj(self._wbits) if self._wbits else None
        self._buffer = b""
        self._pos = 0

    def close(self) -> None:
        self._file.close()

    def _inflate(self, limit: int) -> bytes:
        """Up to ``limit`` further decompressed bytes; ``b""`` only at the clean end of the file."""
        while True:
            inflater = self._inflater
            if inflater.eof:
                # A finished stream may be followed by another GZIP member (concatenated files).
                data = inflater.unused_data or self._file.read(_IN_CHUNK)
                if not data:
                    return b""
                inflater = self._inflater = zlib_ng.decompressobj(self._wbits)
            else:
                data = inflater.unconsumed_tail or self._file.read(_IN_CHUNK)
                if not data:
                    raise _StreamError("truncated compressed stream (the file ends inside it)")
            try:
                out = inflater.decompress(data, limit)
            except zlib_ng.error as err:
                raise _StreamError(f"corrupt compressed stream ({err})") from None
            if out:
                return out

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or fewer at the end of the stream."""
        if self._inflater is None:
            return self._file.read(size)
        available = len(self._buffer) - self._pos
        if available >= size:
            out = self._buffer[self._pos : self._pos + size]
            self._pos += size
            return out
        parts = [self._buffer[self._pos :]]
        need = size - available
        self._buffer, self._pos = b"", 0
        while need > 0:
            chunk = self._inflate(max(need, _OUT_CHUNK))
            if not chunk:
                break
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buffer, self._pos = chunk, need
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        return b"".join(parts)

    def skip(self, size: int) -> int:
        """Discard ``size`` bytes; return how many there were."""
        if self._inflater is None:
            here = self._file.tell()
            there = min(here + size, self._size)
            self._file.seek(there)
            return there - here
        taken = min(len(self._buffer) - self._pos, size)
        self._pos += taken
        while taken < size:
            chunk = self._inflate(min(size - taken, _SKIP_CHUNK))
            if not chunk:
                break
            taken += len(chunk)
        return taken


def _records(
    path: str | Path,
    compression: str | None,
    wanted: Iterator[int] | None,
    verify: bool,
    strict: bool = True,
) -> Iterator[tuple[int, bytes | None]]:
    """Walk the framing of every record; yield ``(index, payload)`` for the wanted indices (all
    when ``wanted`` is None) and ``(index, None)`` for the skipped ones, whose payload CRC is not
    checked. Ends after the last wanted index; with ``strict`` a file that ends before a wanted
    index is an error."""
    path = Path(path)
    compression = _normalise_compression(compression)
    if compression == "AUTO":
        compression = detect_compression(path)
    target = None if wanted is None else next(wanted, None)
    if wanted is not None and target is None:
        return
    if path.stat().st_size == 0:
        if strict and target is not None:
            raise TFRecordError(f"{path}: the file is empty, record {target} was requested")
        return
    stream = _ByteStream(path, compression)
    index = 0
    try:
        while True:
            header = stream.read(_HEADER.size)
            if not header:
                if strict and target is not None:
                    raise TFRecordError(
                        f"{path}: the file has {index} records, record {target} was requested"
                    )
                return
            if len(header) < _HEADER.size:
                raise TFRecordError(f"{path}: record {index}: truncated record header", ends_at=index)
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise TFRecordError(f"{path}: record {index}: length CRC mismatch (corrupt header)", ends_at=index)
            if target is None or index == target:
                payload = stream.read(length)
                crc = stream.read(4)
                if len(payload) < length or len(crc) < 4:
                    raise TFRecordError(
                        f"{path}: record {index}: truncated record ({length} payload bytes declared)", ends_at=index
                    )
                if verify and masked_crc32c(payload) != _CRC.unpack(crc)[0]:
                    raise TFRecordError(f"{path}: record {index}: payload CRC mismatch (corrupt data)")
                yield index, payload
                if wanted is not None:
                    following = next(wanted, None)
                    if following is None:
                        return
                    if following <= target:
                        raise ValueError(f"record indices must increase ({target} then {following})")
                    target = following
            else:
                if stream.skip(length + 4) < length + 4:
                    raise TFRecordError(
                        f"{path}: record {index}: truncated record ({length} payload bytes declared)", ends_at=index
                    )
                yield index, None
            index += 1
    except _StreamError as err:
        raise TFRecordError(f"{path}: record {index}: {err}", ends_at=index) from None
    finally:
        stream.close()


def iter_records(
    path: str | Path,
    compression: str | None = "auto",
    *,
    start: int = 0,
    stop: int | None = None,
    verify: bool = True,
) -> Iterator[bytes]:
    """Yield the payloads of records ``start..stop-1`` (to the end when ``stop`` is None).

    ``compression`` is "GZIP", "ZLIB", None or "auto" (detected from the first bytes). Records
    before ``start`` are skipped by their framing only (their length CRC is checked, their payload
    is decompressed but not kept), which is how a reader restarts in the middle of a file. Like a
    slice, the range may run past the end of the file. Both CRCs of every yielded record are
    verified unless ``verify`` is False.
    """
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"bad record range [{start}, {stop})")
    wanted = None if start == 0 and stop is None else iter(range(start, stop if stop is not None else 1 << 62))
    for _, payload in _records(path, compression, wanted, verify, strict=False):
        if payload is not None:
            yield payload


def read_records(
    path: str | Path, indices: Iterable[int], compression: str | None = "auto", *, verify: bool = True
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, payload)`` for the given increasing record indices; the records in between
    are skipped by their framing. Raises TFRecordError when the file ends first."""
    for index, payload in _records(path, compression, iter(int(i) for i in indices), verify):
        if payload is not None:
            yield index, payload


_COUNTS: dict[tuple, int] = {}


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def count_records(path: str | Path, compression: str | None = "auto") -> int:
    """Number of records in the file, by one pass over its framing (no payload CRC). Cached in
    memory per file path, size and modification time, so repeated ``splits()`` calls are free."""
    path = Path(path)
    key = (*_file_key(path), _normalise_compression(compression))
    if key not in _COUNTS:
        count = 0
        for count, _ in enumerate(_records(path, compression, None, verify=False), start=1):
            pass
        _COUNTS[key] = count
    return _COUNTS[key]


def write_records(path: str | Path, payloads: Iterable[bytes], compression: str | None = None) -> None:
    """Write a TFRecord file (atomically: temporary name, then rename). The GZIP header carries no
    file name and mtime 0, so equal payloads give equal files."""
    path = Path(path)
    compression = _normalise_compression(compression)
    if compression == "AUTO":
        raise ValueError("write_records needs an explicit compression (GZIP, ZLIB or None)")
    deflater = zlib.compressobj(6, zlib.DEFLATED, _WBITS[compression]) if compression else None
    with atomic_write(path, "wb") as handle:
        for payload in payloads:
            payload = bytes(payload)
            length = struct.pack("<Q", len(payload))
            frame = b"".join(
                [length, _CRC.pack(masked_crc32c(length)), payload, _CRC.pack(masked_crc32c(payload))]
            )
            handle.write(deflater.compress(frame) if deflater else frame)
        if deflater:
            handle.write(deflater.flush())
