"""objdisc sprites: procedural 2D sprites, the proving ground of the 2D object-discovery models.

Each 64×64 image shows 2–5 flat-coloured sprites (square, ellipse, heart, triangle and four
tetrominoes) at random positions, sizes and rotations, in random saturated colours, painted in
order (later ones occlude earlier ones) over a plain grey or colored background. Every object
keeps at least ``min_visible`` pixels after occlusion, so each mask id is really there. No
anti-aliasing: colours are flat and the masks are exact ids. Objects are 10–24 px by default, big
enough that a small model learns to separate them within CPU minutes; every 2D model has to show
that it does here before it is run on the real datasets.

The output is byte-for-byte DeepMind's Multi-dSprites layout, so the ``multi-dsprites`` source
reads it like the published files (``colored_on_grayscale``: background + 5 entity slots,
``colored_on_colored``: background + 4):

    <out>/multi_dsprites_<variant>.tfrecords   GZIP TFRecord, one tf.train.Example per scene:
        image [64,64,3] and mask [64,64,E,1] (0/255) as one 1-byte string per element;
        x, y, shape, orientation, scale, visibility [E] and color [E,3] as float lists
    <out>/sprites.json                         the config and the shape and colour tables

Scene i is drawn from ``np.random.default_rng([seed, i])``: it does not depend on how many scenes
are generated, and the same config always writes the same bytes.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from objdisc.data.sources.multi_object import MULTI_DSPRITES, Layout
from objdisc.data.tf_example import encode_example
from objdisc.data.tfrecord import write_records
from objdisc.io import write_json

SIZE = 64  # the only image size of the Multi-dSprites layout

# Shape codes are 1 + the index here (0 = empty slot), whatever subset a config draws from.
# The O tetromino is left out: it would be a second "square".
SHAPES = (
    "square", "ellipse", "heart", "triangle",
    "tetromino_i", "tetromino_l", "tetromino_s", "tetromino_t",
)
TETROMINOES = {  # cells, row by row (rows grow downwards)
    "tetromino_i": ("####",),
    "tetromino_l": ("#..", "###"),
    "tetromino_s": (".##", "##."),
    "tetromino_t": ("###", ".#."),
}
# Cell tables with an empty border, so that any clipped cell index looks up "outside".
_CELLS = {name: np.pad([[c == "#" for c in row] for row in rows], 1) for name, rows in TETROMINOES.items()}
# A tetromino cell is a third of the object's scale: L, S and T then fill 1 × 2/3 of it (about
# the area of the ellipse and the triangle), the I piece 4/3 × 1/3.
_CELL = 1 / 3
_ELLIPSE_MINOR = 0.6  # minor / major axis: elongated, so that orientation shows

# Colours in HSV. Objects are saturated and bright; a grey background then differs from every
# object by at least S·V/2 ≥ 0.245 in some channel, a colored one (V ≤ 0.5) by at least 0.25 in
# the object's brightest channel: about 62 grey levels either way.
OBJECT_HSV = {"saturation": (0.7, 1.0), "value": (0.75, 1.0)}
BACKGROUND_GREY = (0.0, 1.0)
BACKGROUND_HSV = {"saturation": (0.4, 0.8), "value": (0.25, 0.5)}

_OBJECT_TRIES = 100  # placements tried per object before the scene is redrawn
_SCENE_TRIES = 20


@dataclass
class SpritesConfig:
    """Knobs of the generator; defaults suit small CPU models."""

    scenes: int = 2000
    size: int = SIZE
    min_objects: int = 2
    max_objects: int = 5
    background: Literal["grayscale", "colored"] = "grayscale"
    # Object scale (bounding square of the unrotated shape) as a fraction of the image side:
    # 0.16–0.375 is 10–24 px on 64×64.
    min_scale: float = 0.16
    max_scale: float = 0.375
    min_visible: int = 20  # pixels each object keeps after occlusion
    shapes: tuple[str, ...] = SHAPES
    seed: int = 0

    def __post_init__(self) -> None:
        self.shapes = tuple(self.shapes)  # YAML gives a list
        self.validate()

    @property
    def variant(self) -> str:
        return "colored_on_grayscale" if self.background == "grayscale" else "colored_on_colored"

    @property
    def layout(self) -> Layout:
        return MULTI_DSPRITES[self.variant]

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""

        def bad(field: str, why: str) -> None:
            raise ValueError(f"SpritesConfig.{field} = {getattr(self, field)!r}: {why}")

        if self.scenes < 1:
            bad("scenes", "must be >= 1")
        if self.seed < 0:
            bad("seed", "must be >= 0 (it seeds numpy's default_rng)")
        if self.size != SIZE:
            bad("size", f"the Multi-dSprites layout has {SIZE}x{SIZE} images only")
        if self.background not in ("grayscale", "colored"):
            bad("background", "must be 'grayscale' or 'colored'")
        slots = self.layout.entities - 1
        if not 1 <= self.min_objects <= slots:
            bad("min_objects", f"must be in [1, {slots}] for background '{self.background}'")
        if not self.min_objects <= self.max_objects <= slots:
            bad("max_objects", f"must be in [min_objects={self.min_objects}, {slots}] "
                f"(the {self.variant} layout holds {slots} objects)")
        if not 0 < self.min_scale <= self.max_scale:
            bad("min_scale", f"must be in (0, max_scale={self.max_scale}]")
        if self.max_scale > 1:
            bad("max_scale", "must be <= 1 (a fraction of the image side)")
        if self.min_visible < 1:
            bad("min_visible", "must be >= 1")
        # The smallest shapes (triangle, I piece) cover about 0.43 scale²: leave room for occlusion.
        if 0.4 * (self.min_scale * self.size) ** 2 < 1.5 * self.min_visible:
            bad("min_scale", f"too small for min_visible={self.min_visible} pixels per object")
        if not self.shapes or set(self.shapes) - set(SHAPES) or len(set(self.shapes)) != len(self.shapes):
            bad("shapes", f"must be distinct names among {list(SHAPES)}")


# --------------------------------------------------------------------------------------------
# Rasterisation: membership tests on the pixel-centre grid, in the object's frame


_CENTRES = (np.arange(SIZE) + 0.5) / SIZE  # pixel centres, as fractions of the image side
_REACH = 0.72  # every shape lies within this many scales of its centre (square: √½)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels of ``shape`` given coordinates in its frame: unit = scale, origin at the centre,
    v pointing down the image; every shape but the I piece fits the square [-0.5, 0.5]²."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.5
    if shape == "ellipse":
        return (2 * u) ** 2 + (2 * v / _ELLIPSE_MINOR) ** 2 <= 1
    if shape == "heart":
        # (x² + y² − 1)³ ≤ x² y³ spans x ∈ ±1.139, y ∈ [−1, 1.236]: scaled to the unit square,
        # centred, lobes up.
        x, y = 2.28 * u, 0.118 - 2.28 * v
        r = x * x + y * y - 1
        return r * r * r <= x * x * y * y * y  # products: float ** is several times slower
    if shape == "triangle":
        # Equilateral, side 1: inside all three edges, each at the inradius from the centroid.
        inradius, half = 0.5 / math.sqrt(3), math.sqrt(3) / 2
        return (v <= inradius) & (-half * u - 0.5 * v <= inradius) & (half * u - 0.5 * v <= inradius)
    cells = _CELLS[shape]
    rows, cols = cells.shape  # border included
    # Cell index + 1 (the border), clipped into the table first so truncation equals floor.
    r = np.clip(v / _CELL + rows / 2, 0, rows - 1).astype(np.intp)
    c = np.clip(u / _CELL + cols / 2, 0, cols - 1).astype(np.intp)
    return cells[r, c]


def _window(centre: float, reach: float) -> slice:
    return slice(max(0, math.floor((centre - reach) * SIZE)), min(SIZE, math.ceil((centre + reach) * SIZE) + 1))


def rasterise(shape: str, x: float, y: float, scale: float, orientation: float) -> np.ndarray:
    """Bool [64,64]: the pixels whose centre lies in the shape centred at (x, y) (fractions of
    the image side, y down), ``scale`` wide, turned by ``orientation`` radians."""
    # Only the window around the centre is tested (about a quarter of the image at the default
    # scales): the membership tests are most of the generator's time.
    rows, cols = _window(y, _REACH * scale), _window(x, _REACH * scale)
    dx = (_CENTRES[None, cols] - x) / scale
    dy = (_CENTRES[rows, None] - y) / scale
    cos, sin = math.cos(orientation), math.sin(orientation)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[rows, cols] = _inside(shape, cos * dx + sin * dy, cos * dy - sin * dx)
    return inside


# --------------------------------------------------------------------------------------------
# Scenes


def _hsv(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A random colour as uint8 RGB: hue uniform, saturation and value in the given ranges."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return np.round(np.array(rgb) * 255).astype(np.uint8)


def _background(cfg: SpritesConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.background == "grayscale":
        return np.full(3, round(rng.uniform(*BACKGROUND_GREY) * 255), np.uint8)
    return _hsv(rng, BACKGROUND_HSV["saturation"], BACKGROUND_HSV["value"])


def _place(cfg: SpritesConfig, rng: np.random.Generator, ids: np.ndarray, k: int) -> dict[str, Any] | None:
    """Draw object ``k`` until it and every earlier object keep ``min_visible`` pixels."""
    for _ in range(_OBJECT_TRIES):
        scale = rng.uniform(cfg.min_scale, cfg.max_scale)
        obj = {
            "shape": cfg.shapes[rng.integers(len(cfg.shapes))],
            # Centres keep half a scale from the border: a turned shape may lose a corner.
            "x": rng.uniform(scale / 2, 1 - scale / 2),
            "y": rng.uniform(scale / 2, 1 - scale / 2),
            "scale": scale,
            "orientation": rng.uniform(0, 2 * math.pi),
            "rgb": _hsv(rng, OBJECT_HSV["saturation"], OBJECT_HSV["value"]),
        }
        inside = rasterise(obj["shape"], obj["x"], obj["y"], scale, obj["orientation"])
        painted = np.where(inside, np.uint8(k), ids)
        if np.bincount(painted.ravel(), minlength=k + 1)[1:].min() >= cfg.min_visible:
            obj["ids"] = painted
            return obj
    return None


def render_sprites(cfg: SpritesConfig, index: int) -> dict[str, np.ndarray]:
    """Scene ``index`` of ``cfg``: image uint8 [64,64,3], ids uint8 [64,64] (0 background, k the
    k-th object painted) and the record's features as the Multi-dSprites reader declares them:
    mask uint8 [64,64,E,1] (255 where ids == k), x, y, shape, orientation, scale, visibility
    float32 [E] and color float32 [E,3] (entity 0 is the background, with its colour; empty
    slots are all zero)."""
    rng = np.random.default_rng([cfg.seed, index])
    e = cfg.layout.entities
    for _ in range(_SCENE_TRIES):
        background = _background(cfg, rng)
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        ids = np.zeros((SIZE, SIZE), np.uint8)
        objects = []
        for k in range(1, count + 1):
            obj = _place(cfg, rng, ids, k)
            if obj is None:
                break  # no room left for this one: draw the whole scene again
            ids = obj["ids"]
            objects.append(obj)
        else:
            break
    else:
        raise RuntimeError(f"sprites scene {index}: no placement found in {_SCENE_TRIES} tries; "
                           "lower max_objects, max_scale or min_visible")

    palette = np.zeros((e, 3), np.uint8)
    palette[0] = background
    out = {name: np.zeros(e, np.float32) for name in ("x", "y", "shape", "orientation", "scale", "visibility")}
    out["visibility"][0] = 1.0
    for k, obj in enumerate(objects, start=1):
        palette[k] = obj["rgb"]
        out["x"][k], out["y"][k], out["scale"][k] = obj["x"], obj["y"], obj["scale"]
        out["orientation"][k] = obj["orientation"]
        out["shape"][k] = SHAPES.index(obj["shape"]) + 1
        out["visibility"][k] = 1.0
    out["color"] = palette.astype(np.float32) / 255  # exactly the painted uint8 colours
    out["image"] = palette.take(ids, axis=0)
    out["ids"] = ids
    out["mask"] = (ids[..., None, None] == np.arange(e)[:, None]).view(np.uint8) * np.uint8(255)  # [H,W,E,1]
    return out


def encode_scene(cfg: SpritesConfig, scene: dict[str, np.ndarray]) -> bytes:
    """The serialized tf.train.Example of a scene from ``render_sprites``."""
    return encode_example({name: scene[name] for name in cfg.layout.features()})


def generate(cfg: SpritesConfig, out: str | Path, progress: bool = True) -> Path:
    """Write ``cfg.scenes`` scenes to ``out/multi_dsprites_<variant>.tfrecords`` (GZIP) and the
    tables to ``out/sprites.json``, each atomically; return ``out``."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layout = cfg.layout
    indices = tqdm(range(cfg.scenes), desc="sprites", unit="scene", disable=not progress)
    write_records(out / layout.file, (encode_scene(cfg, render_sprites(cfg, i)) for i in indices), "GZIP")
    info = {
        "config": dataclasses.asdict(cfg),
        "variant": cfg.variant,
        "file": layout.file,
        "entities": layout.entities,
        "shapes": {str(code): name for code, name in enumerate(SHAPES, start=1)},
        "tetrominoes": {name: list(rows) for name, rows in TETROMINOES.items()},
        "colors": {
            "object_hsv": OBJECT_HSV,
            "background_grey": BACKGROUND_GREY if cfg.background == "grayscale" else None,
            "background_hsv": BACKGROUND_HSV if cfg.background == "colored" else None,
        },
    }
    write_json(out / "sprites.json", info)
    return out
