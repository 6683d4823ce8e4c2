"""Source formats, one module each; ``SOURCES`` maps the CLI name (`objdisc convert <name>`) to
the class that reads it."""

from __future__ import annotations

from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.clevr import Clevr
from objdisc.data.sources.clevr3d import Clevr3D
from objdisc.data.sources.clevr_npz import ClevrNpz
from objdisc.data.sources.clevrtex import ClevrTex
from objdisc.data.sources.kubric_msn import KubricMSN, KubricMSNHard
from objdisc.data.sources.multi_object import ClevrWithMasks, MultiDSprites, ObjectsRoom, Tetrominoes
from objdisc.data.sources.multi_object_hdf5 import MultiObjectHDF5
from objdisc.data.sources.nmr import NMR
from objdisc.data.sources.obsurf import ObsurfMSN, ObsurfSprites
from objdisc.data.sources.ravens import Ravens
from objdisc.data.sources.shapes3d import Shapes3D
from objdisc.data.sources.sketchy import Sketchy

SOURCES: dict[str, type[Source]] = {
    cls.info.name: cls
    for cls in [
        ClevrWithMasks,
        Tetrominoes,
        MultiDSprites,
        ObjectsRoom,
        ClevrTex,
        ClevrNpz,
        MultiObjectHDF5,
        Clevr,
        NMR,
        KubricMSN,
        KubricMSNHard,
        Clevr3D,
        ObsurfMSN,
        ObsurfSprites,
        Shapes3D,
        Sketchy,
        Ravens,
    ]
}


def get_source(name: str) -> type[Source]:
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceError(f"unknown source '{name}' (known: {', '.join(sorted(SOURCES))})") from None


__all__ = ["SOURCES", "Source", "SourceError", "SourceInfo", "get_source"]
