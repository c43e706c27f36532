"""The Interpolate tab: keyframes from Explore on a path through latent space, previewed, exported.

Keyframes live in a ``gr.State`` shared with the Explore tab (a list of recipe JSONs); this tab shows
them as a strip, trims them, and turns them into frames through ``studio.animation``. Animation
files are named by everything that made them, so a preview's GIF is also its export, and repeats
cost nothing. Previews and exports are heavy: they take turns (``HEAVY_LIMIT`` at once), draw their
frames in small engine requests between everyone's drawing, and stream them into the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from studio import animation, latent, zoo
from studio.animation import PathOptions
from studio.recipe import Recipe, request_for
from studio.ui.errors import USER_ERRORS
from studio.ui.explore import ImageFiles
from studio.ui.scratch import keep_newest, scratch_dir

if TYPE_CHECKING:
    from studio.engine import Engine

MODE_CHOICES = [("Slerp: along the sphere", "slerp"), ("Lerp: straight line", "lerp")]
SIZE_CHOICES = [("1× (model size)", 1), ("2×", 2), ("4×", 4)]
DEFAULT_FRAMES_PER_SEGMENT = 12
DEFAULT_FPS = 12
# The frames gallery shows at most this many, evenly spaced: each one is a PNG the browser fetches.
PREVIEW_FRAMES = 48
# Previews and exports share one queue slot group: a crowd of long exports cannot take every core.
HEAVY_EVENTS = "animation"
HEAVY_LIMIT = 2
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


def summary_markdown(recipes: list[Recipe], frames_per_segment: float, loop: bool, fps: float, scale: int) -> str:
    """What the animation will be: keyframes, frames, duration and output size, or how to start one.

    Raises:
        ValueError: More than 16 keyframes; zoo.ModelUnavailable.
    """
    if len(recipes) < animation.MIN_KEYFRAMES:
        have = f"{len(recipes)} keyframe so far. " if recipes else ""
        return have + NO_KEYFRAMES
    per = int(frames_per_segment)
    frames = len(PathOptions(per, loop=bool(loop)).times(len(recipes)))
    side = scale * zoo.model_config(recipes[0].model).resolution
    text = (f"**{len(recipes)} keyframes** → {frames} frames ({frames // per} segments × {per}) · "
            f"{frames / fps:.1f} s at {fps:g} fps · {side}×{side} px\n\n"
            f"{frames * side**2 / 2**20:,.1f} megapixels of frames; one animation may have up to "
            f"{animation.pixel_limit_text()}.")
    if frames > PREVIEW_FRAMES:
        text += f" The preview shows one frame in {math.ceil(frames / PREVIEW_FRAMES)}."
    return text


class AnimationFiles:
    """The tab's animation files, named by their settings: the newest ``keep`` stay; the folder goes with it."""

    def __init__(self, keep: int = 20) -> None:
        self.folder = scratch_dir(self, "animations")
        self.keep = keep

    def write(self, name: str, frames: Iterator[np.ndarray], fps: float, size: int) -> str:
        """The path of animation ``name``, written from ``frames`` unless it exists (it is then that very animation)."""
        path = self.folder / name
        if not path.exists():
            animation.export(path, frames, fps, size)
            keep_newest(self.folder, self.keep, "[!.]*")  # not the hidden files of writes under way
        return str(path)


def _recipes(texts: list[str]) -> list[Recipe]:
    try:
        return [Recipe.from_json(t) for t in texts]
    except ValueError as e:
        raise gr.Error(str(e)) from None


