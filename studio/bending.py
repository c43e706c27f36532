"""Network bending (Broad et al. 2021): transforms of one layer's feature maps while an image is drawn.

A bend names a generator layer (the face's ``bendable_layers()``, coarse to fine), an operation with
its value, and the channels it touches: all, a range, or a seeded random share. Bends are part of a
recipe, so a bent image replays exactly; a neutral bend (multiply by 1, rotate by 0...) is skipped, so
it leaves the pixels bit-identical.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# op -> (default value, neutral value or None when no value leaves the maps as they are, (low, high))
OPS: dict[str, tuple[float, float | None, tuple[float, float]]] = {
    "translate": (0.25, 0.0, (-1.0, 1.0)),  # a fraction of the map's width, rightwards, wrapping around
    "rotate": (90.0, 0.0, (-360.0, 360.0)),  # degrees, anticlockwise, about the centre
    "scale": (1.5, 1.0, (0.1, 10.0)),  # zoom about the centre
    "flip": (0.0, None, (0.0, 1.0)),  # 0: left-right, 1: upside down
    "invert": (0.0, None, (0.0, 0.0)),  # each map mirrored within its own range (max + min - x)
    "erode": (3.0, 1.0, (1.0, 15.0)),  # minimum over a K x K neighbourhood (K odd)
    "dilate": (3.0, 1.0, (1.0, 15.0)),  # maximum over a K x K neighbourhood (K odd)
    "threshold": (0.5, None, (0.0, 1.0)),  # each map: its maximum where above T x its maximum, else 0
    "multiply": (1.5, 1.0, (-10.0, 10.0)),
    "ablate": (0.0, None, (0.0, 0.0)),  # zeroed
}
MAX_BENDS = 16
_SPEC = re.compile(r"^(\d+):([a-z]+)(?:=([^@]+))?(?:@(.+))?$")


@dataclass(frozen=True)
class Bend:
    """One transform of one layer's feature maps.

    Attributes:
        layer: Index into the generator's bendable layers (0 = the coarsest).
        op: A name in ``OPS``.
        value: The op's amount (see ``OPS``).
        channels: ``(first, last)`` channels, or None for all (unless ``share`` is set).
        share: A random share of the channels in percent (0-100], chosen by ``seed``; None = not random.
        seed: The seed that picks a random share's channels.
    """

    layer: int
    op: str
    value: float = 0.0
    channels: tuple[int, int] | None = None
    share: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse, in words, a bend no generator can apply."""
        if self.op not in OPS:
            raise ValueError(f"unknown bend {self.op!r}; choose one of {', '.join(OPS)}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or not 0 <= self.layer < 64:
            raise ValueError(f"a bend's layer is a whole number from 0, not {self.layer!r}")
        low, high = OPS[self.op][2]
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or not low <= self.value <= high:
            raise ValueError(f"{self.op} takes a value from {low:g} to {high:g}, not {self.value!r}")
        if self.op in ("erode", "dilate") and int(self.value) % 2 == 0:
            raise ValueError(f"{self.op} takes an odd neighbourhood size such as 3 or 5, not {self.value:g}")
        if self.channels is not None and not (
                len(self.channels) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in self.channels)
                and 0 <= self.channels[0] <= self.channels[1]):
            raise ValueError(f"bend channels are a range FIRST-LAST such as 0-31, not {self.channels!r}")
        if self.share is not None and not (math.isfinite(self.share) and 0 < self.share <= 100):
            raise ValueError(f"a random share of channels is a percentage above 0 and up to 100, not {self.share!r}")
        if self.share is not None and self.channels is not None:
            raise ValueError("a bend takes a channel range or a random share, not both")

    @property
    def neutral(self) -> bool:
        """Whether the bend leaves every map as it is (then it is not applied at all)."""
        neutral = OPS[self.op][1]
        if self.op == "rotate":
            return self.value % 360 == 0
        return neutral is not None and self.value == neutral

    def to_dict(self) -> dict[str, Any]:
        """The recipe entry: layer, op, value, and the channel selection when there is one."""
        d: dict[str, Any] = {"layer": self.layer, "op": self.op, "value": float(self.value)}
        if self.channels is not None:
            d["channels"] = list(self.channels)
        if self.share is not None:
            d.update(share=float(self.share), seed=self.seed)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bend:
        """A bend from its recipe entry.

        Raises:
            ValueError: Missing or wrong fields, in words.
        """
        if not isinstance(d, dict) or not {"layer", "op"} <= set(d) or set(d) - {"layer", "op", "value", "channels",
                                                                             "share", "seed"}:
            raise ValueError("a bend is {layer, op, value[, channels | share, seed]}")
        channels = d.get("channels")
        if channels is not None and (not isinstance(channels, list) or len(channels) != 2):
            raise ValueError("bend channels are [first, last]")
        return cls(d["layer"], d["op"], d.get("value", OPS.get(d["op"], (0.0,))[0]),
                   tuple(channels) if channels is not None else None, d.get("share"), d.get("seed", 0))


