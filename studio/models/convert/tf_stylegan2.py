"""TensorFlow-era NVIDIA pickles (NVlabs/stylegan2 and the TensorFlow release of stylegan2-ada) -> the studio's
StyleGAN2.

Such a file pickles ``(G, D, Gs)``: three ``dnnlib.tflib.network.Network`` objects, which ``nvidia_pickle``
reads as their plain state (``TFNetworkState``): static kwargs, component networks (``mapping``,
``synthesis``), the network's own variables as numpy arrays, and its build module's source, kept as text and
never run. ``Gs`` (the moving average of G's weights) becomes the model and ``D`` is kept for fine-tuning.

How the variables (named relative to their network, components joined by ``/``) become the studio's tensors:

================================================  ===========================  ===================================
TensorFlow variable                               studio tensor                change
================================================  ===========================  ===================================
``dlatent_avg``                                   ``mapping.w_avg``            none
``mapping/Dense{i}/weight`` ``[in, out]``         ``mapping.fc{i}.weight``     transposed (bias as is)
``synthesis/4x4/Const/const`` ``[1, C, 4, 4]``    ``synthesis.b4.const``       the batch axis dropped
``synthesis/4x4/Conv/*``                          ``synthesis.b4.conv1.*``     as below
``synthesis/{r}x{r}/Conv0_up/weight``             ``synthesis.b{r}.conv0``     ``[kh, kw, in, out]`` to ``[out, in,
                                                                               kh, kw]``, flipped in both spatial
                                                                               axes: TF's up-sampling conv flips
                                                                               the kernel before its transposed
                                                                               convolution, the studio's does not
``synthesis/{r}x{r}/Conv1/weight``, ``ToRGB``     ``conv1``, ``torgb``         to ``[out, in, kh, kw]``, no flip:
                                                                               TF's conv2d correlates, as torch's
``*/mod_weight`` ``[w_dim, in]``, ``mod_bias``    ``affine.weight``, ``.bias`` transposed; bias + 1, the 1 TF
                                                                               adds to the styles when it runs
``*/noise_strength``, ``*/bias``                  same names                   none
``synthesis/noise{i}`` ``[1, 1, r, r]``           layer i's ``noise_const``    ``[r, r]``
``{R}x{R}/FromRGB/*`` (D)                         ``b{R}.fromrgb.*``           kernel to ``[out, in, kh, kw]``
``{r}x{r}/Conv0``, ``Conv1_down``, ``Skip`` (D)   ``b{r}.conv0/conv1/skip``    the same, no flip: TF filters,
                                                                               then strides a plain convolution
``4x4/Conv``, ``4x4/Dense0``, ``Output`` (D)      ``b4.conv/fc/out``           dense weights transposed
================================================  ===========================  ===================================

Layer i counts the synthesis convolutions from 4x4 on: ``4x4/Conv`` is 0, ``{r}x{r}/Conv0_up`` is
``2 log2(r) - 5`` and ``Conv1`` the next. The [1,3,3,1] filters are fixed in TensorFlow's code, so the studio's
own buffers are used. TensorFlow has no ``conv_clamp`` (the stylegan2-ada release records it as a kwarg).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from studio.models.convert import ConversionError, add_filter_buffers, stylegan2_config, stylegan2_widths
from studio.models.convert.nvidia_pickle import TFNetworkState
from studio.models.convert.nvidia_stylegan2 import Converted

FIR_KERNEL = [1, 3, 3, 1]
GENERATOR_FUNC = "G_main"  # NVlabs/stylegan2's training/networks_stylegan2.py, and stylegan2-ada's TF release
SYNTHESIS_FUNC = "G_synthesis_stylegan2"  # config-e/f; configs A-D and StyleGAN (1) build other layers
DISCRIMINATOR_FUNC = "D_stylegan2"


@dataclass(frozen=True)
class TFNetwork:
    """One TensorFlow-era network, as data.

    Attributes:
        name: Its TensorFlow scope name, e.g. ``Gs``.
        build_func_name: The function that built it, e.g. ``G_main``.
        static_kwargs: The kwargs it was built with (``resolution``, ``fmap_base``, ...).
        variables: Its variables and those of its components, by path (``synthesis/4x4/Conv/weight``).
        components: The static kwargs and build function of each component, by name (``synthesis``).
    """

    name: str
    build_func_name: str
    static_kwargs: dict[str, Any]
    variables: dict[str, np.ndarray]
    components: dict[str, TFNetwork]


def tf_network(holder: object, where: str, prefix: str = "") -> TFNetwork:
    """The network a ``TFNetworkState`` holds, its components' variables joined into one flat dict.

    Raises:
        ConversionError: The state lacks a part every TensorFlow-era network pickles, or a variable is not numbers.
    """
    state = getattr(holder, "state", None) if isinstance(holder, TFNetworkState) else None
    if state is None or not isinstance(state.get("variables"), list):
        raise ConversionError(f"{where} holds a TensorFlow-era network without its variables, so it is damaged or "
                              f"not a StyleGAN2 pickle")
    variables: dict[str, np.ndarray] = {}
    for item in state["variables"]:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise ConversionError(f"{where} holds a TensorFlow-era network whose variables are not (name, value) pairs")
        name, value = item
        if not isinstance(value, np.ndarray | np.generic) or np.asarray(value).dtype.kind not in "fiu":
            raise ConversionError(f"{where}: the variable {prefix}{name} is a {type(value).__name__}, not an array of "
                                  f"numbers")
        variables[prefix + name] = np.asarray(value)
    components = {}
    for key, child in (state.get("components") or {}).items():
        components[key] = tf_network(child, where, f"{prefix}{key}/")
        variables.update(components[key].variables)
    kwargs = state.get("static_kwargs") or {}
    return TFNetwork(name=str(state.get("name", "")), build_func_name=str(state.get("build_func_name", "")),
                     static_kwargs=dict(kwargs) if isinstance(kwargs, dict) else {}, variables=variables,
                     components=components)


def convert_tf_pickle(loaded: object, where: str, class_names: tuple[str, ...] = (), **about: Any) -> Converted:
    """The studio model of a TensorFlow-era pickle: ``Gs`` as the generator, ``D`` for fine-tuning.

    Args:
        loaded: What ``nvidia_pickle.load_records`` read: ``(G, D, Gs)``, or a lone generator network.
        where: The file's name, for messages.
        class_names: Must be empty: conditional TensorFlow-era models are refused.
        **about: ``title``, ``license``, ``author``, ``source`` for the config.

    Raises:
        ConversionError: A network that is not StyleGAN2's (StyleGAN 1, configs A-D, another architecture), a
            conditional one, a missing or extra variable, or widths the studio cannot build; in one sentence.
    """
    networks = loaded if isinstance(loaded, tuple) else (loaded,)
    if len(networks) not in (1, 3):
        raise ConversionError(f"{where} holds {len(networks)} TensorFlow-era networks; a StyleGAN2 pickle holds "
                              f"(G, D, Gs)")
    gs = tf_network(networks[-1], where)
    d_state, dropped = None, ""
    try:
        arch, g_state = _generator(gs, where, class_names)
        if len(networks) == 3:
            d = tf_network(networks[1], where)
            dropped = _discriminator_refusal(d, gs)
            if not dropped:
                arch.update(mbstd_group_size=int(d.static_kwargs.get("mbstd_group_size", 4)),
                            mbstd_num_channels=int(d.static_kwargs.get("mbstd_num_features", 1)))
                d_state = _discriminator(d, int(arch["resolution"]), where)
    except (IndexError, RuntimeError) as e:  # a variable with too few axes to re-lay out as StyleGAN2's are
        raise ConversionError(f"{where}: its variables do not have the shapes of StyleGAN2's ({e})") from None
    config = stylegan2_config(arch, where, "a TensorFlow-era NVIDIA pickle", dropped, **about)
    add_filter_buffers(config, g_state, d_state)
    return Converted(config, g_state, d_state)


def _generator(gs: TFNetwork, where: str, class_names: tuple[str, ...]) -> tuple[dict[str, Any], dict]:
    """The config fields and state dict of the generator ``Gs``."""
    kwargs = gs.static_kwargs
    synthesis = gs.components.get("synthesis")
    if gs.build_func_name != GENERATOR_FUNC or synthesis is None or synthesis.build_func_name != SYNTHESIS_FUNC:
        built = synthesis.build_func_name if synthesis else gs.build_func_name
        raise ConversionError(f"{where} holds a TensorFlow-era generator built by {built or 'an unnamed function'}, "
                              f"not StyleGAN2's {SYNTHESIS_FUNC} (config E/F): StyleGAN 1 and StyleGAN2 configs A-D "
                              f"are not converted")
    if int(kwargs.get("label_size", 0)) or any(n.startswith("mapping/Label") for n in gs.variables):
        raise ConversionError(f"{where} is a conditional TensorFlow-era model; the studio converts unconditional ones "
                              f"only (its class embedding is normalised differently from stylegan2-ada's)")
    if class_names:
        raise ConversionError(f"{where} is a model of 0 classes, not {len(class_names)}: leave out --classes")
    if kwargs.get("architecture", "skip") != "skip":
        raise ConversionError(f"{where}: its generator has the {kwargs['architecture']!r} architecture; the studio "
                              f"draws StyleGAN2's 'skip' generator (config E/F)")
    if list(kwargs.get("resample_kernel", FIR_KERNEL)) != FIR_KERNEL:
        raise ConversionError(f"{where}: its generator resamples with the filter {kwargs['resample_kernel']}, not "
                              f"the [1,3,3,1] filter the studio's StyleGAN2 uses")
    found = _Variables(gs.variables, "generator", where)
    sides = sorted(int(m[1]) for n in gs.variables if (m := re.fullmatch(r"synthesis/(\d+)x\1/ToRGB/weight", n)))
    if not sides or sides != [2**i for i in range(2, len(sides) + 2)] or sides[-1] < 8:
        raise ConversionError(f"{where}: its generator has no ToRGB layers from 4x4 up to a side of 8 or more, so "
                              f"it is not a StyleGAN2 'skip' generator")
    depth = sum(1 for n in gs.variables if re.fullmatch(r"mapping/Dense\d+/weight", n))
    widths = {4: found.shape("synthesis/4x4/Const/const", 4)[1]}
    widths.update({r: found.shape(f"synthesis/{r}x{r}/Conv1/weight", 4)[3] for r in sides[1:]})
    arch: dict[str, Any] = {
        "resolution": sides[-1], "z_dim": found.shape("mapping/Dense0/weight", 2)[0],
        "w_dim": found.shape("dlatent_avg", 1)[0], "num_classes": 0,
        "channels": found.shape(f"synthesis/{sides[-1]}x{sides[-1]}/ToRGB/weight", 4)[3], "mapping_layers": depth,
        "lr_multiplier": float(kwargs.get("mapping_lrmul", 0.01)), "num_fp16_res": int(kwargs.get("num_fp16_res", 0)),
        "conv_clamp": kwargs.get("conv_clamp"), **stylegan2_widths(widths, where),
    }
    state = {"mapping.w_avg": found.take("dlatent_avg")}
    for i in range(depth):
        state[f"mapping.fc{i}.weight"] = found.take(f"mapping/Dense{i}/weight", _dense)
        state[f"mapping.fc{i}.bias"] = found.take(f"mapping/Dense{i}/bias")
    state["synthesis.b4.const"] = found.take("synthesis/4x4/Const/const")[0]
    for r in sides:
        block, scope = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        first = 2 * int(math.log2(r)) - 5  # the index of the block's first convolution among all of them
        layers = [("conv1", "Conv", 0)] if r == 4 else [("conv0", "Conv0_up", first), ("conv1", "Conv1", first + 1)]
        for layer, name, index in layers:
            noise = f"synthesis/noise{index}"
            state.update(_styled(found, f"{block}.{layer}", f"{scope}/{name}", _up_conv if layer == "conv0" else _conv))
            state[f"{block}.{layer}.noise_strength"] = found.take(f"{scope}/{name}/noise_strength")
            state[f"{block}.{layer}.noise_const"] = found.take(noise)[0, 0]
        state.update(_styled(found, f"{block}.torgb", f"{scope}/ToRGB", _conv))
    found.check_all_taken()
    return arch, state


def _discriminator_refusal(d: TFNetwork, gs: TFNetwork) -> str:
    """Why the studio's residual discriminator cannot hold ``d`` (empty when it can)."""
    kwargs = d.static_kwargs
    if d.build_func_name != DISCRIMINATOR_FUNC:
        return f"it is built by {d.build_func_name or 'an unnamed function'}, not {DISCRIMINATOR_FUNC}"
    if kwargs.get("architecture", "resnet") != "resnet":
        return f"it has the {kwargs['architecture']!r} architecture, not 'resnet'"
    if list(kwargs.get("resample_kernel", FIR_KERNEL)) != FIR_KERNEL:
        return "it resamples with another filter than [1,3,3,1]"
    if kwargs.get("resolution", gs.static_kwargs.get("resolution")) != gs.static_kwargs.get("resolution"):
        return "its resolution differs from the generator's"
    return ""


