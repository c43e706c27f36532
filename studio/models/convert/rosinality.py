"""rosinality/stylegan2-pytorch checkpoints (``.pt``) -> the studio's StyleGAN2.

A checkpoint is a ``torch.save`` dict: ``g_ema`` (the generator's moving average, the one to draw with),
``latent_avg`` in files converted from NVIDIA's, and from training also ``g``, ``d``, the optimizers'
states and ``args`` (an ``argparse.Namespace``, the one type beyond tensors and plain containers that
``torch.load(weights_only=True)`` must be allowed to build: ``CHECKPOINT_TYPES``).

The networks compute what the studio's do (equalized learning rate, modulated and demodulated 3x3
convolutions, up-sampling by a stride-2 transposed convolution then the [1,3,3,1] filter with padding
1 on each side, ToRGB skips up-sampled by the same filter with padding 2 before and 1 after), so the
tensors carry over renamed and reshaped, none flipped:

======================================================  ======================================================
rosinality                                              studio
======================================================  ======================================================
``style.{i}.weight``, ``.bias`` (``i`` from 1)          ``mapping.fc{i-1}.*`` (the same lr multiplier, 0.01)
``latent_avg``                                          ``mapping.w_avg`` (or the mean w of 10,000 seeded z)
``input.input`` ``[1, C, 4, 4]``                        ``synthesis.b4.const``
``conv1``, ``to_rgb1``                                  ``synthesis.b4.conv1``, ``synthesis.b4.torgb``
``convs.{2k}``, ``convs.{2k+1}``, ``to_rgbs.{k}``       ``synthesis.b{2^(k+3)}.conv0``, ``.conv1``, ``.torgb``
``*.conv.weight`` ``[1, O, I, k, k]``                   ``*.weight`` ``[O, I, k, k]``
``*.conv.modulation.*``                                 ``*.affine.*``
``*.noise.weight`` ``[1]``, ``*.activate.bias``         ``*.noise_strength`` ``[]``, ``*.bias``
``to_rgb*.bias`` ``[1, 3, 1, 1]``                       ``*.torgb.bias`` ``[3]``
``noises.noise_{j}`` ``[1, 1, r, r]``                   ``noise_const`` of convolution j, counted from 4x4
``d``: ``convs.0``                                      ``b{R}.fromrgb``
``d``: ``convs.{i}.conv1``, ``.conv2``, ``.skip``       ``b{R/2^(i-1)}.conv0``, ``.conv1``, ``.skip``
``d``: ``final_conv``, ``final_linear.0``, ``.1``       ``b4.conv``, ``b4.fc``, ``b4.out``
======================================================  ======================================================

rosinality's generator is unconditional, and its minibatch-stddev layer takes groups of 4 with one feature
channel, as the studio's defaults do. The mapping's lr multiplier (0.01, rosinality's default) is not
stored in the file: a model trained with another ``lr_mlp`` is read as 0.01 unless ``args`` says otherwise.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import torch

from studio.models.convert import ConversionError, add_filter_buffers, stylegan2_config, stylegan2_widths
from studio.models.convert.nvidia_stylegan2 import Converted
from studio.models.folder import ModelConfig, ModelFolderError, build_generator, check_state_dict
from studio.models.stylegan2 import fir_filter

CHECKPOINT_TYPES: tuple[type, ...] = (argparse.Namespace,)
W_AVG_SAMPLES = 10_000
W_AVG_SEED = 0
_LR_MLP = 0.01


def is_rosinality(loaded: object) -> bool:
    """Whether a ``torch.load`` result is a rosinality checkpoint (a dict with a ``g_ema`` state dict)."""
    return isinstance(loaded, dict) and isinstance(loaded.get("g_ema"), dict)


def convert_rosinality(loaded: dict, where: str, class_names: tuple[str, ...] = (), **about: Any) -> Converted:
    """The studio model of a rosinality checkpoint: ``g_ema`` as the generator, ``d`` (if any) for fine-tuning.

    Args:
        loaded: The checkpoint, as ``torch.load(weights_only=True)`` read it.
        where: The file's name, for messages.
        class_names: Must be empty: rosinality's generator is unconditional.
        **about: ``title``, ``license``, ``author``, ``source`` for the config.

    Raises:
        ConversionError: A tensor missing, left over or of a foreign filter, or widths the studio cannot build.
    """
    if class_names:
        raise ConversionError(f"{where} is a model of 0 classes, not {len(class_names)}: leave out --classes")
    g = _tensors(loaded["g_ema"], "g_ema", where)
    depth = sum(1 for key in g if re.fullmatch(r"style\.\d+\.weight", key))
    convs = sum(1 for key in g if re.fullmatch(r"convs\.\d+\.conv\.weight", key))
    if not depth or "input.input" not in g or convs < 2 or convs % 2:
        raise ConversionError(f"{where} holds a g_ema without the mapping (style.*), constant input (input.input) "
                              f"and pairs of convolutions (convs.*) of a rosinality StyleGAN2 generator")
    blocks = [4] + [2 ** (k + 3) for k in range(convs // 2)]
    widths = {4: g["input.input"].shape[1]}
    widths.update({side: g[f"convs.{2 * k}.conv.weight"].shape[1] for k, side in enumerate(blocks[1:])})
    args = loaded.get("args")
    arch = {"resolution": blocks[-1], "z_dim": g["style.1.weight"].shape[1], "w_dim": g[f"style.{depth}.weight"].shape[0],
            "num_classes": 0, "channels": g["to_rgb1.conv.weight"].shape[1], "mapping_layers": depth,
            "lr_multiplier": float(getattr(args, "lr_mlp", _LR_MLP)), **stylegan2_widths(widths, where)}
    taken = _Taken(g, "g_ema", where)
    try:
        state = _generator_state(taken, blocks, depth)
    except (IndexError, RuntimeError) as e:  # a tensor too small to index or reshape as rosinality's are
        raise ConversionError(f"{where}: its g_ema tensors do not have the shapes of rosinality's ({e})") from None
    taken.check_all_taken()
    d_state, dropped = None, ""
    if isinstance(loaded.get("d"), dict):
        d_state, dropped = _discriminator_state(_tensors(loaded["d"], "d", where), blocks[-1], where)
    config = stylegan2_config(arch, where, "a rosinality/stylegan2-pytorch checkpoint", dropped, **about)
    add_filter_buffers(config, state, d_state)
    latent_avg = loaded.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        state["mapping.w_avg"] = latent_avg.detach().float().reshape(-1)
    else:
        state["mapping.w_avg"] = _mean_w(config, state, where)
    return Converted(config, state, d_state)


def _generator_state(taken: _Taken, blocks: list[int], depth: int) -> dict[str, torch.Tensor]:
    """The studio generator's tensors (all but ``w_avg`` and the filters), taken from ``g_ema``."""
    state = {}
    for i in range(1, depth + 1):
        state[f"mapping.fc{i - 1}.weight"] = taken.take(f"style.{i}.weight")
        state[f"mapping.fc{i - 1}.bias"] = taken.take(f"style.{i}.bias")
    state["synthesis.b4.const"] = taken.take("input.input")[0]
    state.update(_styled_conv(taken, "synthesis.b4.conv1", "conv1", 0))
    state.update(_to_rgb(taken, "synthesis.b4.torgb", "to_rgb1"))
    for k, side in enumerate(blocks[1:]):
        block = f"synthesis.b{side}"
        taken.filter(f"convs.{2 * k}.conv.blur.kernel", 4.0)  # the up-sampling conv's filter, gain 4 for the zeros
        taken.filter(f"to_rgbs.{k}.upsample.kernel", 4.0)
        state.update(_styled_conv(taken, f"{block}.conv0", f"convs.{2 * k}", 2 * k + 1))
        state.update(_styled_conv(taken, f"{block}.conv1", f"convs.{2 * k + 1}", 2 * k + 2))
        state.update(_to_rgb(taken, f"{block}.torgb", f"to_rgbs.{k}"))
    return state


