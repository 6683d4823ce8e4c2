"""DeepMind multi_object_datasets (Kabra et al. 2019) from their original GZIP TFRecord files:
CLEVR with masks, Tetrominoes, Multi-dSprites and Objects Room.

Each file is one dataset variant; each record one scene. The reader's feature table (``LAYOUTS``)
is the one the DeepMind readers declare: image and mask are fixed-length string features with one
1-byte string per element, per-entity factors are flat float lists (CLEVR's categorical codes are
1-byte strings too). Entity 0 is the background; Objects Room's entities 1-3 are the floor and the
two wall halves. A wrong variant cannot silently mis-parse here: every feature's length is checked.

Canonical scene (one view):

* ``image`` uint8 [1,H,W,3]; binarized Multi-dSprites (one channel) is repeated to three.
* ``mask`` uint8 [1,H,W]: the on-disk masks are 0/255 per entity channel and partition the image;
  the id of a pixel is the channel index of the one entity that covers it (0 = background). A
  value other than 0/255, or a pixel covered by no or several entities, is an error naming the file
  and record.
* ``objects``: one entry per entity channel 1..E-1, so mask id k is always ``objects[k-1]`` (entry
  ``id`` = k). ``visible`` is the record's visibility flag (Objects Room: whether the mask has
  pixels of k); the factors are kept under their feature names (CLEVR's size/material/shape/color
  as integer codes, 0 only for padding). Zero-padded slots (no visibility, all factors 0) carry
  only ``id`` and ``visible``.
* ``meta``: source, variant, split, index (record number in the file), views [0].

Splits are ranges of record numbers. The built-in tables are capped at the file's record count (a
default split past the end of a shorter file is empty). Option ``splits`` replaces the table
({name: [start, stop]} or [start, stop, limit], stop null = end of file, or fractions such as
[0.0, 0.8] of the records; see ``objdisc.data.sources.options``); a range of that option past the
end of the file is an error naming ``splits.<name>``, except in a damaged file, whose readable
length is only a lower bound. Option ``max_objects`` keeps only scenes with at most that many
visible objects (entities k ≥ 1), applied inside each range before any ``limit``.
Counting records (and objects, when filtering) takes one pass over the file, cached in memory per
file; reading restarts anywhere by skipping records by their framing, so conversion streams.

A damaged file (a cut download, a corrupt compressed stream) is readable up to some record; it
counts up to and including that record, whose read raises the error naming file and record, so a
strict conversion stops there and ``--skip-bad`` keeps every scene before it and lists the broken
one. A payload CRC mismatch spoils only its own record.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from objdisc.data.schema import Scene, scene_key
from objdisc.data.sources.base import Source, SourceError, SourceInfo
# The option parsers live in the shared options module (every source with a split table uses them).
from objdisc.data.sources.options import SplitRange, check_options, parse_max_objects, parse_splits
from objdisc.data.tf_example import Fixed, parse_fixed
from objdisc.data.tfrecord import TFRecordError, count_records, iter_records, read_records

BUCKET = "https://storage.googleapis.com/multi-object-datasets"


@dataclass(frozen=True)
class Layout:
    """How one dataset variant stores a scene, as its DeepMind reader declares the features."""

    file: str  # the file's name in the bucket
    image: tuple[int, int, int]  # [H, W, C]
    entities: int  # E mask channels, background first
    attributes: tuple[tuple[str, tuple[int, ...], str], ...] = ()  # per entity: name, trailing shape, dtype
    mask_last: bool = False  # Multi-dSprites stores the mask [H,W,E,1]; the others [E,H,W,1]
    visibility: bool = True
    roles: tuple[str, ...] = ()  # Objects Room: what each entity channel is

    def mask_shape(self) -> tuple[int, ...]:
        h, w, _ = self.image
        return (h, w, self.entities, 1) if self.mask_last else (self.entities, h, w, 1)

    def features(self) -> dict[str, Fixed]:
        """The ``tf.io.FixedLenFeature`` table of the reader."""
        spec = {"image": Fixed(self.image, "uint8"), "mask": Fixed(self.mask_shape(), "uint8")}
        for name, tail, dtype in self.attributes:
            spec[name] = Fixed((self.entities, *tail), dtype)
        if self.visibility:
            spec["visibility"] = Fixed((self.entities,), "float32")
        return spec


_F, _U = "float32", "uint8"
CLEVR = Layout(
    "clevr_with_masks_train.tfrecords",
    (240, 320, 3),
    11,
    (("x", (), _F), ("y", (), _F), ("z", (), _F), ("pixel_coords", (3,), _F), ("rotation", (), _F),
     ("size", (), _U), ("material", (), _U), ("shape", (), _U), ("color", (), _U)),
)
TETROMINOES = Layout(
    "tetrominoes_train.tfrecords",
    (35, 35, 3),
    4,
    (("x", (), _F), ("y", (), _F), ("shape", (), _F), ("color", (3,), _F)),
)


def _dsprites(variant: str, channels: int, entities: int) -> Layout:
    return Layout(
        f"multi_dsprites_{variant}.tfrecords",
        (64, 64, channels),
        entities,
        (("x", (), _F), ("y", (), _F), ("shape", (), _F), ("color", (channels,), _F),
         ("orientation", (), _F), ("scale", (), _F)),
        mask_last=True,
    )


MULTI_DSPRITES = {
    "binarized": _dsprites("binarized", 1, 4),
    "colored_on_grayscale": _dsprites("colored_on_grayscale", 3, 6),
    "colored_on_colored": _dsprites("colored_on_colored", 3, 5),
}


def _objects_room(file: str, entities: int) -> Layout:
    roles = ("sky", "floor", "wall", "wall") + ("object",) * (entities - 4)
    return Layout(file, (64, 64, 3), entities, visibility=False, roles=roles)


OBJECTS_ROOM = {
    "train": _objects_room("objects_room_train.tfrecords", 7),
    "six_objects": _objects_room("objects_room_test_six_objects.tfrecords", 10),
    "empty_room": _objects_room("objects_room_test_empty_room.tfrecords", 4),
    "identical_color": _objects_room("objects_room_test_identical_color.tfrecords", 10),
}


# --------------------------------------------------------------------------------------------
# Arrays of one record → canonical scene (shared with the HDF5 and npz exports of these sets)


def entity_ids(mask: np.ndarray, where: str) -> np.ndarray:
    """[E,H,W] masks, 0/255 per entity → [H,W] uint8 id of the one entity covering each pixel."""
    on = mask == 255
    if not (on | (mask == 0)).all():
        e, r, c = np.argwhere((mask != 0) & ~on)[0]
        raise SourceError(
            f"{where}: mask value {int(mask[e, r, c])} in entity channel {e} at pixel (row {r}, col {c}); "
            "expected 0 or 255"
        )
    covering = on.sum(axis=0, dtype=np.int32)
    if (covering != 1).any():
        r, c = np.argwhere(covering != 1)[0]
        raise SourceError(
            f"{where}: pixel (row {r}, col {c}) is covered by {int(covering[r, c])} entity masks, expected one"
        )
    return on.argmax(axis=0).astype(np.uint8)


def _nonzero(value: Any) -> bool:
    return any(value) if isinstance(value, list) else value != 0


def _check_shape(array: np.ndarray, expected: Sequence[tuple[int, ...]], name: str, where: str) -> None:
    if tuple(array.shape) not in [tuple(e) for e in expected]:
        raise SourceError(
            f"{where}: '{name}' has shape {list(array.shape)}, expected {' or '.join(str(list(e)) for e in expected)}"
        )


def scene_from_arrays(
    layout: Layout, arrays: Mapping[str, np.ndarray], *, index: int, meta: dict[str, Any], where: str
) -> Scene:
    """The canonical scene of one record given the reader's arrays (image [H,W,C], mask in the
    layout's order with or without the trailing 1, per-entity factors with a leading E axis)."""
    h, w, c = layout.image
    e = layout.entities
    image = np.asarray(arrays["image"])
    _check_shape(image, [layout.image], "image", where)
    if image.dtype != np.uint8:
        raise SourceError(f"{where}: 'image' has dtype {image.dtype}, expected uint8")
    if c == 1:
        image = np.repeat(image, 3, axis=-1)  # binarized Multi-dSprites: grey → RGB
    mask = np.asarray(arrays["mask"])
    full = layout.mask_shape()
    _check_shape(mask, [full, full[:-1]], "mask", where)
    if mask.ndim == 4:
        mask = mask[..., 0]
    if layout.mask_last:
        mask = mask.transpose(2, 0, 1)
    ids = entity_ids(mask, where)

    factors = {}
    for name, tail, _ in layout.attributes:
        values = np.asarray(arrays[name])
        _check_shape(values, [(e, *tail)], name, where)
        factors[name] = values.tolist()  # Python ints/floats per entity, JSON-ready
    objects: list[dict[str, Any]] = []
    if layout.roles:
        present = np.bincount(ids.ravel(), minlength=e) > 0
        objects = [{"id": k, "visible": bool(present[k]), "role": layout.roles[k]} for k in range(1, e)]
    else:
        visibility = np.asarray(arrays["visibility"])
        _check_shape(visibility, [(e,)], "visibility", where)
        for k in range(1, e):
            entry: dict[str, Any] = {"id": k, "visible": bool(visibility[k] > 0)}
            own = {name: values[k] for name, values in factors.items()}
            if entry["visible"] or any(_nonzero(v) for v in own.values()):
                entry.update(own)
            objects.append(entry)
    return {
        "__key__": scene_key(index),
        "image": np.ascontiguousarray(image[None]),
        "mask": ids[None],
        "objects": objects,
        "meta": meta,
    }