def _discriminator(d: TFNetwork, resolution: int, where: str) -> dict[str, torch.Tensor]:
    """The studio discriminator's state dict from ``D``'s variables."""
    found = _Variables(d.variables, "discriminator", where)
    state = {f"b{resolution}.fromrgb.{k}": found.take(f"{resolution}x{resolution}/FromRGB/{k}", f)
             for k, f in (("weight", _conv), ("bias", None))}
    side = resolution
    while side > 4:
        for layer, name, has_bias in (("conv0", "Conv0", True), ("conv1", "Conv1_down", True), ("skip", "Skip", False)):
            state[f"b{side}.{layer}.weight"] = found.take(f"{side}x{side}/{name}/weight", _conv)
            if has_bias:
                state[f"b{side}.{layer}.bias"] = found.take(f"{side}x{side}/{name}/bias")
        side //= 2
    for layer, name, change in (("conv", "4x4/Conv", _conv), ("fc", "4x4/Dense0", _dense), ("out", "Output", _dense)):
        state[f"b4.{layer}.weight"] = found.take(f"{name}/weight", change)
        state[f"b4.{layer}.bias"] = found.take(f"{name}/bias")
    found.check_all_taken()
    return state


def _styled(found: _Variables, key: str, scope: str, change: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """A modulated layer's kernel, bias and style affine."""
    return {f"{key}.weight": found.take(f"{scope}/weight", change), f"{key}.bias": found.take(f"{scope}/bias"),
            f"{key}.affine.weight": found.take(f"{scope}/mod_weight", _dense),
            f"{key}.affine.bias": found.take(f"{scope}/mod_bias") + 1}


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A dense weight ``[in, out]`` -> ``[out, in]``."""
    return t.t().contiguous()


def _conv(t: torch.Tensor) -> torch.Tensor:
    """A kernel ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``."""
    return t.permute(3, 2, 0, 1).contiguous()


def _up_conv(t: torch.Tensor) -> torch.Tensor:
    """An up-sampling kernel: re-laid out as ``_conv`` and flipped in both spatial axes (see the module's table)."""
    return _conv(t).flip([2, 3])


class _Variables:
    """A network's variables, taken one by one, so that any the studio would not use is caught."""

    def __init__(self, variables: dict[str, np.ndarray], network: str, where: str) -> None:
        self._left = dict(variables)
        self._all = variables
        self._network, self._where = network, where

    def shape(self, name: str, ndim: int) -> tuple[int, ...]:
        """The shape of variable ``name``, which must have ``ndim`` axes."""
        value = self._get(name)
        if value.ndim != ndim:
            raise ConversionError(f"{self._where}: the {self._network}'s variable {name} has shape {list(value.shape)}, "
                                  f"not {ndim} axes")
        return value.shape

    def take(self, name: str, change: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Variable ``name`` as a float32 tensor, changed by ``change``; it counts as used."""
        tensor = torch.from_numpy(np.array(self._get(name), dtype=np.float32))
        self._left.pop(name, None)
        return change(tensor) if change else tensor

    def check_all_taken(self) -> None:
        """Refuse a variable StyleGAN2 does not have: the network would lose what it does."""
        if self._left:
            name = sorted(self._left)[0]
            raise ConversionError(f"{self._where}: its {self._network} has a variable {name} that StyleGAN2's has not, "
                                  f"so it is another network and would lose that part here")

    def _get(self, name: str) -> np.ndarray:
        if name not in self._all:
            raise ConversionError(f"{self._where}: its {self._network} lacks the variable {name} that a StyleGAN2 "
                                  f"{self._network} has")
        return self._all[name]