def _styled_conv(taken: _Taken, key: str, name: str, noise: int) -> dict[str, torch.Tensor]:
    """A StyledConv: modulated kernel, noise weight and buffer, and the fused activation's bias."""
    return {f"{key}.weight": taken.take(f"{name}.conv.weight")[0],
            f"{key}.affine.weight": taken.take(f"{name}.conv.modulation.weight"),
            f"{key}.affine.bias": taken.take(f"{name}.conv.modulation.bias"),
            f"{key}.noise_strength": taken.take(f"{name}.noise.weight").reshape(()),
            f"{key}.noise_const": taken.take(f"noises.noise_{noise}")[0, 0],
            f"{key}.bias": taken.take(f"{name}.activate.bias")}


def _to_rgb(taken: _Taken, key: str, name: str) -> dict[str, torch.Tensor]:
    """A ToRGB: its 1x1 modulated kernel, style affine and bias."""
    return {f"{key}.weight": taken.take(f"{name}.conv.weight")[0],
            f"{key}.affine.weight": taken.take(f"{name}.conv.modulation.weight"),
            f"{key}.affine.bias": taken.take(f"{name}.conv.modulation.bias"),
            f"{key}.bias": taken.take(f"{name}.bias").reshape(-1)}


def _discriminator_state(d: dict[str, torch.Tensor], resolution: int,
                         where: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The studio discriminator's tensors from ``d``, or None and why its layout is not the studio's."""
    taken = _Taken(d, "d", where)
    try:
        state = {f"b{resolution}.fromrgb.weight": taken.take("convs.0.0.weight"),
                 f"b{resolution}.fromrgb.bias": taken.take("convs.0.1.bias")}
        side, i = resolution, 1
        while side > 4:
            taken.filter(f"convs.{i}.conv2.0.kernel", 1.0)
            taken.filter(f"convs.{i}.skip.0.kernel", 1.0)
            state |= {f"b{side}.conv0.weight": taken.take(f"convs.{i}.conv1.0.weight"),
                      f"b{side}.conv0.bias": taken.take(f"convs.{i}.conv1.1.bias"),
                      f"b{side}.conv1.weight": taken.take(f"convs.{i}.conv2.1.weight"),
                      f"b{side}.conv1.bias": taken.take(f"convs.{i}.conv2.2.bias"),
                      f"b{side}.skip.weight": taken.take(f"convs.{i}.skip.1.weight")}
            side, i = side // 2, i + 1
        for layer, name in (("conv.weight", "final_conv.0.weight"), ("conv.bias", "final_conv.1.bias"),
                            ("fc.weight", "final_linear.0.weight"), ("fc.bias", "final_linear.0.bias"),
                            ("out.weight", "final_linear.1.weight"), ("out.bias", "final_linear.1.bias")):
            state[f"b4.{layer}"] = taken.take(name)
        taken.check_all_taken()
    except ConversionError as e:  # the generator is whole: keep it, and say why the discriminator is not
        return None, str(e).removeprefix(f"{where}: ")
    return state, ""


def _mean_w(config: ModelConfig, state: dict[str, torch.Tensor], where: str) -> torch.Tensor:
    """The mean w of ``W_AVG_SAMPLES`` seeded z, for a file that does not store it (truncation needs it)."""
    generator = build_generator(config)
    state = {**state, "mapping.w_avg": generator.state_dict()["mapping.w_avg"]}
    try:
        check_state_dict(generator, state, where)
    except ModelFolderError as e:
        raise ConversionError(str(e)) from None
    generator.load_state_dict(state)
    z = torch.randn(W_AVG_SAMPLES, config.z_dim, generator=torch.Generator().manual_seed(W_AVG_SEED))
    with torch.no_grad():
        return torch.cat([generator.latent_features(chunk, None) for chunk in z.split(1000)]).mean(0)


def _tensors(state: dict, name: str, where: str) -> dict[str, torch.Tensor]:
    """``state``'s tensors in float32; anything else in a state dict means it is not one."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{where}: {name}[{key!r}] is a {type(value).__name__}, not a tensor, so {name} is "
                                  f"not a state dict")
    return {key: value.detach().float() for key, value in state.items()}


