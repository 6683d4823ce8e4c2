"""Source formats, one module each; ``SOURCES`` maps the CLI name to the class."""

from __future__ import annotations

from objdisc.data.sources.base import Source, SourceError, SourceInfo
from objdisc.data.sources.clevr3d import Clevr3D

SOURCES: dict[str, type[Source]] = {
    cls.info.name: cls
    for cls in [
        Clevr3D,
    ]
}


def get_source(name: str) -> type[Source]:
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceError(f"unknown source '{name}' (known: {', '.join(sorted(SOURCES))})") from None


__all__ = ["SOURCES", "Source", "SourceError", "SourceInfo", "get_source"]
