"""``tf.train.Example`` records decoded without TensorFlow. Two parsers:

* ``parse_example`` decodes any Example with the wire-compatible message class that
  tensorflow-datasets bundles (``tensorflow_datasets.proto.tf_example_pb2``); it needs no TensorFlow.
* ``parse_fixed`` decodes the features a reader declares as ``tf.io.FixedLenFeature`` straight from
  the wire format into numpy arrays. The DeepMind datasets store every pixel as its own one-byte
  string (a CLEVR record holds about a million of them), which makes building a protobuf message
  the bottleneck: on such a record ``parse_fixed`` is about ten times faster than
  ``Example.FromString`` alone. The two are checked against each other in the tests.

Both raise ``TFRecordError`` naming the record (``where``) on a payload that does not decode.

``encode_example`` goes the other way (the sprites generator writes DeepMind's layout with it),
also straight to the wire format, so writing needs neither TensorFlow nor protobuf.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from objdisc.data.tfrecord import TFRecordError


# --------------------------------------------------------------------------------------------
# tf.train.Example through the message class bundled with tensorflow-datasets


def parse_example(raw: bytes, where: str = "record") -> dict[str, list[bytes] | np.ndarray]:
    """Every feature of a serialized ``tf.train.Example``: a BytesList as a list of bytes, a
    FloatList as float32 and an Int64List as int64 arrays (flat, as stored), an empty feature as
    an empty list. Uses the TFDS copy of the Example proto, which imports without TensorFlow."""
    from google.protobuf.message import DecodeError
    from tensorflow_datasets.proto import tf_example_pb2

    try:
        example = tf_example_pb2.Example.FromString(bytes(raw))
    except DecodeError as err:
        raise TFRecordError(f"{where}: not a serialized tf.train.Example ({err})") from None
    features: dict[str, list[bytes] | np.ndarray] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            features[name] = list(feature.bytes_list.value)
        elif kind == "float_list":
            features[name] = np.asarray(feature.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            features[name] = np.asarray(feature.int64_list.value, dtype=np.int64)
        else:
            features[name] = []
    return features


# --------------------------------------------------------------------------------------------
# Fixed-length features straight from the protobuf wire format


@dataclass(frozen=True)
class Fixed:
    """A feature as a reader declares it with ``tf.io.FixedLenFeature(shape, dtype)``.

    ``dtype`` "uint8" is a string feature holding one 1-byte string per element, decoded as the
    DeepMind readers do (``decode_raw(uint8)`` then squeezing the length-1 axis); "float32" and
    "int64" are FloatList and Int64List features. The decoded array has exactly ``shape``.
    """

    shape: tuple[int, ...]
    dtype: Literal["uint8", "float32", "int64"]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


_KIND_OF = {"uint8": 1, "float32": 2, "int64": 3}  # Feature.kind field numbers
_KIND_NAME = {1: "bytes_list", 2: "float_list", 3: "int64_list", None: "empty"}


class _WireError(Exception):
    """A feature that does not match its declaration."""


class _Garbled(_WireError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    pos += 1
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Garbled("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, stop) of each field of the message in ``buf[pos:end]``;
    for varints start is the value itself."""
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _varint(buf, pos)
            stop = pos + size
        elif wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value, pos
            continue
        elif wire == 5:
            stop = pos + 4
        elif wire == 1:
            stop = pos + 8
        else:
            raise _Garbled(f"unsupported wire type {wire}")
        if stop > end:
            raise _Garbled("a field runs past the end of its message")
        yield number, wire, pos, stop
        pos = stop
    if pos != end:
        raise _Garbled("a message overruns its declared length")


def _feature_spans(raw: bytes) -> dict[str, tuple[int | None, list[tuple[int, int]]]]:
    """Feature name → (kind field number, byte spans of the kind's list message) of an Example,
    following protobuf semantics: map entries later in the record win, repeated list messages of
    the same kind are merged."""
    features: dict[str, tuple[int | None, list[tuple[int, int]]]] = {}
    for number, wire, a, b in _fields(raw, 0, len(raw)):
        if number != 1 or wire != 2:  # Example.features
            continue
        for number2, wire2, a2, b2 in _fields(raw, a, b):
            if number2 != 1 or wire2 != 2:  # Features.feature (map entry)
                continue
            name, kind, spans = "", None, []
            for number3, wire3, a3, b3 in _fields(raw, a2, b2):
                if wire3 != 2:
                    continue
                if number3 == 1:  # entry key
                    name = raw[a3:b3].decode("utf-8")
                elif number3 == 2:  # entry value: Feature
                    for number4, wire4, a4, b4 in _fields(raw, a3, b3):
                        if wire4 == 2 and number4 in (1, 2, 3):
                            if number4 != kind:
                                kind, spans = number4, []
                            spans.append((a4, b4))
            features[name] = (kind, spans)
    return features


@functools.lru_cache(maxsize=64)
def _repeated(byte: bytes, count: int) -> bytes:
    return byte * count


def _one_byte_strings(raw: bytes, spans: list[tuple[int, int]], count: int, name: str) -> np.ndarray:
    # TF writes each element as tag 0x0a, length 0x01, the byte: check the tags and lengths with
    # strided bytes slices (C speed) and take every third byte.
    if len(spans) == 1 and spans[0][1] - spans[0][0] == 3 * count:
        a, b = spans[0]
        if raw[a:b:3] == _repeated(b"\x0a", count) and raw[a + 1 : b : 3] == _repeated(b"\x01", count):
            return np.frombuffer(raw[a + 2 : b : 3], np.uint8)
    values = bytearray()
    for a, b in spans:
        for number, wire, x, y in _fields(raw, a, b):
            if number != 1 or wire != 2:
                continue
            if y - x != 1:
                raise _WireError(
                    f"feature '{name}': element {len(values)} is {y - x} bytes long, expected one byte"
                )
            values.append(raw[x])
    if len(values) != count:
        raise _WireError(f"feature '{name}' has {len(values)} values, expected {count}")
    return np.frombuffer(bytes(values), np.uint8)


