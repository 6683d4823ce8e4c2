"""Model registry: name → (config dataclass, model class, paper, presets). ``objdisc models`` lists them.

Adding a model: its module ``objdisc/models/<name>.py`` (config dataclass + ``Model`` subclass),
one ``Entry`` below, one ``models.<name>`` block in ``params.yaml`` (its ``cpu`` preset), its test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from objdisc.config import ConfigError, build
from objdisc.models.base import Model, ModelOutput, SceneModel
from objdisc.models import obsurf, osrt, srt
from objdisc.models import emorl, genesis_v2, iodine, monet  # mixture models
from objdisc.models import gnm, space, spair  # glimpse models
from objdisc.models import dti_sprites, marionette, slate  # sprite and token models
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
    "dti_sprites": Entry(dti_sprites.DTISpritesConfig, dti_sprites.DTISprites, "Monnier et al. 2021, Unsupervised Layered Image Decomposition into Object Prototypes", dti_sprites.PRESETS),
    "marionette": Entry(marionette.MarioNetteConfig, marionette.MarioNette, "Smirnov et al. 2021, MarioNette: Self-Supervised Sprite Learning", marionette.PRESETS),
    "slate": Entry(slate.SLATEConfig, slate.SLATE, "Singh et al. 2022, Illiterate DALL-E Learns to Compose (SLATE)", slate.PRESETS),
    "monet": Entry(monet.MONetConfig, monet.MONet, "Burgess et al. 2019, MONet", monet.PRESETS),
    "iodine": Entry(iodine.IODINEConfig, iodine.IODINE, "Greff et al. 2019, IODINE", iodine.PRESETS),
    "genesis_v2": Entry(genesis_v2.GenesisV2Config, genesis_v2.GenesisV2, "Engelcke et al. 2021, GENESIS-V2", genesis_v2.PRESETS),
    "emorl": Entry(emorl.EMORLConfig, emorl.EfficientMORL, "Emami et al. 2021, Efficient-MORL", emorl.PRESETS),
    "spair": Entry(spair.SPAIRConfig, spair.SPAIR, "Crawford & Pineau 2019, Spatially Invariant Unsupervised Object Detection (SPAIR)", spair.PRESETS),
    "space": Entry(space.SPACEConfig, space.SPACE, "Lin et al. 2020, SPACE", space.PRESETS),
    "gnm": Entry(gnm.GNMConfig, gnm.GNM, "Jiang & Ahn 2020, Generative Neurosymbolic Machines", gnm.PRESETS),
}


def data_inputs(config: type) -> dict[str, str]:
    """Field name → data key of the fields a config declares with ``data_input``."""
    return {f.name: f.metadata["data_input"] for f in dataclasses.fields(config) if "data_input" in f.metadata}


def model_config(name: str, options: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> Any:
    """The config of model ``name``: its paper defaults (or ``preset``), overridden by ``options``,
    with the fields the config declares as data inputs taken from ``data`` (e.g. ``image_size``).

    A block that sets a data-input field to something else than the data gives is an error naming
    both, so ``dvc exp run -S dataset=<name>`` needs no second change and never half-applies."""
    if name not in MODELS:
        raise ConfigError(f"model: unknown model '{name}' (known: {', '.join(MODELS)})")
    entry = MODELS[name]
    options = dict(options or {})
    for field_name, key in data_inputs(entry.config).items():
        if data is None or key not in data:
            continue
        value, given = data[key], options.get(field_name)
        if given is not None and given not in (value, [value, value], (value, value)):
            raise ConfigError(
                f"models.{name}.{field_name} is {given} but the data's {key} is {value}: the model takes it from the "
                f"dataset (datasets.<name>.image.size); remove models.{name}.{field_name} or change the dataset's size"
            )
        options[field_name] = value
    preset = options.pop("preset", None)
    if preset is not None:
        if preset not in entry.presets:
            raise ConfigError(f"models.{name}.preset: unknown preset '{preset}' (known: {', '.join(entry.presets)})")
        base = dataclasses.asdict(entry.presets[preset])
        options = {**base, **options}
    return build(entry.config, options, f"models.{name}")


def build_model(name: str, options: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> Model:
    return MODELS[name].model(model_config(name, options, data))


def param_count(model: Model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "Model", "ModelOutput", "SceneModel", "build_model", "data_inputs", "model_config", "param_count"]