def count_objects(visibility: np.ndarray) -> np.ndarray:
    """Objects per scene from visibility [..., E]: visible entities other than the background.

    (HHousen's filter compares Σ visibility, background included, with num_slots − 1 and so
    admits one object fewer than meant; CLEVR6 is "at most 6 objects", i.e. this count ≤ 6.)
    """
    return (np.asarray(visibility)[..., 1:] > 0).sum(axis=-1)


# --------------------------------------------------------------------------------------------
# Sources

# Per file (path, size, mtime, compression, E): visible objects per record, and the first
# unreadable record of a damaged file (None when whole), so a cached count keeps its caveat.
_OBJECT_COUNTS: dict[tuple, tuple[np.ndarray, int | None]] = {}

# Slot Attention trained on the first 60K scenes of Tetrominoes and Multi-dSprites; the same
# ranges serve Multi-dSprites and Objects Room train here (the files hold 1M scenes each).
SA_60K = {"train": SplitRange(0, 60_000), "val": SplitRange(60_000, 75_000), "test": SplitRange(75_000, 90_000)}


class MultiObjectTFRecord(Source):
    """Shared machinery; subclasses set ``info``, ``layouts`` and the split table."""

    layouts: ClassVar[dict[str | None, Layout]]
    default_variant: ClassVar[str | None] = None
    allowed_options: ClassVar[set[str]] = {"variant", "splits", "max_objects", "compression"}

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(root, **options)
        name = self.info.name
        check_options(options, self.allowed_options, name)
        self.variant = self._choose_variant(options.get("variant"))
        self.layout = self.layouts[self.variant]
        self.path = self.root if self.root.is_file() else self.root / self.layout.file
        if not self.path.is_file():
            present = sorted(p.name for p in self.root.glob("*.tfrecord*"))
            raise SourceError(f"{name}: missing {self.path} (TFRecord files there: {present or 'none'})")
        self.compression = options.get("compression", "auto")
        if self.compression is not None and str(self.compression).upper() not in ("AUTO", "GZIP", "ZLIB", "NONE", ""):
            raise SourceError(f"{name}: unknown compression '{self.compression}' (auto, GZIP, ZLIB or None)")
        self.max_objects = parse_max_objects(options.get("max_objects"), name)
        if self.max_objects is not None and not self.layout.visibility:
            raise SourceError(f"{name}: option 'max_objects' needs a visibility feature, which {self.variant} lacks")
        if "splits" in options:
            self.table = parse_splits(options["splits"], name)
        else:
            self.table = self.default_splits()
        self.spec = self.layout.features()
        # Learned by the first pass over the file and kept on the instance, so a pickled source
        # (the converter's workers get one) never counts again.
        self._count: int | None = None
        self._visible: np.ndarray | None = None
        self._damaged_at: int | None = None  # first unreadable record of a damaged file

    def _choose_variant(self, variant: Any) -> str | None:
        known = [v for v in self.layouts if v is not None]
        if variant is not None:
            if variant not in self.layouts:
                raise SourceError(f"{self.info.name}: unknown variant '{variant}' (known: {', '.join(known)})")
            return variant
        if not known:
            return None
        if self.root.is_file():
            matches = [v for v in known if self.layouts[v].file == self.root.name]
        else:
            matches = [v for v in known if (self.root / self.layouts[v].file).is_file()]
        if len(matches) == 1:
            return matches[0]
        if self.default_variant is not None and (not matches or self.default_variant in matches):
            return self.default_variant
        if not matches:
            files = " / ".join(self.layouts[v].file for v in known)
            raise SourceError(f"{self.info.name}: none of {files} in {self.root}; set option 'variant' or pass the file")
        raise SourceError(
            f"{self.info.name}: several variants in {self.root} ({', '.join(matches)}); set option 'variant'"
        )

    def default_splits(self) -> dict[str, SplitRange]:
        return dict(SA_60K)

    def _file_key(self) -> tuple:
        stat = self.path.stat()
        return (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns, str(self.compression))

    def _records(self) -> int:
        """Records in the file (cached per file, see ``count_records``)."""
        if self._count is None:
            if self.max_objects is not None:
                self._count = len(self._objects())
            else:
                try:
                    self._count = count_records(self.path, self.compression)
                except TFRecordError as err:
                    if err.ends_at is None:
                        raise SourceError(str(err)) from err
                    self._count = self._damaged(err)
        return self._count

    def _damaged(self, err: TFRecordError) -> int:
        """A file whose readable part ends at record ``err.ends_at`` (a cut download, say) counts
        that record too: reading it raises the error naming the file and record, so a strict
        conversion fails there and ``--skip-bad`` lists it among the skipped scenes."""
        self._damaged_at = err.ends_at
        warnings.warn(
            f"{self.info.name}: {err}; records {err.ends_at} onwards cannot be read "
            f"(a strict conversion stops at record {err.ends_at}, --skip-bad keeps the {err.ends_at} before it)",
            stacklevel=3,
        )
        return err.ends_at + 1

    def _objects(self) -> np.ndarray:
        """Visible objects per record (one pass decoding only ``visibility``)."""
        if self._visible is not None:
            return self._visible
        key = (*self._file_key(), self.layout.entities)
        if key not in _OBJECT_COUNTS:
            spec = {"visibility": Fixed((self.layout.entities,), "float32")}
            counts = []
            try:
                # Payload CRCs are checked when the scenes are read; a record that cannot be
                # decoded here counts 0 objects, so it stays a member and its read names the fault.
                for index, payload in enumerate(iter_records(self.path, self.compression, verify=False)):
                    try:
                        visibility = parse_fixed(payload, spec, f"{self.path}: record {index}")["visibility"]
                        counts.append(int(count_objects(visibility)))
                    except TFRecordError:
                        counts.append(0)
            except TFRecordError as err:
                if err.ends_at is None:
                    raise SourceError(str(err)) from err
                self._damaged(err)
                counts.append(0)  # the unreadable record stays a member too
            _OBJECT_COUNTS[key] = (np.asarray(counts, dtype=np.int16), self._damaged_at)
        self._visible, damaged_at = _OBJECT_COUNTS[key]
        if damaged_at is not None:
            self._damaged_at = damaged_at
        return self._visible

    def members(self, split: str) -> Sequence[int]:
        """Record numbers of ``split`` in order."""
        self.check_split(split)
        objects = self._objects() if self.max_objects is not None else None
        total = self._records()
        return self.table[split].members(total, objects, self.max_objects, exact=self._damaged_at is None)

    def splits(self) -> dict[str, int]:
        total = self._records()
        objects = self._objects() if self.max_objects is not None else None
        exact = self._damaged_at is None  # a damaged file's count is only what could be read
        return {name: len(split.members(total, objects, self.max_objects, exact)) for name, split in self.table.items()}

    def meta(self, split: str, index: int) -> dict[str, Any]:
        return {"source": self.info.name, "variant": self.variant, "split": split, "index": int(index), "views": [0]}

    def read(self, split: str, start: int, stop: int) -> Iterator[Scene]:
        members = self.members(split)
        wanted = members[max(start, 0) : max(min(stop, len(members)), 0)]
        try:
            for index, payload in read_records(self.path, wanted, self.compression):
                where = f"{self.path}: record {index}"
                arrays = parse_fixed(payload, self.spec, where)
                yield scene_from_arrays(self.layout, arrays, index=index, meta=self.meta(split, index), where=where)
        except TFRecordError as err:
            raise SourceError(str(err)) from err