def parse(spec: str) -> Bend:
    """``LAYER:OP[=VALUE][@CHANNELS]`` as a bend: ``2:rotate=90``, ``1:ablate@0-31``, ``3:multiply=1.5@random=25%``.

    Raises:
        ValueError: The text does not follow that form, or its numbers are out of range.
    """
    m = _SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"bad bend {spec!r}: write LAYER:OP[=VALUE][@CHANNELS], such as 2:rotate=90, 1:ablate@0-31 "
                         f"or 3:multiply=1.5@random=25%")
    layer, op, value, where = m.groups()
    if op not in OPS:
        raise ValueError(f"unknown bend {op!r}; choose one of {', '.join(OPS)}")
    try:
        amount = float(value) if value is not None else OPS[op][0]
        channels, share, seed = None, None, 0
        if where and where.startswith("random="):
            share_text, _, seed_text = where[len("random="):].partition(":")
            share, seed = float(share_text.rstrip("%")), int(seed_text or 0)
        elif where:
            first, _, last = where.partition("-")
            channels = (int(first), int(last or first))
    except ValueError:
        raise ValueError(f"bad bend {spec!r}: values are numbers, channels FIRST-LAST or random=P%[:SEED]") from None
    return Bend(int(layer), op, amount, channels, share, seed)


def spec(bend: Bend) -> str:
    """``bend`` written as ``parse`` reads it."""
    text = f"{bend.layer}:{bend.op}={bend.value:g}"
    if bend.channels is not None:
        text += f"@{bend.channels[0]}-{bend.channels[1]}"
    if bend.share is not None:
        text += f"@random={bend.share:g}%" + (f":{bend.seed}" if bend.seed else "")
    return text


def parse_lines(text: str) -> tuple[Bend, ...]:
    """One bend per non-empty line of ``text`` (as ``parse`` reads them), in order.

    Raises:
        ValueError: A line that is no bend, or more than ``MAX_BENDS``.
    """
    bends = tuple(parse(line) for line in (text or "").splitlines() if line.strip())
    if len(bends) > MAX_BENDS:
        raise ValueError(f"at most {MAX_BENDS} bends at once, not {len(bends)}")
    return bends


def selected(bend: Bend, count: int) -> torch.Tensor:
    """The channel indices ``bend`` touches in a layer of ``count`` channels.

    Raises:
        ValueError: The range passes the layer's channels.
    """
    if bend.share is not None:
        gen = torch.Generator().manual_seed(bend.seed)
        return torch.randperm(count, generator=gen)[: max(1, round(count * bend.share / 100))].sort().values
    if bend.channels is None:
        return torch.arange(count)
    first, last = bend.channels
    if last >= count:
        raise ValueError(f"bend channels {first}-{last} pass layer {bend.layer}'s {count} channels (0-{count - 1})")
    return torch.arange(first, last + 1)


