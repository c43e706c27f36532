"""A request (seeds, classes, truncation, slider edits, or explicit latents) -> generator inputs.

Everything here runs on the CPU and is pure: noise comes from each seed's own generator, so a seed
gives the same latent whatever the batch and whatever the device the engine later runs it on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from studio import directions, latent
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
        z: Explicit latents ``[N, z_dim]`` (animation frames); when set, they replace seeds,
            truncation and edits.
        c: Explicit class vectors ``[N, K]`` to go with ``z`` (conditional models).
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
    z: torch.Tensor | None = None
    c: torch.Tensor | None = None
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
        for tensor, what in ((self.z, "latents"), (self.c, "class vectors")):
            if tensor is not None:
                latent.check_finite(tensor, what)

    @property
    def count(self) -> int:
        """How many images the request asks for."""
        return len(self.z) if self.z is not None else len(self.seeds)


def request_inputs(model: LoadedModel, request: Request) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The generator inputs for ``request``: z ``[N, z_dim]`` and class vectors ``[N, K]`` (or None), on the CPU.

    Noise is drawn on the CPU from each seed so a seed gives the same latent on every device.
    """
    config = model.config
    if request.z is not None:
        return _explicit_inputs(model, request)
    z = latent.truncate(latent.seed_latents(request.seeds, config.z_dim), request.truncation)
    if request.edits:
        z = z + edit_offset(model, request.edits, request.directions)
    if not config.num_classes:
        if request.classes:
            raise ValueError(f"model {model.name!r} has no classes")
        return z, None
    vec = latent.class_vector(request.classes, config.class_names)
    return z, vec.expand(len(z), -1)


def edit_offset(model: LoadedModel, edits: Sequence[tuple[int, float]], method: str) -> torch.Tensor:
    """The latent offset ``[z_dim]`` of slider ``edits`` along ``model``'s ``method`` directions."""
    dirs = directions.load_or_compute(model, method)
    offset = torch.zeros(model.config.z_dim)
    for index, value in edits:
        if not 0 <= index < len(dirs):
            raise ValueError(f"direction {index} does not exist: there are {len(dirs)} (0-{len(dirs) - 1})")
        offset += float(value) * dirs[index]
    return offset


def strip_inputs(model: LoadedModel, request: Request, k: int,
                 values: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The inputs of the slider strips of ``request``'s one image: each slider in turn at each of ``values``.

    For each of the first ``k`` directions (at most as many as the model has), the request's latent
    with that slider moved from its current value to each of ``values`` and every other slider as
    the request sets it.

    Returns:
        z ``[k * len(values), z_dim]``, slider by slider, and class vectors ``[k * len(values), K]``
        (or None); ``k`` is clamped to the number of directions, so ``len(z) // len(values)`` strips.

    Raises:
        ValueError: The request is not for exactly one image, or its own inputs are refused.
    """
    if request.count != 1:
        raise ValueError(f"slider strips are drawn around one image, not {request.count}")
    dirs = directions.load_or_compute(model, request.directions)
    z, c = request_inputs(model, request)  # [1, z_dim] with the edits applied
    current = dict(request.edits)
    zs = [z[0] + (v - current.get(i, 0.0)) * dirs[i] for i in range(min(k, len(dirs))) for v in values]
    z_strips = torch.stack(zs) if zs else z[:0]
    return z_strips, None if c is None else c.expand(len(zs), -1)


def _explicit_inputs(model: LoadedModel, request: Request) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = model.config
    z = request.z.float().cpu()
    if z.dim() != 2 or z.shape[1] != config.z_dim:
        raise ValueError(f"latents must be [N, {config.z_dim}] for model {model.name!r}, not {list(z.shape)}")
    if not config.num_classes:
        return z, None
    if request.c is None or tuple(request.c.shape) != (len(z), config.num_classes):
        raise ValueError(f"model {model.name!r} needs class vectors [N, {config.num_classes}] with its latents")
    return z, request.c.float().cpu()