class ClevrWithMasks(MultiObjectTFRecord):
    """CLEVR with masks: 100,000 records of 240×320 renders, up to 10 objects, 11 entity masks.

    Option ``split_convention``, all ranges of record numbers:

    * ``slot_attention`` (default; Slot Attention / IODINE): train = the first 70,000; test = the
      320 scenes right after them (the authors' statement in google-research#595). No val split.
    * ``clevrtex`` (ClevrTex framework): test [0, 15000), val [15000, 30000), train [30000, end).
    * ``hhousen`` (object-discovery-pytorch): train [0, 70000), val [70001, 85000),
      test [85001, 100000); records 70000 and 85000 belong to no split, as there.

    CLEVR6 is ``max_objects: 6`` (at most six objects; applied within each range, and before the
    test split's 320 are taken).
    """

    info = SourceInfo(
        name="clevr-with-masks",
        summary="CLEVR with masks (DeepMind multi_object_datasets), 240x320, up to 10 objects, "
        "splits per split_convention (slot_attention | clevrtex | hhousen), max_objects for CLEVR6",
        layout="data/raw/clevr-with-masks/clevr_with_masks_train.tfrecords",
        origin=f"{BUCKET}/clevr_with_masks/clevr_with_masks_train.tfrecords "
        "(gs://multi-object-datasets, google-deepmind/multi_object_datasets)",
    )
    layouts = {None: CLEVR}
    allowed_options = MultiObjectTFRecord.allowed_options | {"split_convention"}
    CONVENTIONS = {
        "slot_attention": {"train": SplitRange(0, 70_000), "test": SplitRange(70_000, None, 320)},
        "clevrtex": {"test": SplitRange(0, 15_000), "val": SplitRange(15_000, 30_000), "train": SplitRange(30_000)},
        "hhousen": {"train": SplitRange(0, 70_000), "val": SplitRange(70_001, 85_000), "test": SplitRange(85_001, 100_000)},
    }

    def __init__(self, root: str | Path, **options: Any) -> None:
        self.convention = str(options.get("split_convention", "slot_attention"))
        if self.convention not in self.CONVENTIONS:
            raise SourceError(
                f"clevr-with-masks: unknown split_convention '{self.convention}' (known: {', '.join(self.CONVENTIONS)})"
            )
        super().__init__(root, **options)

    def default_splits(self) -> dict[str, SplitRange]:
        return dict(self.CONVENTIONS[self.convention])

    def meta(self, split: str, index: int) -> dict[str, Any]:
        return {**super().meta(split, index), "split_convention": self.convention}


