"""Keyframe animation: a path through the latents of 2 to 16 recipes, rendered and exported.

Each keyframe is a recipe (the full state of one image). A path runs from keyframe to keyframe in z
(lerp or slerp) while the class vectors are lerped; every frame is drawn through the engine in one
request, then written as an animated GIF or an H.264 MP4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio import latent, media
from studio.engine import Engine, Request, request_inputs
from studio.recipe import Recipe, check_weights, request_for

MODES = ("lerp", "slerp")
MIN_KEYFRAMES = 2
MAX_KEYFRAMES = 16
MAX_FRAMES_PER_SEGMENT = 120
MAX_FPS = 60
# Exports hold every (enlarged) frame in memory at once: 2**29 RGB pixels is 1.5 GiB. The largest
# path (16 looping keyframes x 120 frames) still fits at 512x512.
MAX_EXPORT_PIXELS = 2**29
WRITERS = {".gif": media.write_gif, ".mp4": media.write_mp4}


@dataclass(frozen=True)
class PathOptions:
    """How a path travels through its keyframes.

    Attributes:
        frames_per_segment: Frames from one keyframe up to (not including) the next, 1 to 120.
        mode: "slerp" (keeps a Gaussian latent's norm typical mid-way) or "lerp" in z.
        easing: A name in ``latent.EASINGS``: "linear" or "ease-in-out" (slow at each keyframe).
        loop: Add the segment from the last keyframe back to the first.
    """

    frames_per_segment: int = 12
    mode: str = "slerp"
    easing: str = "linear"
    loop: bool = False

    def __post_init__(self) -> None:
        n = self.frames_per_segment
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FRAMES_PER_SEGMENT:
            raise ValueError(f"frames per segment must be a whole number from 1 to {MAX_FRAMES_PER_SEGMENT}, not {n!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown interpolation {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.easing not in latent.EASINGS:
            raise ValueError(f"unknown easing {self.easing!r}; choose one of {', '.join(latent.EASINGS)}")

    def times(self, keyframes: int) -> list[tuple[int, float]]:
        """The (segment start keyframe, eased t) of every frame of a path through ``keyframes``.

        Raises:
            ValueError: Fewer than 2 or more than 16 keyframes.
        """
        check_keyframe_count(keyframes)
        return latent.path_times(keyframes, self.frames_per_segment, self.loop, self.easing)


def check_keyframe_count(count: int) -> None:
    """Raise ValueError unless ``count`` is 2 to 16."""
    if not MIN_KEYFRAMES <= count <= MAX_KEYFRAMES:
        raise ValueError(f"an animation needs {MIN_KEYFRAMES} to {MAX_KEYFRAMES} keyframes, not {count}")


def keyframe_model(recipes: Sequence[Recipe]) -> str:
    """The one model all keyframes use.

    Raises:
        ValueError: Fewer than 2 or more than 16 keyframes, or keyframes from different models.
    """
    check_keyframe_count(len(recipes))
    name = recipes[0].model
    for i, r in enumerate(recipes[1:], start=2):
        if r.model != name:
            raise ValueError(f"all keyframes must use the same model: keyframe 1 uses {name!r}, "
                             f"keyframe {i} uses {r.model!r}")
    return name


def keyframe_inputs(engine: Engine, recipes: Sequence[Recipe]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The keyframes' generator inputs: z ``[K, z_dim]`` and class vectors ``[K, C]`` (None if unconditional).

    Raises:
        ValueError: See ``keyframe_model``; recipe.RecipeError when a recipe was made with other
            weights of its model; zoo.ModelUnavailable.
    """
    model = engine.cache.get(keyframe_model(recipes))
    zs, cs = [], []
    for r in recipes:
        check_weights(r, model)  # other weights would not give the keyframe's image back
        z, c = request_inputs(model, request_for(r))
        zs.append(z)
        cs.append(c)
    return torch.cat(zs), None if cs[0] is None else torch.cat(cs)


def frame_inputs(z: torch.Tensor, c: torch.Tensor | None,
                 options: PathOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents of every frame of a path through keyframe latents ``z`` ``[K, z_dim]`` (and classes ``c``).

    Returns:
        z ``[T, z_dim]`` and class vectors ``[T, C]`` (or None), ``T = frames_per_segment x segments``.
        A frame at t = 0 is its keyframe's latent to the bit, so it draws the keyframe's image.
    """
    k = len(z)
    interpolate = latent.slerp if options.mode == "slerp" else latent.lerp
    frames_z, frames_c = [], []
    for start, t in options.times(k):
        end = (start + 1) % k  # the loop's last segment returns to keyframe 0
        # At t = 0 slerp's sines need not cancel exactly; the keyframe itself is the frame.
        frames_z.append(z[start] if t == 0 else interpolate(z[start], z[end], t))
        if c is not None:
            frames_c.append(c[start] if t == 0 else latent.lerp(c[start], c[end], t))
    return torch.stack(frames_z), torch.stack(frames_c) if c is not None else None


def render_frames(engine: Engine, recipes: Sequence[Recipe], options: PathOptions) -> np.ndarray:
    """Draw every frame of the path through ``recipes`` in one engine request: ``[T, H, W, 3]`` uint8.

    Raises:
        ValueError: Bad keyframes (see ``keyframe_inputs``); the engine's errors otherwise.
    """
    z, c = frame_inputs(*keyframe_inputs(engine, recipes), options)
    return engine.generate(Request(recipes[0].model, z=z, c=c))


def check_export(path: Path, frame_count: int, side: int, fps: float, size: int | None = None) -> None:
    """Check an export's settings before any frame is drawn; ``export`` takes the same.

    Args:
        path: Must end in ``.gif`` or ``.mp4``.
        frame_count: How many frames the animation has.
        side: The frames' side in pixels (the model's resolution).
        fps: Frames per second, 1 to 60.
        size: Output side in pixels, a multiple of ``side``; None keeps ``side``.

    Raises:
        ValueError: Another extension, an fps or size out of range, or too many pixels in all.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise ValueError(f"cannot write {path.name!r}: the file name must end in {' or '.join(WRITERS)}")
    if not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps must be from 1 to {MAX_FPS}, not {fps:g}")
    if size is not None and (size < side or size % side):
        raise ValueError(f"size must be a multiple of the frames' side ({side} px), such as {side} or "
                         f"{2 * side}, not {size}")
    out_side = size or side
    if frame_count * out_side**2 > MAX_EXPORT_PIXELS:
        raise ValueError(f"{frame_count} frames at {out_side}x{out_side} are too many pixels to export: "
                         "use fewer frames or a smaller size")


def export(path: Path, frames: np.ndarray, fps: float, size: int | None = None) -> None:
    """Write ``[T, H, W, 3]`` uint8 frames as a looping GIF or an H.264 MP4, by ``path``'s extension.

    ``size`` enlarges with nearest-neighbour, so pixels stay crisp; see ``check_export`` for the
    accepted settings.

    Raises:
        ValueError: From ``check_export``.
    """
    path = Path(path)
    check_export(path, len(frames), frames.shape[1], fps, size)
    WRITERS[path.suffix.lower()](path, frames, fps, size)
