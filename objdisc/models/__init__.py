"""Model registry: name → (config dataclass, model class). ``objdisc models`` lists them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from objdisc.config import ConfigError, build
from objdisc.models.base import Model, ModelOutput, SceneModel
from objdisc.models import obsurf, osrt, srt
from objdisc.models.slot_attention import SlotAttentionAutoEncoder, SlotAttentionConfig


@dataclass(frozen=True)
class Entry:
    config: type
    model: type[Model]
    paper: str
    presets: dict[str, Any]  # preset name → config instance (paper settings; "cpu*" are CPU-sized)


MODELS: dict[str, Entry] = {
    "slot_attention": Entry(
        SlotAttentionConfig,
        SlotAttentionAutoEncoder,
        "Locatello et al. 2020, Object-Centric Learning with Slot Attention",
        {
            "clevr6": SlotAttentionConfig(),
            "clevr10": SlotAttentionConfig(num_slots=11),
            "benchmark": SlotAttentionConfig(num_slots=11, layernorm="map"),  # ClevrTex benchmark copy
        },
    ),
    "srt": Entry(srt.SRTConfig, srt.SRT, "Sajjadi et al. 2022, Scene Representation Transformer", srt.PRESETS),
    "osrt": Entry(osrt.OSRTConfig, osrt.OSRT, "Sajjadi et al. 2022, Object Scene Representation Transformer", osrt.PRESETS),
    "obsurf": Entry(obsurf.ObSuRFConfig, obsurf.ObSuRF, "Stelzner et al. 2021, ObSuRF", obsurf.PRESETS),
}


def model_config(name: str, options: dict[str, Any] | None = None) -> Any:
    """The config of model ``name``: its paper defaults (or ``preset``), overridden by ``options``."""
    if name not in MODELS:
        raise ConfigError(f"model: unknown model '{name}' (known: {', '.join(MODELS)})")
    entry = MODELS[name]
    options = dict(options or {})
    preset = options.pop("preset", None)
    if preset is not None:
        if preset not in entry.presets:
            raise ConfigError(f"models.{name}.preset: unknown preset '{preset}' (known: {', '.join(entry.presets)})")
        base = dataclasses.asdict(entry.presets[preset])
        options = {**base, **options}
    return build(entry.config, options, f"models.{name}")


def build_model(name: str, options: dict[str, Any] | None = None) -> Model:
    cfg = model_config(name, options)
    return MODELS[name].model(cfg)


def param_count(model: Model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "Model", "ModelOutput", "SceneModel", "build_model", "model_config", "param_count"]
