"""A request (seeds, classes, truncation, slider edits, style mixing, or explicit latents) -> generator inputs.

z comes from each seed's own generator on the CPU, so a seed gives the same latent whatever the batch
and whatever the device the engine later runs it on. A family with per-layer styles (StyleGAN2) then
maps z to its styles (on the model's device, in fp32): truncation, mixing and slider edits happen
there, in W, and the styles are what the engine draws from. A DCGAN's drawing latent is z itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from studio import directions, latent
from studio.bending import MAX_BENDS, Bend
from studio.bending import check as check_bends
from studio.precision import REQUESTS
from studio.zoo import LoadedModel


@dataclass(frozen=True, eq=False)
class Request:
    """What to draw.

    Attributes:
        model: Model name in the zoo.
        seeds: One image per seed.
        classes: A class name or a ``{name: weight}`` blend; None = uniform blend (or no classes).
        truncation: psi; 1 leaves the latent untouched, 0 gives the mean image.
        edits: ``(direction index, value)`` pairs added to every truncated latent, in units of the
            latent's standard deviation (semantic sliders).
        directions: The directions method the edits refer to ("sefa" or "pca").
        edit_layers: The style layers (first, last) the edits move; None = all (style families only).
        mix: Style mixing ``(seed, first, last)``: style layers first..last come from that seed's
            latent (with the same classes and truncation); None = no mixing (style families only).
        noise_seed: The seed of the per-layer noise; None = the model's constant noise, so a seed
            always means one image (style families only).
        start: A found latent (projection) drawn instead of each seed's: z ``[z_dim]`` for a DCGAN, w
            ``[w_dim]`` or W+ ``[L, w_dim]`` for a style family, which then replaces the mapped styles
            before truncation, mixing and edits.
        z: Explicit drawing latents (animation frames): z ``[N, z_dim]``, or styles ``[N, L, w_dim]``
            for a style family; when set, they replace seeds, truncation, edits and mixing.
        c: Explicit class vectors ``[N, K]`` to go with a DCGAN's ``z`` (conditional models).
        bends: Network bends applied to every image (see ``bending``).
        frame_bends: With ``z``: each image's own bends (animation frames); None = ``bends`` for all.
        tuned: For a fine-tuned model, its weights blended from its base model's (0) to its own (1), in
            memory (the "base <-> fine-tuned" slider); None = its own weights.
        precision: "fast": drawn in the precision the engine chose for the device (bf16 or fp16 where
            native and faster; the interactive views); "exact": in fp32 (downloads, exports, the command
            line, replays).
        background: Part of a long job (an animation's frames): the engine runs it in a pass of its
            own once no interactive request for its model waits, or with them after
            ``engine.BACKGROUND_MAX_WAIT_S``.
    """

    model: str
    seeds: tuple[int, ...] = ()
    classes: str | Mapping[str, float] | None = None
    truncation: float = 1.0
    edits: tuple[tuple[int, float], ...] = ()
    directions: str = "sefa"
    edit_layers: tuple[int, int] | None = None
    mix: tuple[int, int, int] | None = None
    noise_seed: int | None = None
    start: torch.Tensor | None = None
    z: torch.Tensor | None = None
    c: torch.Tensor | None = None
    bends: tuple[Bend, ...] = ()
    frame_bends: tuple[tuple[Bend, ...], ...] | None = None
    tuned: float | None = None
    precision: str = "exact"
    background: bool = False

    def __post_init__(self) -> None:
        """Refuse, in words, numbers no image can be drawn from (a model turns NaN into black images).

        Raises:
            ValueError: A truncation, class weight or slider value that is not finite or out of range,
                or explicit latents or class vectors holding NaN or infinity.
        """
        latent.check_truncation(self.truncation)
        if isinstance(self.classes, Mapping):
            latent.check_class_weights(self.classes)
        latent.check_edits(self.edits)
        if self.mix is not None:
            latent.check_seed(self.mix[0])
        if self.noise_seed is not None:
            latent.check_seed(self.noise_seed)
        if self.tuned is not None:
            latent.check_number(self.tuned, "the base <-> fine-tuned blend", 0.0, 1.0)
        for tensor, what in ((self.z, "latents"), (self.c, "class vectors"), (self.start, "found latent")):
            if tensor is not None:
                latent.check_finite(tensor, what)
        if len(self.bends) > MAX_BENDS:
            raise ValueError(f"at most {MAX_BENDS} bends at once, not {len(self.bends)}")
        if self.precision not in REQUESTS:
            raise ValueError(f"precision must be one of {', '.join(REQUESTS)}, not {self.precision!r}")
        if self.frame_bends is not None and (self.z is None or len(self.frame_bends) != len(self.z)):
            raise ValueError("frame bends go with explicit latents, one stack per image")

    @property
    def count(self) -> int:
        """How many images the request asks for."""
        return len(self.z) if self.z is not None else len(self.seeds)


@dataclass(frozen=True, eq=False)
class Inputs:
    """What the generator draws from, on the CPU: one row per image.

    Attributes:
        latents: z ``[N, z_dim]`` (DCGAN) or styles ``[N, L, w_dim]`` (a style family).
        c: Class vectors ``[N, K]`` for a conditional DCGAN; None otherwise (styles carry their class).
        noise_seeds: Per-image noise seeds (-1: the constant noise), or None: all constant.
        bends: Per-image stacks of network bends, or None: none bent.
    """

    latents: torch.Tensor
    c: torch.Tensor | None = None
    noise_seeds: tuple[int, ...] | None = field(default=None)
    bends: tuple[tuple[Bend, ...], ...] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, rows: slice) -> Inputs:
        """The inputs of images ``rows``."""
        return Inputs(self.latents[rows], None if self.c is None else self.c[rows],
                      None if self.noise_seeds is None else self.noise_seeds[rows],
                      None if self.bends is None else self.bends[rows])

    @staticmethod
    def cat(parts: Sequence[Inputs]) -> Inputs:
        """One batch of several requests' inputs (of one model), in order."""
        seeds = bends = None
        if any(p.noise_seeds is not None for p in parts):
            seeds = tuple(s for p in parts for s in (p.noise_seeds or (-1,) * len(p)))
        if any(p.bends is not None for p in parts):
            bends = tuple(b for p in parts for b in (p.bends or ((),) * len(p)))
        return Inputs(torch.cat([p.latents for p in parts]),
                      None if parts[0].c is None else torch.cat([p.c for p in parts]), seeds, bends)


def styled(model: LoadedModel) -> bool:
    """Whether ``model``'s family draws from per-layer styles (truncation, mixing and edits in W)."""
    return model.generator.num_style_layers > 0


def request_inputs(model: LoadedModel, request: Request) -> Inputs:
    """The generator inputs for ``request``, on the CPU.

    Raises:
        ValueError: A class the model lacks, a slider that does not exist, style controls (mixing, noise,
            layer ranges) on a model without style layers, or layers outside the model's.
    """
    inputs = _unbent_inputs(model, request)
    channels = model.generator.bendable_channels()
    for bends in request.frame_bends or (request.bends,):
        check_bends(bends, channels)  # here, not mid-pass, where it would fail the whole batch
    if request.frame_bends is not None:
        return replace(inputs, bends=request.frame_bends)
    return replace(inputs, bends=(request.bends,) * len(inputs)) if request.bends else inputs


def _unbent_inputs(model: LoadedModel, request: Request) -> Inputs:
    if request.z is not None:
        return _explicit_inputs(model, request)
    if styled(model):
        return _style_inputs(model, request)
    if request.mix is not None or request.noise_seed is not None or request.edit_layers is not None:
        raise ValueError(f"model {model.name!r} has no style layers: style mixing, noise seeds and slider "
                         "layer ranges need a StyleGAN model")
    z = latent.truncate(_seed_or_start(model, request), request.truncation)
    if request.edits:
        z = z + edit_offset(model, request.edits, request.directions)
    return Inputs(z, _classes(model, request, len(z)))


def _classes(model: LoadedModel, request: Request, n: int) -> torch.Tensor | None:
    config = model.config
    if not config.num_classes:
        if request.classes:
            raise ValueError(f"model {model.name!r} has no classes")
        return None
    return latent.class_vector(request.classes, config.class_names).expand(n, -1)


def _style_inputs(model: LoadedModel, request: Request) -> Inputs:
    """Styles for a style family: map, truncate in W, mix, then add the slider edits on their layers."""
    count = model.generator.num_style_layers
    layers = check_layers(request.edit_layers, count, "slider")
    c = _classes(model, request, len(request.seeds))
    ws = mapped_styles(model, request.seeds, c, request.truncation) if request.start is None else \
        _start_styles(model, request, c)
    if request.mix is not None:
        seed, first, last = request.mix
        check_layers((first, last), count, "mixing")
        # Mapped once and broadcast: the mixed-in styles are then the same to the bit in any batch.
        mixed = mapped_styles(model, [seed], None if c is None else c[:1], request.truncation)
        ws[:, first : last + 1] = mixed[:, first : last + 1]
    if request.edits:
        ws[:, layers[0] : layers[1] + 1] += edit_offset(model, request.edits, request.directions, request.edit_layers)
    noise = None if request.noise_seed is None else (request.noise_seed,) * len(ws)
    return Inputs(ws, None, noise)


def _seed_or_start(model: LoadedModel, request: Request) -> torch.Tensor:
    """A DCGAN's z ``[N, z_dim]``: each seed's, or the request's found latent for every seed."""
    z_dim = model.config.z_dim
    if request.start is None:
        return latent.seed_latents(request.seeds, z_dim)
    if tuple(request.start.shape) != (z_dim,):
        raise ValueError(f"the found latent must be [{z_dim}] for model {model.name!r}, not {list(request.start.shape)}")
    return request.start.float().cpu()[None].repeat(len(request.seeds), 1)


def _start_styles(model: LoadedModel, request: Request, c: torch.Tensor | None) -> torch.Tensor:
    """Styles ``[N, L, w_dim]`` from the request's found w or W+, truncated toward the mean style like mapped ones."""
    count, w_dim = model.generator.num_style_layers, model.config.arch.w_dim
    start = request.start.float().cpu()
    if tuple(start.shape) not in ((w_dim,), (count, w_dim)):
        raise ValueError(f"the found latent must be [{w_dim}] or [{count}, {w_dim}] for model {model.name!r}, "
                         f"not {list(start.shape)}")
    ws = start.expand(count, w_dim)[None].repeat(len(request.seeds), 1, 1)
    if request.truncation != 1:
        mean = mapped_styles(model, request.seeds[:1], None if c is None else c[:1], 0.0)[0]  # psi 0: w_avg
        ws = mean.lerp(ws, request.truncation)
    return ws


def mapped_styles(model: LoadedModel, seeds: Sequence[int], c: torch.Tensor | None, psi: float) -> torch.Tensor:
    """The styles ``[N, L, w_dim]`` of ``seeds`` (and class vectors ``c``), truncated by ``psi`` in W, on the CPU.

    Mapped in fp32 on the model's device: the mapping network is small, and exact styles make a
    recipe's image the same whatever precision the engine later draws in.
    """
    device = next(model.generator.parameters()).device
    z = latent.seed_latents(seeds, model.config.z_dim).to(device)
    with torch.no_grad():  # not inference mode: mixing and edits then write into the styles
        return model.generator.styles(z, None if c is None else c.to(device), psi).float().cpu()


def check_layers(layers: tuple[int, int] | None, count: int, what: str) -> tuple[int, int]:
    """``layers`` (first, last), checked against a model's ``count`` style layers; None means all of them.

    Raises:
        ValueError: Not whole numbers with 0 <= first <= last < count.
    """
    if layers is None:
        return 0, count - 1
    first, last = layers
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in layers) or not 0 <= first <= last < count:
        raise ValueError(f"{what} layers must run from a first to a last style layer within 0-{count - 1}, "
                         f"not {first}-{last}")
    return first, last


