"""StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), in plain PyTorch: no custom CUDA ops, so it runs wherever PyTorch does.

Written from the paper and the maths. Parameter and buffer names, and how weights are stored
(equalized learning rate: raw weights, scaled when used), follow the state dicts of NVIDIA's
stylegan2-ada-pytorch files, so those load with a plain ``load_state_dict``.

Networks only: no file I/O, no optimizers, no device choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the binomial low-pass filter used for every resampling
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' magnitude through a leaky ReLU
W_AVG_BETA = 0.995  # decay of the running mean of W tracked while training
NOISE_MODES = ("const", "random", "none")
RESIDUAL_GAIN = math.sqrt(0.5)  # the discriminator's two residual branches are summed at unit variance
D_MAPPING_LAYERS = 8  # NVIDIA's discriminator maps its class vector with its mapping network's defaults
D_MAPPING_LR_MULTIPLIER = 0.01


@dataclass(frozen=True)
class StyleGAN2Config:
    """Architecture of a StyleGAN2 pair (NVIDIA's init kwargs in brackets where they differ).

    Attributes:
        resolution: Output side in pixels, a power of two >= 8 (``img_resolution``).
        z_dim: Size of the latent z.
        w_dim: Size of the intermediate latent w.
        num_classes: 0 for an unconditional model, else the size of the class vector (``c_dim``).
        channels: Image channels (``img_channels``).
        mapping_layers: Fully connected layers in the mapping network (``num_layers``).
        lr_multiplier: Learning-rate multiplier of the mapping layers.
        embed_features: Size of the class embedding; None means ``w_dim``.
        channel_base: Channels at resolution r are ``min(channel_base // r, channel_max)``.
        channel_max: Most channels in any block.
        num_fp16_res: How many of the highest resolutions the original trained in float16; recorded
            so a converted model keeps it, the studio computes in the engine's precision.
        conv_clamp: Clamp convolution outputs to +-this value, None for no clamping.
        mbstd_group_size: Group size of the discriminator's minibatch-stddev layer.
        mbstd_num_channels: Feature channels the minibatch-stddev layer appends (0 = none).
        cmap_dim: Size of the discriminator's mapped class vector; None means the 4x4 channels.
    """

    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    num_classes: int = 0
    channels: int = 3
    mapping_layers: int = 8
    lr_multiplier: float = 0.01
    embed_features: int | None = None
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    cmap_dim: int | None = None

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or r & (r - 1):  # the discriminator needs at least one block above 4x4
            raise ValueError(f"resolution must be a power of two >= 8, not {r}")
        sizes = (self.z_dim, self.w_dim, self.channels, self.mapping_layers, self.channel_base, self.channel_max)
        if min(sizes) < 1 or self.num_classes < 0 or self.num_fp16_res < 0 or self.mbstd_num_channels < 0:
            raise ValueError(f"invalid StyleGAN2 config: {self}")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ValueError(f"conv_clamp must be positive or None, not {self.conv_clamp}")

    @property
    def block_resolutions(self) -> list[int]:
        """Sides of the synthesis blocks, 4 up to ``resolution``."""
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Style inputs of the synthesis network: one per convolution, plus the last ToRGB."""
        return 2 * len(self.block_resolutions)

    def block_channels(self, res: int) -> int:
        """Feature channels of the block at side ``res``."""
        return min(self.channel_base // res, self.channel_max)


def fir_filter() -> torch.Tensor:
    """The 2-D [1,3,3,1] low-pass filter, summing to 1 ``[4, 4]``."""
    taps = torch.tensor(FIR_TAPS)
    f = torch.outer(taps, taps)
    return f / f.sum()


def _filter(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    """Convolve each channel of ``x`` with ``f`` after zero-padding ``pad`` (before, after) on both axes."""
    channels = x.shape[1]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)  # flipped: a true convolution (f is symmetric anyway)
    kernel = kernel[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), kernel, stride=stride, groups=channels)


def upsample(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Double the side: zeros between the pixels, then the low-pass filter (gain 4 keeps the DC level)."""
    n, c, h, w = x.shape
    spread = x.new_zeros(n, c, 2 * h, 2 * w)
    spread[:, :, ::2, ::2] = x
    return _filter(spread, f, (2, 1), gain=4.0)


def downsample(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Halve the side: the low-pass filter, then every second pixel."""
    return _filter(x, f, (1, 1), stride=2)


def _activate(x: torch.Tensor, gain: float, clamp: float | None) -> torch.Tensor:
    """Leaky ReLU scaled by ``gain``, then clamped to +-``clamp`` if given."""
    x = F.leaky_relu(x, LRELU_SLOPE) * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def _normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit second moment (the mapping network's input normalization)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """A linear layer with equalized learning rate: ``weight`` stored as N(0, 1) / lr, scaled at run time."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in] -> [N, out]``, through a gained leaky ReLU if ``activate``."""
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return _activate(x, LRELU_GAIN, None) if self.activate else x


class MappingNetwork(nn.Module):
    """z (and a class vector) -> w: normalized inputs through an MLP with a small learning rate.

    The generator's broadcasts w to its ``num_ws`` style inputs, truncates toward ``w_avg`` and tracks
    that mean while training; the discriminator's maps its class vector alone (no z, no ``w_avg``).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, *, num_layers: int,
                 lr_multiplier: float, embed_features: int | None = None) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.num_ws = z_dim, c_dim, num_ws
        embed = (embed_features or w_dim) if c_dim else 0
        if c_dim:
            self.embed = FullyConnected(c_dim, embed)
        widths = [z_dim + embed] + [w_dim] * num_layers
        self.layer_names = [f"fc{i}" for i in range(num_layers)]
        for name, fan_in, fan_out in zip(self.layer_names, widths[:-1], widths[1:]):
            self.add_module(name, FullyConnected(fan_in, fan_out, lr_multiplier=lr_multiplier, activate=True))
        if num_ws is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def w(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        """The mapped w ``[N, w_dim]``, nothing else."""
        parts = []
        if self.z_dim:
            parts.append(_normalize(z))
        if self.c_dim:
            if c is None:
                raise ValueError("this network is class-conditional: pass a class vector")
            like = z if z is not None else self.embed.weight
            parts.append(_normalize(self.embed(c.to(like.dtype))))
        x = torch.cat(parts, dim=1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """ws ``[N, num_ws, w_dim]`` truncated in W (``w_avg + psi (w - w_avg)``), or w ``[N, w_dim]``
        when ``num_ws`` is None.

        Args:
            z: Latents ``[N, z_dim]`` (None when ``z_dim`` is 0).
            c: Class vectors ``[N, c_dim]``; required iff conditional.
            truncation_psi: 1 leaves w as mapped, 0 gives ``w_avg``.
            truncation_cutoff: Truncate only the first this many style inputs (the coarse ones); None = all.

        In training mode the batch's mean w also moves ``w_avg``, as NVIDIA's training does.
        """
        x = self.w(z, c)
        if self.num_ws is None:
            return x
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, W_AVG_BETA))
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.to(ws.dtype).lerp(ws[:, :cut], truncation_psi)
        return ws


def _modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                    up: torch.Tensor | None = None, fused: bool = False) -> torch.Tensor:
    """Convolve each sample with ``weight`` scaled per input channel by its styles, and demodulated.

    Unfused, the styles scale the input and the demodulation factors the output: equal to convolving
    with each sample's modulated, demodulated weight, and run as one ordinary batched convolution.
    Fused, each sample's weight is built and the batch runs as one grouped convolution (a group per
    sample): no passes over the activations for the scaling, at the cost of N copies of the weight.

    Args:
        x: Activations ``[N, I, H, W]``.
        weight: Kernel ``[O, I, k, k]``.
        styles: Per-sample input-channel scales ``[N, I]``.
        demodulate: Rescale each output channel so its per-sample weight has unit norm.
        up: The FIR filter to double the side with (a transposed convolution, then the filter), or None.
        fused: Build per-sample weights and run one grouped convolution.

    Returns:
        ``[N, O, H, W]``, or ``[N, O, 2H, 2W]`` when up-sampling.
    """
    if fused:
        return _fused_modulated_conv(x, weight, styles, demodulate=demodulate, up=up)
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up is None:
        x = F.conv2d(x, w, padding=weight.shape[-1] // 2)
    else:
        # Stride-2 transposed convolution = zeros between pixels, then a full convolution with the
        # kernel; the filter then smooths that grid and crops it back to exactly twice the side.
        x = _filter(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), up, (1, 1), gain=4.0)
    if demodulate:
        # |w * s|^2 summed over inputs and taps, as a product: no [N, O, I, k, k] tensor is built.
        norms = styles.square() @ weight.square().sum(dim=[2, 3]).t()  # [N, O]
        dcoefs = (norms + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    return x


def _fused_modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                          up: torch.Tensor | None) -> torch.Tensor:
    """``_modulated_conv`` with per-sample weights in one grouped convolution (see there)."""
    n, i, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    weights = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k], in fp32
    if demodulate:
        weights = weights * (weights.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    weights = weights.to(x.dtype)
    # The batch folded into channels: [1, N*I, H, W], one group per sample.
    x = x.reshape(1, n * i, h, w)
    if up is None:
        x = F.conv2d(x, weights.reshape(n * o, i, k, k), padding=k // 2, groups=n)
    else:
        # A grouped transposed convolution takes its weight as [N*I, O, k, k].
        x = F.conv_transpose2d(x, weights.transpose(1, 2).reshape(n * i, o, k, k), stride=2, groups=n)
        x = _filter(x, up, (1, 1), gain=4.0)
    return x.reshape(n, o, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution, optionally up-sampling, then noise, bias and a gained leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", fir_filter())
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain convolution
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.fused = False  # see StyleGAN2Generator.fuse

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x [N, I, r, r]`` (``r/2`` when up-sampling) and ``w [N, w_dim]`` -> ``[N, O, r, r]``.

        ``noise [N, 1, r, r]``, when given, is the noise to add (``noise_mode`` is then ignored).
        """
        styles = self.affine(w)
        x = _modulated_conv(x, self.weight, styles, demodulate=True, up=self.resample_filter if self.up else None,
                            fused=self.fused)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        x = x + self.bias.to(x.dtype)[:, None, None]
        return _activate(x, LRELU_GAIN, self.conv_clamp)


class ToRGB(nn.Module):
    """A modulated (not demodulated) 1x1 convolution to image channels, plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)  # equalized lr, folded into the styles
        self.fused = False  # see StyleGAN2Generator.fuse

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x [N, I, r, r]``, ``w [N, w_dim]`` -> image channels ``[N, C, r, r]``."""
        styles = self.affine(w) * self.weight_gain
        x = _modulated_conv(x, self.weight, styles, demodulate=False, fused=self.fused)
        x = x + self.bias.to(x.dtype)[:, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (the learned 4x4 constant, or an up-sampling conv), a conv, and a ToRGB whose
    output is added to the up-sampled image of the blocks before (the "skip" generator)."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, config: StyleGAN2Config) -> None:
        super().__init__()
        self.first = in_channels == 0
        self.register_buffer("resample_filter", fir_filter())
        clamp, w_dim = config.conv_clamp, config.w_dim
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, up=False, conv_clamp=clamp)
        self.torgb = ToRGB(out_channels, config.channels, w_dim, clamp)
        self.num_conv = 1 if self.first else 2

    def convs(self) -> list[SynthesisLayer]:
        """The block's noisy convolutions, in the order they read ws."""
        return [self.conv1] if self.first else [self.conv0, self.conv1]

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                noise: list[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and image so far, and this block's ``ws [N, num_conv + 1, w_dim]`` -> both at this side.

        ``noise``: one map per conv (see ``SynthesisLayer``), or None for ``noise_mode``'s.
        """
        noise = noise or [None] * self.num_conv
        if self.first:
            # A copy, not a view: a view of a parameter made under inference_mode still asks for gradients,
            # which trips module hooks (torch's FlopCounterMode) downstream.
            x = self.const[None].to(ws.dtype).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, noise[0])
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode, noise[-1])
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image: blocks ``b4``, ``b8``, ... up to the resolution."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.num_ws = config.num_ws
        self.block_names = []
        in_channels = 0
        for res in config.block_resolutions:
            out_channels = config.block_channels(res)
            self.add_module(f"b{res}", SynthesisBlock(in_channels, out_channels, res, config))
            self.block_names.append(f"b{res}")
            in_channels = out_channels

    def blocks(self) -> list[SynthesisBlock]:
        """The blocks from 4x4 to the output side."""
        return [getattr(self, name) for name in self.block_names]

    def seeded_noise(self, seeds: Sequence[int]) -> list[torch.Tensor]:
        """Every noisy layer's noise ``[N, 1, r, r]`` (in ws order) for images with noise ``seeds``.

        A seed of 0 or more draws that image's own Gaussian noise, layer by layer from one generator on
        the CPU, so a noise seed gives the same detail on every device and in every batch; a negative
        seed takes the stored constant noise.
        """
        layers = [layer for block in self.blocks() for layer in block.convs()]
        maps: list[list[torch.Tensor]] = [[] for _ in layers]
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed)) if seed >= 0 else None
            for layer_maps, layer in zip(maps, layers):
                side = layer.resolution
                layer_maps.append(torch.randn(side, side, generator=gen) if gen else layer.noise_const.float().cpu())
        return [torch.stack(m)[:, None] for m in maps]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images ``[N, C, R, R]``; a block's ToRGB shares its w with the next block's first conv.

        Args:
            ws: Styles ``[N, num_ws, w_dim]``.
            noise_mode: "const" (the stored noise), "random" (fresh each call) or "none".
            noise_seeds: Per-image noise seeds (see ``seeded_noise``); when given, ``noise_mode`` is ignored.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, not {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, w_dim], not {list(ws.shape)}")
        maps = None if noise_seeds is None else [m.to(ws.device) for m in self.seeded_noise(noise_seeds)]
        x = img = None
        start = 0  # the block's first ws index, which is also its first noisy layer's index
        for block in self.blocks():
            noise = None if maps is None else maps[start : start + block.num_conv]
            x, img = block(x, img, ws[:, start : start + block.num_conv + 1], noise_mode, noise)
            start += block.num_conv
        return img

    def affines(self) -> list[tuple[int, FullyConnected]]:
        """Every style affine with the ws index it reads, in ws order (a ToRGB reads its block's last + 1)."""
        found, start = [], 0
        for block in self.blocks():
            found += [(start + i, conv.affine) for i, conv in enumerate(block.convs())]
            found.append((start + block.num_conv, block.torgb.affine))
            start += block.num_conv
        return found


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image in about [-1, 1]).

    Offers ``face.GeneratorFace``: directions live in W, one style input per synthesis layer.
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.num_style_layers = config.num_ws
        self.synthesis = SynthesisNetwork(config)
        self.mapping = MappingNetwork(
            config.z_dim, config.num_classes, config.w_dim, config.num_ws, num_layers=config.mapping_layers,
            lr_multiplier=config.lr_multiplier, embed_features=config.embed_features,
        )

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[N, C, R, R]`` from z ``[N, z_dim]`` (and c ``[N, K]``), untruncated, with the constant noise.

        ``styles`` (z, c -> ws) and ``draw`` (ws -> image) are the two halves, for truncation in W and
        style mixing.
        """
        return self.synthesis(self.mapping(z, c), noise_mode="const")

    def styles(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        """Per-layer styles ``[N, num_ws, w_dim]``: w truncated toward ``w_avg`` in W, on every layer."""
        return self.mapping(z, c, truncation_psi)

    def draw(self, latents: torch.Tensor, c: torch.Tensor | None = None,
             noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images from styles ``latents [N, num_ws, w_dim]`` (``c`` is already in them, so ignored).

        ``noise_seeds``: per-image noise (see ``SynthesisNetwork.seeded_noise``); None = the constant noise.
        """
        return self.synthesis(latents, noise_mode="const", noise_seeds=noise_seeds)

    def fuse(self, on: bool = True) -> StyleGAN2Generator:
        """Run every modulated convolution fused (per-sample weights, one grouped convolution) or not; returns self.

        Both give the same images within fp32 rounding. Fused, a batch's images do not depend on each
        other's size either: a seed draws the same pixels in any batch of two or more, while a lone image
        runs as a plain convolution, whose rounding may differ by a level in a few pixels.
        """
        for module in self.synthesis.modules():
            if isinstance(module, (SynthesisLayer, ToRGB)):
                module.fused = on
        return self

    def latent_weight(self, layers: tuple[int, int] | None = None) -> torch.Tensor:
        """The style affines' weights that read ws ``layers`` (first, last; None = all), side by side
        ``[w_dim, F]`` (SeFa in W, per layer range as in the SeFa paper)."""
        first, last = layers if layers is not None else (0, self.num_style_layers - 1)
        chosen = [affine.weight for index, affine in self.synthesis.affines() if first <= index <= last]
        if not chosen:
            raise ValueError(f"no style layers in {first}-{last}: this model has 0-{self.num_style_layers - 1}")
        return torch.cat(chosen, dim=0).t()

    def latent_features(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The mapped w ``[N, w_dim]`` (GANSpace PCA in W); never updates ``w_avg``."""
        return self.mapping.w(z, c)

    def direction_units(self, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The spread ``[k]`` of w along each unit direction ``[k, w_dim]``, measured on samples ``z`` (and ``c``):
        slider values count in these, as a DCGAN's count in z's unit standard deviation."""
        w = self.mapping.w(z, c).float()
        return ((w - w.mean(0)) @ directions.t().float()).std(0)

    def freezable_blocks(self) -> list[nn.Module]:
        """The synthesis blocks from 4x4 to the output side (the mapping network is never frozen)."""
        return list(self.synthesis.blocks())

    def bendable_layers(self) -> list[nn.Module]:
        """Each synthesis block's last convolution, 4x4 to the output side: its feature maps feed the block's
        ToRGB and the next block, so a bend there shows at once (network bending)."""
        return [block.conv1 for block in self.synthesis.blocks()]

    def bendable_channels(self) -> list[int]:
        """How many feature maps each bendable layer outputs."""
        return [block.conv1.weight.shape[0] for block in self.synthesis.blocks()]


class Conv(nn.Module):
    """The discriminator's convolution with equalized lr, optionally halving the side (filter first)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True,
                 activate: bool = True, down: bool = False, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.down, self.activate, self.conv_clamp = down, activate, conv_clamp
        self.register_buffer("resample_filter", fir_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """Convolve, add bias, activate, all scaled by ``gain`` (and the clamp with it)."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = w.shape[-1]
        if self.down and k == 1:
            x = F.conv2d(downsample(x, self.resample_filter), w)
        elif self.down:
            # Filter with the padding a 3x3 stride-2 convolution needs to land on exactly half the side.
            x = F.conv2d(_filter(x, self.resample_filter, (2, 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[:, None, None]
        if self.activate:
            return _activate(x, LRELU_GAIN * gain, self.conv_clamp * gain if self.conv_clamp is not None else None)
        return x * gain  # the residual skip: linear, never clamped


class DiscriminatorBlock(nn.Module):
    """A residual block: two 3x3 convs (the second halving the side) plus a 1x1 down-sampling skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, config: StyleGAN2Config) -> None:
        super().__init__()
        clamp = config.conv_clamp
        self.register_buffer("resample_filter", fir_filter())
        if in_channels == 0:  # the top block reads the image
            self.fromrgb = Conv(config.channels, tmp_channels, 1, conv_clamp=clamp)
        self.conv0 = Conv(tmp_channels, tmp_channels, 3, conv_clamp=clamp)
        self.conv1 = Conv(tmp_channels, out_channels, 3, down=True, conv_clamp=clamp)
        self.skip = Conv(tmp_channels, out_channels, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, r, r]`` (the image for the top block) -> ``[N, C', r/2, r/2]``."""
        if hasattr(self, "fromrgb"):
            x = self.fromrgb(x)
        return self.skip(x, gain=RESIDUAL_GAIN) + self.conv1(self.conv0(x), gain=RESIDUAL_GAIN)


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """Append ``num_channels`` maps holding the standard deviation across each group of samples.

    Sample i belongs to group ``i mod (N / G)``; channels are split into ``num_channels`` groups, and
    each map is the std over the samples averaged over its channels and pixels.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, n // g, num_channels, c // num_channels, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [n/G, F, c/F, H, W]
    y = y.mean(dim=[2, 3, 4])[:, :, None, None].repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end: minibatch stddev, a conv, a fully connected layer, and the output (or class map)."""

    def __init__(self, channels: int, cmap_dim: int, config: StyleGAN2Config) -> None:
        super().__init__()
        self.group_size, self.num_channels = config.mbstd_group_size, config.mbstd_num_channels
        self.conv = Conv(channels + self.num_channels, channels, 3, conv_clamp=config.conv_clamp)
        self.fc = FullyConnected(channels * 16, channels, activate=True)
        self.out = FullyConnected(channels, cmap_dim or 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, 4, 4]`` -> ``[N, cmap_dim or 1]``."""
        if self.num_channels:
            x = minibatch_stddev(x, self.group_size, self.num_channels)
        return self.out(self.fc(self.conv(x).flatten(1)))


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator, with NVIDIA's conditioning: the class vector is mapped to
    ``cmap`` and the score is the output's dot product with it, over ``sqrt(cmap_dim)``.

    Offers ``face.DiscriminatorFace``.
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        resolutions = config.block_resolutions[::-1][:-1]  # output side down to 8
        self.block_names = []
        for res in resolutions:
            tmp = config.block_channels(res)
            in_channels = 0 if res == config.resolution else tmp
            self.add_module(f"b{res}", DiscriminatorBlock(in_channels, tmp, config.block_channels(res // 2), config))
            self.block_names.append(f"b{res}")
        self.cmap_dim = (config.cmap_dim or config.block_channels(4)) if config.num_classes else 0
        if self.cmap_dim:
            self.mapping = MappingNetwork(0, config.num_classes, self.cmap_dim, None, num_layers=D_MAPPING_LAYERS,
                                          lr_multiplier=D_MAPPING_LR_MULTIPLIER)
        self.b4 = DiscriminatorEpilogue(config.block_channels(4), self.cmap_dim, config)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N]`` for images ``[N, C, R, R]`` (and class vectors ``[N, K]`` if conditional)."""
        if self.cmap_dim and c is None:
            raise ValueError("this discriminator is class-conditional: pass a class vector")
        for block in self.freezable_blocks():
            x = block(x)
        out = self.b4(x)
        if self.cmap_dim:
            out = (out * self.mapping(None, c)).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return out.squeeze(1)

    def freezable_blocks(self) -> list[nn.Module]:
        """The residual blocks from the image's side down to 8x8 (the 4x4 epilogue and mapping never freeze)."""
        return [getattr(self, name) for name in self.block_names]

    def with_width(self, width: int) -> StyleGAN2Discriminator:
        """A fresh discriminator whose top block has ``width`` channels, every block scaled alike (the
        channel base and cap both shrink, so the widths keep their proportions)."""
        config = self.config
        scale = width / config.block_channels(config.resolution)
        narrow = {"channel_base": max(1, round(config.channel_base * scale)),
                  "channel_max": max(1, round(config.channel_max * scale))}
        return StyleGAN2Discriminator(StyleGAN2Config(**{**vars(config), **narrow}))

    def check_batch(self, n: int) -> None:
        """Refuse a batch that the minibatch-stddev layer cannot split into equal groups."""
        group = min(self.config.mbstd_group_size, n)
        if self.config.mbstd_num_channels and n % group:
            raise ValueError(f"this StyleGAN2 discriminator compares images in groups of {group}: use a batch "
                             f"(per process) that is a multiple of {group}, not {n}")