def _floats(raw: bytes, spans: list[tuple[int, int]], name: str) -> np.ndarray:
    parts = []
    for a, b in spans:
        for number, wire, x, y in _fields(raw, a, b):
            if number != 1:
                continue
            if wire not in (2, 5) or (y - x) % 4:
                raise _WireError(f"feature '{name}': malformed float list")
            parts.append(raw[x:y])
    return np.frombuffer(b"".join(parts), "<f4").astype(np.float32, copy=False)


def _int64s(raw: bytes, spans: list[tuple[int, int]], name: str) -> np.ndarray:
    values = []
    for a, b in spans:
        for number, wire, x, y in _fields(raw, a, b):
            if number != 1:
                continue
            if wire == 0:
                values.append(x)
            elif wire == 2:
                pos = x
                while pos < y:
                    value, pos = _varint(raw, pos)
                    values.append(value)
            else:
                raise _WireError(f"feature '{name}': malformed int64 list")
    return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in values], dtype=np.int64)


def parse_fixed(raw: bytes, spec: Mapping[str, Fixed], where: str = "record") -> dict[str, np.ndarray]:
    """Decode the features named in ``spec`` from a serialized Example, each to an array of its
    declared shape; other features are ignored. Raises TFRecordError (prefixed with ``where``,
    e.g. "file: record 7") for a missing feature, a wrong kind or a wrong number of values."""
    raw = bytes(raw)
    try:
        spans = _feature_spans(raw)
        out = {}
        for name, fixed in spec.items():
            if name not in spans:
                raise _WireError(f"feature '{name}' is missing")
            kind, parts = spans[name]
            if kind != _KIND_OF[fixed.dtype]:
                raise _WireError(
                    f"feature '{name}' is a {_KIND_NAME[kind]}, expected a {_KIND_NAME[_KIND_OF[fixed.dtype]]}"
                )
            if fixed.dtype == "uint8":
                values = _one_byte_strings(raw, parts, fixed.size, name)
            elif fixed.dtype == "float32":
                values = _floats(raw, parts, name)
            else:
                values = _int64s(raw, parts, name)
            if values.size != fixed.size:
                raise _WireError(
                    f"feature '{name}' has {values.size} values, expected {fixed.size} (shape {list(fixed.shape)})"
                )
            out[name] = values.reshape(fixed.shape)
        return out
    except _Garbled as err:
        raise TFRecordError(f"{where}: not a serialized tf.train.Example ({err})") from None
    except _WireError as err:
        raise TFRecordError(f"{where}: {err}") from None
    except (IndexError, UnicodeDecodeError):
        raise TFRecordError(f"{where}: not a serialized tf.train.Example (truncated)") from None


# --------------------------------------------------------------------------------------------
# Encoding: a serialized tf.train.Example from numpy arrays, written from the wire format


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, body."""
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(body)) + body


def _list_body(name: str, value: Sequence[bytes] | np.ndarray) -> tuple[int, bytes]:
    """(Feature.kind field number, serialized BytesList / FloatList / Int64List) of one feature."""
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        if value.dtype == np.uint8:
            # One 1-byte string per element, as the DeepMind files store pixels (and as
            # ``Fixed(..., "uint8")`` reads them): tag 0x0a, length 1, the byte, built at C speed.
            triples = np.empty((flat.size, 3), np.uint8)
            triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 1, flat
            return 1, triples.tobytes()
        if value.dtype == np.float32:
            packed = flat.astype("<f4").tobytes()
            return 2, _field(1, packed) if packed else b""  # proto3 omits an empty packed field
        if value.dtype == np.int64:
            # Negative int64 are varints of their two's complement (ten bytes).
            packed = b"".join(_varint_bytes(int(v) & 0xFFFFFFFFFFFFFFFF) for v in flat.tolist())
            return 3, _field(1, packed) if packed else b""
        raise TypeError(f"feature '{name}': unsupported dtype {value.dtype} (uint8, float32 or int64)")
    if isinstance(value, (list, tuple)) and all(isinstance(v, bytes) for v in value):
        return 1, b"".join(_field(1, v) for v in value)
    raise TypeError(f"feature '{name}': expected a list of bytes or a uint8/float32/int64 array")


def encode_example(features: Mapping[str, Sequence[bytes] | np.ndarray]) -> bytes:
    """Serialize ``features`` as a ``tf.train.Example`` without TensorFlow or protobuf.

    Each value is a list of bytes strings (BytesList), a float32 array (FloatList, packed), an
    int64 array (Int64List, packed) or a uint8 array, which becomes a BytesList of one 1-byte
    string per element (the DeepMind image/mask encoding, read back by ``Fixed(shape, "uint8")``).
    Arrays are flattened in C order. Keys are written sorted, so equal inputs give equal bytes;
    each feature's bytes are those protobuf writes (map order aside, upb sorts keys its own way).
    """
    entries = []
    for name in sorted(features):
        kind, body = _list_body(name, features[name])
        entry = _field(1, name.encode("utf-8")) + _field(2, _field(kind, body))  # map entry: key, Feature
        entries.append(_field(1, entry))  # Features.feature
    return _field(1, b"".join(entries))  # Example.features