def edit_offset(model: LoadedModel, edits: Sequence[tuple[int, float]], method: str,
                layers: tuple[int, int] | None = None) -> torch.Tensor:
    """The latent offset ``[z_dim or w_dim]`` of slider ``edits`` along ``model``'s ``method`` directions
    (for SeFa, the ones of style ``layers``)."""
    dirs = directions.load_or_compute(model, method, layers)
    offset = torch.zeros(dirs.shape[1])
    for index, value in edits:
        if not 0 <= index < len(dirs):
            raise ValueError(f"direction {index} does not exist: there are {len(dirs)} (0-{len(dirs) - 1})")
        offset += float(value) * dirs[index]
    return offset


def strip_inputs(model: LoadedModel, request: Request, k: int, values: Sequence[float]) -> Inputs:
    """The inputs of the slider strips of ``request``'s one image: each slider in turn at each of ``values``.

    For each of the first ``k`` directions (at most as many as the model has), the request's latent
    with that slider moved from its current value to each of ``values`` and every other slider as
    the request sets it (on the request's style layers, for a style family).

    Returns:
        ``k * len(values)`` images' inputs, slider by slider; ``k`` is clamped to the number of
        directions, so ``len(inputs) // len(values)`` strips.

    Raises:
        ValueError: The request is not for exactly one image, or its own inputs are refused.
    """
    if request.count != 1:
        raise ValueError(f"slider strips are drawn around one image, not {request.count}")
    dirs = directions.load_or_compute(model, request.directions, request.edit_layers)
    inputs = request_inputs(model, request)  # one image, with the edits applied
    first, last = check_layers(request.edit_layers, max(model.generator.num_style_layers, 1), "slider")
    current = dict(request.edits)
    rows = []
    for i in range(min(k, len(dirs))):
        for v in values:
            row = inputs.latents[0].clone()
            step = (v - current.get(i, 0.0)) * dirs[i]
            if styled(model):
                row[first : last + 1] += step
            else:
                row += step
            rows.append(row)
    n = len(rows)
    latents = torch.stack(rows) if rows else inputs.latents[:0]
    return Inputs(latents, None if inputs.c is None else inputs.c.expand(n, -1),
                  None if inputs.noise_seeds is None else inputs.noise_seeds[:1] * n)


def _explicit_inputs(model: LoadedModel, request: Request) -> Inputs:
    config = model.config
    z = request.z.float().cpu()
    noise = None if request.noise_seed is None else (request.noise_seed,) * len(z)
    if styled(model):
        shape = (model.generator.num_style_layers, config.arch.w_dim)
        if z.dim() != 3 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"styles must be [N, {shape[0]}, {shape[1]}] for model {model.name!r}, not {list(z.shape)}")
        return Inputs(z, None, noise)
    if request.noise_seed is not None:
        raise ValueError(f"model {model.name!r} has no noise inputs")
    if z.dim() != 2 or z.shape[1] != config.z_dim:
        raise ValueError(f"latents must be [N, {config.z_dim}] for model {model.name!r}, not {list(z.shape)}")
    if not config.num_classes:
        return Inputs(z)
    if request.c is None or tuple(request.c.shape) != (len(z), config.num_classes):
        raise ValueError(f"model {model.name!r} needs class vectors [N, {config.num_classes}] with its latents")
    return Inputs(z, request.c.float().cpu())
