"""What the Interpolate tab does, without Gradio: keyframe captions, the animation's plan, its frames and file.

Functions take the shared engine explicitly and raise ``ValueError`` (or the engine's and the zoo's own
errors) with a message for the artist; the tab turns those into ``gr.Error``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from studio import animation, zoo
from studio.animation import PathOptions
from studio.recipe import Recipe, request_for, stamped

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.models.folder import ModelConfig
    from studio.ui.files import AnimationFiles, ImageFiles

# The frames gallery shows at most this many, evenly spaced: each one is a PNG the browser fetches.
PREVIEW_FRAMES = 48
NO_KEYFRAMES = (f"Add {animation.MIN_KEYFRAMES} to {animation.MAX_KEYFRAMES} keyframes in the **Explore** tab "
                "(**Add as keyframe**); the animation runs through them in order.")


def keyframe_caption(index: int, recipe: Recipe) -> str:
    """A keyframe's label in the strip: its number, seed, classes, truncation and edits."""
    parts = [f"{index}", f"seed {recipe.seed}"]
    total = sum(recipe.classes.values())
    if len(recipe.classes) == 1:
        parts.append(next(iter(recipe.classes)))
    elif total > 0:
        parts.append(" ".join(f"{name} {w / total:.0%}" for name, w in recipe.classes.items() if w > 0))
    if recipe.truncation != 1:
        parts.append(f"ψ {recipe.truncation:g}")
    if recipe.edits:
        parts.append(f"{len(recipe.edits)} edits")
    return " · ".join(parts)


def recipes_of(texts: list[str]) -> list[Recipe]:
    """The keyframes' recipes from their JSON texts (RecipeError, a ValueError, for a bad one)."""
    return [Recipe.from_json(t) for t in texts]


def summary_markdown(recipes: list[Recipe], frames_per_segment: float, loop: bool, fps: float, scale: int,
                     config_of: Callable[[str], ModelConfig] = zoo.model_config) -> str:
    """What the animation will be: keyframes, frames, duration and output size, or how to start one.

    ``config_of(name)`` gives a model's config (the engine's cached one in the studio).

    Raises:
        ValueError: More than 16 keyframes; zoo.ModelUnavailable.
    """
    if len(recipes) < animation.MIN_KEYFRAMES:
        have = f"{len(recipes)} keyframe so far. " if recipes else ""
        return have + NO_KEYFRAMES
    per = int(frames_per_segment)
    frames = len(PathOptions(per, loop=bool(loop)).times(len(recipes)))
    side = scale * config_of(recipes[0].model).resolution
    text = (f"**{len(recipes)} keyframes** → {frames} frames ({frames // per} segments × {per}) · "
            f"{frames / fps:.1f} s at {fps:g} fps · {side}×{side} px\n\n"
            f"{frames * side**2 / 2**20:,.1f} megapixels of frames; one animation may have up to "
            f"{animation.pixel_limit_text()}.")
    if frames > PREVIEW_FRAMES:
        text += f" The preview shows one frame in {math.ceil(frames / PREVIEW_FRAMES)}."
    return text


def keyframe_strip(engine: Engine, files: ImageFiles, texts: list[str]) -> list[tuple[str, str]]:
    """Each keyframe drawn (a PNG with its recipe) and captioned, in path order."""
    return [(files.save(engine.generate(request_for(r, "fast"))[0], stamped(r, engine.precision_for(r.model).name)),
             keyframe_caption(i, r))
            for i, r in enumerate(recipes_of(texts), start=1)]


@dataclass(frozen=True)
class AnimationPlan:
    """An animation checked before any frame is drawn: its keyframes, path, file name and output side."""

    recipes: list[Recipe]
    options: PathOptions
    name: str
    fps: float
    size: int


def plan(engine: Engine, texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool,
         fps: float, scale: int, suffix: str) -> AnimationPlan:
    """Check everything before drawing; the file is named by every setting, so a repeat is that very file."""
    recipes = recipes_of(texts)
    options = PathOptions(int(frames_per_segment), mode, easing, bool(loop))
    model = animation.keyframe_model(recipes)
    side = engine.config(model).resolution
    count = len(options.times(len(recipes)))
    key = json.dumps([texts, mode, int(frames_per_segment), easing, bool(loop), fps, scale])
    name = f"{model}-{count}frames-{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"
    animation.check_export(Path(name), count, side, fps, scale * side)
    return AnimationPlan(recipes, options, name.replace("/", "--"), fps, scale * side)


def write(engine: Engine, exports: AnimationFiles, chosen: AnimationPlan,
          tap: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]] | None = None) -> str:
    """The animation's file, drawn and written unless it exists; ``tap`` sees the frames on their way."""
    frames = animation.draw_frames(engine, chosen.recipes, chosen.options)
    return exports.write(chosen.name, tap(frames) if tap else frames, chosen.fps, chosen.size)


def preview(engine: Engine, exports: AnimationFiles, chosen: AnimationPlan) -> tuple[str, list[tuple[np.ndarray, str]]]:
    """The animation's GIF and at most ``PREVIEW_FRAMES`` of its frames, evenly spaced and captioned."""
    times = chosen.options.times(len(chosen.recipes))
    step = math.ceil(len(times) / PREVIEW_FRAMES)
    gallery: list[np.ndarray] = []

    def keep_gallery_frames(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for i, frame in enumerate(frames):
            if i % step == 0:
                gallery.append(frame)
            yield frame

    path = write(engine, exports, chosen, keep_gallery_frames)
    if not gallery:  # the GIF was made before: draw only the frames the gallery shows
        gallery = list(animation.draw_frames(engine, chosen.recipes, chosen.options, step, "fast"))
    captions = [f"key {start + 1}" if t == 0 else f"{i + 1}" for i, (start, t) in enumerate(times)][::step]
    return path, list(zip(gallery, captions))