def build_interpolate_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Interpolate tab inside ``demo``; ``keyframes`` holds the recipe JSONs Explore adds."""
    strip_files = ImageFiles()  # the strip's PNGs carry their recipes, like every image the studio saves
    exports = AnimationFiles()

    with gr.Row(equal_height=False, elem_id="interpolate"):
        with gr.Column(scale=1, min_width=260, elem_classes=["panel"]):
            mode_radio = gr.Radio(MODE_CHOICES, value="slerp", label="Path in z",
                                  info="Slerp keeps every frame as vivid as the keyframes", elem_id="interp-mode")
            frames_slider = gr.Slider(1, animation.MAX_FRAMES_PER_SEGMENT, value=DEFAULT_FRAMES_PER_SEGMENT, step=1,
                                      label="Frames per segment", elem_id="interp-per-segment")
            easing_radio = gr.Radio(list(latent.EASINGS), value="linear", label="Easing",
                                    info="ease-in-out lingers at each keyframe", elem_id="interp-easing")
            loop_box = gr.Checkbox(True, label="Loop: return to the first keyframe", elem_id="interp-loop")
            fps_slider = gr.Slider(1, animation.MAX_FPS, value=DEFAULT_FPS, step=1, label="Frames per second",
                                   elem_id="interp-fps")
            scale_radio = gr.Radio(SIZE_CHOICES, value=2, label="Output size", info="Enlarged with crisp pixels",
                                   elem_id="interp-size")
            summary = gr.Markdown(NO_KEYFRAMES, elem_id="interp-summary")
            preview_button = gr.Button("▶ Preview", variant="primary", elem_id="interp-preview")
            with gr.Row():
                gif_button = gr.Button("Export GIF", elem_id="interp-export-gif")
                mp4_button = gr.Button("Export MP4", elem_id="interp-export-mp4")
            download = gr.File(label="Download", interactive=False, elem_id="interp-download")
        with gr.Column(scale=2, min_width=360):
            # Fixed 100 px thumbnails: fitted columns would blow two keyframes up to half the width each.
            # A click shows one large, with its whole caption.
            strip = gr.Gallery(label="Keyframes, in path order", columns=6, height=260, fit_columns=False,
                               format="png", elem_id="interp-keyframes", elem_classes=["strip"])
            with gr.Row():
                remove_last = gr.Button("Remove last", size="sm", elem_id="interp-remove-last")
                clear = gr.Button("Clear all", size="sm", variant="stop", elem_id="interp-clear")
            view = gr.Image(label="Animation", type="filepath", height=384, interactive=False,
                            buttons=["download", "fullscreen"], elem_id="interp-animation")
            # Fixed height: the frames shown (up to PREVIEW_FRAMES) scroll inside the gallery, not the page.
            frames_view = gr.Gallery(label="Frames", columns=6, height=420, format="png",
                                     elem_id="interp-frames", elem_classes=["strip"])

    def describe(texts: list[str], frames_per_segment: float, loop: bool, fps: float, scale: int) -> str:
        try:
            return summary_markdown(_recipes(texts), frames_per_segment, loop, fps, scale)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def show(texts: list[str], frames_per_segment: float, loop: bool, fps: float, scale: int) -> tuple[list, str]:
        try:
            items = [(strip_files.save(engine.generate(request_for(r))[0], r), keyframe_caption(i, r))
                     for i, r in enumerate(_recipes(texts), start=1)]
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
        return items, describe(texts, frames_per_segment, loop, fps, scale)

    def plan(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
             scale: int, suffix: str) -> tuple[list[Recipe], PathOptions, str, int]:
        """Check everything before drawing; returns the keyframes, the path, the file name and the output side."""
        recipes = _recipes(texts)
        try:
            options = PathOptions(int(frames_per_segment), mode, easing, bool(loop))
            animation.keyframe_model(recipes)
            side = zoo.model_config(recipes[0].model).resolution
            count = len(options.times(len(recipes)))
            key = json.dumps([texts, mode, int(frames_per_segment), easing, bool(loop), fps, scale])
            name = f"{recipes[0].model}-{count}frames-{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"
            animation.check_export(Path(name), count, side, fps, scale * side)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
        return recipes, options, name.replace("/", "--"), scale * side

    def write(recipes: list[Recipe], options: PathOptions, name: str, fps: float, size: int,
              tap: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]] | None = None) -> str:
        """The animation's file, drawn and written unless it exists; ``tap`` sees the frames on their way."""
        try:
            frames = animation.draw_frames(engine, recipes, options)
            return exports.write(name, tap(frames) if tap else frames, fps, size)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def preview(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                scale: int) -> tuple[str, list]:
        recipes, options, name, size = plan(texts, mode, frames_per_segment, easing, loop, fps, scale, ".gif")
        times = options.times(len(recipes))
        step = math.ceil(len(times) / PREVIEW_FRAMES)
        gallery: list[np.ndarray] = []

        def keep_gallery_frames(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for i, frame in enumerate(frames):
                if i % step == 0:
                    gallery.append(frame)
                yield frame

        path = write(recipes, options, name, fps, size, keep_gallery_frames)
        if not gallery:  # the GIF was made before: draw only the frames the gallery shows
            try:
                gallery = list(animation.draw_frames(engine, recipes, options, step))
            except USER_ERRORS as e:
                raise gr.Error(str(e)) from None
        captions = [f"key {start + 1}" if t == 0 else f"{i + 1}" for i, (start, t) in enumerate(times)][::step]
        return path, list(zip(gallery, captions))

    def exporter(suffix: str) -> Callable[..., str]:
        def export(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                   scale: int) -> str:
            recipes, options, name, size = plan(texts, mode, frames_per_segment, easing, loop, fps, scale, suffix)
            return write(recipes, options, name, fps, size)

        return export

    settings = [keyframes, mode_radio, frames_slider, easing_radio, loop_box, fps_slider, scale_radio]
    heavy = {"concurrency_limit": HEAVY_LIMIT, "concurrency_id": HEAVY_EVENTS}
    preview_button.click(preview, settings, [view, frames_view], api_name="interpolate_preview", **heavy)
    gif_button.click(exporter(".gif"), settings, download, api_name="interpolate_gif", **heavy)
    mp4_button.click(exporter(".mp4"), settings, download, api_name="interpolate_mp4", **heavy)

    shown = [keyframes, frames_slider, loop_box, fps_slider, scale_radio]
    keyframes.change(show, shown, [strip, summary], api_visibility="private")
    demo.load(show, shown, [strip, summary], api_visibility="private")
    for control in shown[1:]:
        control.change(describe, shown, summary, show_progress="hidden", api_visibility="private")
    remove_last.click(lambda texts: texts[:-1], keyframes, keyframes, api_visibility="private")
    clear.click(lambda: [], None, keyframes, api_visibility="private")
