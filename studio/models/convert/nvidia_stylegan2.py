"""An NVIDIA StyleGAN2 training snapshot (read by ``nvidia_pickle``) -> the studio's StyleGAN2 config and tensors.

NVIDIA's networks and the studio's ``stylegan2`` family share their state-dict key names, so the tensors
carry over as they are (in float32); what needs converting is the init kwargs, which NVIDIA nests per
sub-network and the studio keeps in one flat config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from studio.models.convert import ConversionError
from studio.models.convert.nvidia_pickle import NvidiaSnapshot
from studio.models.folder import ModelConfig

# What stylegan2-ada-pytorch's networks take when a kwarg is not given (its training configs set them all).
_MAPPING_DEFAULTS = {"num_layers": 8, "lr_multiplier": 0.01, "embed_features": None}
_SYNTHESIS_DEFAULTS = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": None,
                       "architecture": "skip"}
_DISCRIMINATOR_DEFAULTS = {"channel_base": 32768, "channel_max": 512, "architecture": "resnet", "cmap_dim": None}
_EPILOGUE_DEFAULTS = {"mbstd_group_size": 4, "mbstd_num_channels": 1}


@dataclass(frozen=True)
class Converted:
    """A snapshot as the studio stores it: config, generator tensors, discriminator tensors (None: no D)."""

    config: ModelConfig
    generator_state: dict[str, torch.Tensor]
    discriminator_state: dict[str, torch.Tensor] | None


def convert_snapshot(snapshot: NvidiaSnapshot, where: str, class_names: tuple[str, ...] = (),
                     **about: Any) -> Converted:
    """The studio model of an NVIDIA StyleGAN2 snapshot (its tensors are checked against the config when written).

    Args:
        snapshot: What ``nvidia_pickle.read_snapshot`` read.
        where: The file's name, for messages.
        class_names: Names of a conditional model's classes, in class-vector order; default ``0``..``K-1``.
        **about: ``title``, ``description``, ``license``, ``author``, ``source`` for the config.

    Raises:
        ConversionError: A StyleGAN3 generator, an architecture the studio does not draw, or class names that
            do not fit; each said in one sentence.
    """
    if snapshot.family != "stylegan2":
        raise ConversionError(f"{where} holds a StyleGAN3 (alias-free) generator, which the studio does not draw: "
                              f"in plain PyTorch it is too slow to explore (about a minute per 256 px image on a "
                              f"2-core CPU); only StyleGAN2 snapshots (stylegan2-ada-pytorch, or stylegan3's "
                              f"stylegan2 config) can be imported")
    g = snapshot.generator_kwargs
    mapping = {**_MAPPING_DEFAULTS, **g.get("mapping_kwargs", {})}
    synthesis = {**_SYNTHESIS_DEFAULTS, **g.get("synthesis_kwargs", {})}
    if synthesis["architecture"] != "skip":
        raise ConversionError(f"{where}: its generator has the {synthesis['architecture']!r} architecture; the "
                              f"studio draws StyleGAN2's 'skip' generator (config-e/f and every ADA config)")
    num_classes = int(g.get("c_dim", 0))
    names = tuple(class_names) or tuple(str(i) for i in range(num_classes))
    if len(names) != num_classes:
        raise ConversionError(f"{where} is a model of {num_classes} classes, not {len(names)}: name each of them "
                              f"(--classes a,b,...)")
    arch: dict[str, Any] = {
        "resolution": int(g["img_resolution"]), "z_dim": int(g["z_dim"]), "w_dim": int(g["w_dim"]),
        "num_classes": num_classes, "channels": int(g.get("img_channels", 3)),
        "mapping_layers": int(mapping["num_layers"]), "lr_multiplier": float(mapping["lr_multiplier"]),
        "embed_features": mapping["embed_features"], "channel_base": int(synthesis["channel_base"]),
        "channel_max": int(synthesis["channel_max"]), "num_fp16_res": int(synthesis["num_fp16_res"]),
        "conv_clamp": synthesis["conv_clamp"],
    }
    d_state = None
    if snapshot.discriminator_kwargs is not None:
        arch.update(_discriminator_arch(snapshot.discriminator_kwargs, arch, where))
        d_state = _float32(snapshot.discriminator_state or {})
    try:
        config = ModelConfig("stylegan2", arch, names, **about)
    except ValueError as e:
        raise ConversionError(f"{where} describes no StyleGAN2 the studio can build: {e}") from None
    return Converted(config, _float32(snapshot.generator_state), d_state)


def _discriminator_arch(d: dict[str, Any], arch: dict[str, Any], where: str) -> dict[str, Any]:
    """The config fields the discriminator sets; its shared fields must agree with the generator's."""
    kwargs = {**_DISCRIMINATOR_DEFAULTS, **{k: v for k, v in d.items() if k in _DISCRIMINATOR_DEFAULTS}}
    epilogue = {**_EPILOGUE_DEFAULTS, **d.get("epilogue_kwargs", {})}
    if kwargs["architecture"] != "resnet":
        raise ConversionError(f"{where}: its discriminator has the {kwargs['architecture']!r} architecture; the "
                              f"studio trains StyleGAN2's 'resnet' discriminator")
    for key in ("channel_base", "channel_max"):
        if int(kwargs[key]) != arch[key]:
            raise ConversionError(f"{where}: its discriminator's {key} ({kwargs[key]}) differs from its "
                                  f"generator's ({arch[key]}); the studio keeps one for both")
    return {"mbstd_group_size": int(epilogue["mbstd_group_size"]),
            "mbstd_num_channels": int(epilogue["mbstd_num_channels"]), "cmap_dim": kwargs["cmap_dim"]}


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors in float32: fp16 layers are computed in the engine's precision, not stored in half."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