class Tetrominoes(MultiObjectTFRecord):
    """Tetrominoes: 1,000,000 records of 35×35 images with three pieces, 4 entity masks.

    Splits as object-discovery-pytorch's HDF5 export uses them: train [0, 60000),
    val [60001, 75000), test [75001, 90000) (records 60000 and 75000 unused, as there).
    """

    info = SourceInfo(
        name="tetrominoes",
        summary="Tetrominoes (DeepMind multi_object_datasets), 35x35, 3 objects, "
        "splits train [0,60000) / val [60001,75000) / test [75001,90000)",
        layout="data/raw/tetrominoes/tetrominoes_train.tfrecords",
        origin=f"{BUCKET}/tetrominoes/tetrominoes_train.tfrecords (gs://multi-object-datasets)",
    )
    layouts = {None: TETROMINOES}

    def default_splits(self) -> dict[str, SplitRange]:
        return {"train": SplitRange(0, 60_000), "val": SplitRange(60_001, 75_000), "test": SplitRange(75_001, 90_000)}


class MultiDSprites(MultiObjectTFRecord):
    """Multi-dSprites: 1,000,000 records of 64×64 sprites per variant file.

    Option ``variant``: binarized (grey image repeated to RGB, E = 4), colored_on_grayscale (E = 6)
    or colored_on_colored (E = 5); detected from the file name when only one is present. Splits:
    train [0, 60000) (Slot Attention's 60K), val [60000, 75000), test [75000, 90000).
    """

    info = SourceInfo(
        name="multi-dsprites",
        summary="Multi-dSprites (DeepMind multi_object_datasets), 64x64, variants binarized / "
        "colored_on_grayscale / colored_on_colored, splits train 60K / val 15K / test 15K",
        layout="data/raw/multi-dsprites/multi_dsprites_<variant>.tfrecords "
        "(variant: binarized | colored_on_grayscale | colored_on_colored)",
        origin=f"{BUCKET}/multi_dsprites/multi_dsprites_<variant>.tfrecords (gs://multi-object-datasets)",
    )
    layouts = MULTI_DSPRITES