def check(bends: Sequence[Bend], channels: Sequence[int]) -> None:
    """Refuse, in words, bends a generator whose bendable layers output ``channels`` maps cannot apply.

    Raises:
        ValueError: A layer it does not have, or a channel range past the layer's channels.
    """
    for bend in bends:
        if bend.layer >= len(channels):
            raise ValueError(f"bend layer {bend.layer} does not exist: this model has layers 0-{len(channels) - 1}")
        selected(bend, channels[bend.layer])


def apply(bends: Sequence[Bend], maps: torch.Tensor) -> torch.Tensor:
    """``maps [N, C, H, W]`` with every non-neutral bend of ``bends`` applied in order, on its channels."""
    for bend in bends:
        if bend.neutral:
            continue
        index = selected(bend, maps.shape[1]).to(maps.device)
        maps = maps.clone()
        maps[:, index] = transform(bend.op, bend.value, maps[:, index])
    return maps


def transform(op: str, value: float, x: torch.Tensor) -> torch.Tensor:
    """Operation ``op`` with ``value`` on maps ``x [N, C, H, W]`` (all of their channels)."""
    if op == "translate":
        return torch.roll(x, round(value * x.shape[-1]), dims=-1)
    if op == "rotate" and value % 90 == 0:
        return torch.rot90(x, int(value // 90) % 4, dims=(-2, -1))  # exact: no resampling
    if op in ("rotate", "scale"):
        return _warp(x, value if op == "rotate" else 0.0, value if op == "scale" else 1.0)
    if op == "flip":
        return torch.flip(x, dims=(-2,) if value >= 0.5 else (-1,))
    if op == "invert":
        low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
        return high + low - x
    if op in ("erode", "dilate"):
        k = int(value)
        pooled = F.max_pool2d(x if op == "dilate" else -x, k, stride=1, padding=k // 2)
        return pooled if op == "dilate" else -pooled
    if op == "threshold":
        high = x.amax(dim=(-2, -1), keepdim=True)
        return torch.where(x > value * high, high, torch.zeros_like(x))
    if op == "multiply":
        return x * value
    return torch.zeros_like(x)  # ablate


def _warp(x: torch.Tensor, degrees: float, zoom: float) -> torch.Tensor:
    """Rotate by ``degrees`` and zoom by ``zoom`` about the centre, bilinear, zeros outside."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, align_corners=False).to(x.dtype)


@contextlib.contextmanager
def bent(layers: Sequence[nn.Module], rows: Sequence[Sequence[Bend]] | None) -> Iterator[None]:
    """Within the block, forward passes made by this thread bend ``layers``' outputs: image ``i`` of the
    batch by ``rows[i]`` (its own stack of bends; empty = none).

    Only this thread's passes are bent: another thread may read the same generator meanwhile (to find
    slider directions), and must see it unbent.

    Raises:
        ValueError: A bend names a layer the generator does not have.
    """
    stacks: dict[int, dict[tuple[Bend, ...], list[int]]] = {}
    for i, bends in enumerate(rows or ()):
        for layer in sorted({b.layer for b in bends if not b.neutral}):
            if layer >= len(layers):
                raise ValueError(f"bend layer {layer} does not exist: this model has layers 0-{len(layers) - 1}")
            stacks.setdefault(layer, {}).setdefault(tuple(b for b in bends if b.layer == layer), []).append(i)
    owner = threading.get_ident()

    def hook(groups: dict[tuple[Bend, ...], list[int]]) -> Callable[..., torch.Tensor | None]:
        def bend_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None
            out = output.clone()
            for stack, images in groups.items():
                index = torch.tensor(images, device=output.device)
                out[index] = apply(stack, output[index])
            return out
        return bend_output

    handles = [layers[layer].register_forward_hook(hook(groups)) for layer, groups in stacks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
