"""The Interpolate tab: keyframes from Explore on a path through latent space, previewed, exported.

Keyframes live in a ``gr.State`` shared with the Explore tab (a list of recipe JSONs); this tab shows
them as a strip, trims them, and turns them into frames through ``studio.animation``. Animation
files are named by everything that made them, so a preview's GIF is also its export, and repeats
cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from studio import animation, latent, zoo
from studio.animation import PathOptions
from studio.recipe import Recipe, request_for
from studio.ui.errors import USER_ERRORS
from studio.ui.explore import ImageFiles

if TYPE_CHECKING:
    from studio.engine import Engine

MODE_CHOICES = [("Slerp: along the sphere", "slerp"), ("Lerp: straight line", "lerp")]
SIZE_CHOICES = [("1× (model size)", 1), ("2×", 2), ("4×", 4)]
DEFAULT_FRAMES_PER_SEGMENT = 12
DEFAULT_FPS = 12
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
    return (f"**{len(recipes)} keyframes** → {frames} frames ({frames // per} segments × {per}) · "
            f"{frames / fps:.1f} s at {fps:g} fps · {side}×{side} px")


def _recipes(texts: list[str]) -> list[Recipe]:
    try:
        return [Recipe.from_json(t) for t in texts]
    except ValueError as e:
        raise gr.Error(str(e)) from None


def build_interpolate_tab(demo: gr.Blocks, engine: Engine, keyframes: gr.State) -> None:
    """Lay out the Interpolate tab inside ``demo``; ``keyframes`` holds the recipe JSONs Explore adds."""
    strip_files = ImageFiles()  # the strip's PNGs carry their recipes, like every image the studio saves
    exports = Path(tempfile.mkdtemp(prefix="gan-studio-animations-"))

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
            # Fixed height: a long path (up to 1920 frames) scrolls inside the gallery, not the page.
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
             scale: int, suffix: str) -> tuple[list[Recipe], PathOptions, Path]:
        """Check everything before drawing; returns the keyframes, the path and the file to write."""
        recipes = _recipes(texts)
        try:
            options = PathOptions(int(frames_per_segment), mode, easing, bool(loop))
            animation.keyframe_model(recipes)
            side = zoo.model_config(recipes[0].model).resolution
            count = len(options.times(len(recipes)))
            key = json.dumps([texts, mode, int(frames_per_segment), easing, bool(loop), fps, scale])
            name = f"{recipes[0].model}-{count}frames-{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"
            animation.check_export(exports / name, count, side, fps, scale * side)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None
        return recipes, options, exports / name

    def draw(recipes: list[Recipe], options: PathOptions) -> np.ndarray:
        try:
            return animation.render_frames(engine, recipes, options)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    def save(path: Path, frames: np.ndarray, fps: float, scale: int) -> str:
        if not path.exists():  # named by its settings: an existing file is this very animation
            animation.export(path, frames, fps, scale * frames.shape[1])
        return str(path)

    def preview(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                scale: int) -> tuple[str, list]:
        recipes, options, path = plan(texts, mode, frames_per_segment, easing, loop, fps, scale, ".gif")
        frames = draw(recipes, options)
        captions = [f"key {start + 1}" if t == 0 else f"{i + 1}"
                    for i, (start, t) in enumerate(options.times(len(recipes)))]
        return save(path, frames, fps, scale), list(zip(frames, captions))

    def exporter(suffix: str) -> Callable[..., str]:
        def export(texts: list[str], mode: str, frames_per_segment: float, easing: str, loop: bool, fps: float,
                   scale: int) -> str:
            recipes, options, path = plan(texts, mode, frames_per_segment, easing, loop, fps, scale, suffix)
            if path.exists():  # a preview (GIF) or an earlier export made it: no need to draw
                return str(path)
            return save(path, draw(recipes, options), fps, scale)

        return export

    settings = [keyframes, mode_radio, frames_slider, easing_radio, loop_box, fps_slider, scale_radio]
    preview_button.click(preview, settings, [view, frames_view], api_name="interpolate_preview")
    gif_button.click(exporter(".gif"), settings, download, api_name="interpolate_gif")
    mp4_button.click(exporter(".mp4"), settings, download, api_name="interpolate_mp4")

    shown = [keyframes, frames_slider, loop_box, fps_slider, scale_radio]
    keyframes.change(show, shown, [strip, summary], api_visibility="private")
    demo.load(show, shown, [strip, summary], api_visibility="private")
    for control in shown[1:]:
        control.change(describe, shown, summary, show_progress="hidden", api_visibility="private")
    remove_last.click(lambda texts: texts[:-1], keyframes, keyframes, api_visibility="private")
    clear.click(lambda: [], None, keyframes, api_visibility="private")