class ObjectsRoom(MultiObjectTFRecord):
    """Objects Room: 64×64 rooms; mask ids 1-3 are the floor and the two wall halves (objects
    entries with role floor/wall), ids ≥ 4 the objects; 0 is the sky.

    Option ``variant``: train (1M records, E = 7; splits train [0, 60000), val [60000, 75000),
    test [75000, 90000)) or one of the ~1K-record test sets six_objects, empty_room,
    identical_color (single split ``test`` = the whole file). No per-object factors, so no
    ``max_objects`` filter.
    """

    info = SourceInfo(
        name="objects-room",
        summary="Objects Room (DeepMind multi_object_datasets), 64x64, variants train / six_objects / "
        "empty_room / identical_color; train splits 60K/15K/15K, test variants whole",
        layout="data/raw/objects-room/objects_room_train.tfrecords or "
        "objects_room_test_<variant>.tfrecords (six_objects | empty_room | identical_color)",
        origin=f"{BUCKET}/objects_room/objects_room_train.tfrecords and objects_room_test_<variant>.tfrecords "
        "(gs://multi-object-datasets)",
    )
    layouts = OBJECTS_ROOM
    default_variant = "train"

    def default_splits(self) -> dict[str, SplitRange]:
        return dict(SA_60K) if self.variant == "train" else {"test": SplitRange(0)}