class _Taken:
    """A state dict's tensors taken one by one, so that one the studio would not use is caught."""

    def __init__(self, state: dict[str, torch.Tensor], name: str, where: str) -> None:
        self._state, self._left = state, set(state)
        self._name, self._where = name, where

    def take(self, key: str) -> torch.Tensor:
        """Tensor ``key``; it counts as used."""
        if key not in self._state:
            raise ConversionError(f"{self._where}: its {self._name} lacks the tensor {key} that a rosinality "
                                  f"StyleGAN2 has")
        self._left.discard(key)
        return self._state[key]

    def filter(self, key: str, gain: float) -> None:
        """Check a stored resampling filter is the [1,3,3,1] one (times ``gain``): the studio's is fixed."""
        stored = self.take(key)
        if stored.shape != (4, 4) or not torch.allclose(stored, fir_filter() * gain):
            raise ConversionError(f"{self._where}: its {self._name} resamples with another filter than [1,3,3,1] "
                                  f"({key}), which the studio's StyleGAN2 does not")

    def check_all_taken(self) -> None:
        """Refuse a tensor StyleGAN2 does not have: the network would lose what it does."""
        if self._left:
            raise ConversionError(f"{self._where}: its {self._name} has a tensor {sorted(self._left)[0]} that "
                                  f"rosinality's StyleGAN2 has not, so it is another network")
