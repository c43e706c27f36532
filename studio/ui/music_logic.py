"""What the Music tab does, without Gradio: the sound's picture, the video's recipe, renders with progress.

Functions take the shared engine explicitly and raise ``ValueError`` (``audio.AudioError`` and
``RecipeError`` among them) with a message for the artist; the tab turns those into ``gr.Error``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from studio import animation, audio, latent, music
from studio.recipe import Recipe
from studio.ui.scratch import keep_newest, scratch_dir

if TYPE_CHECKING:
    from studio.engine import Engine

RANDOM = "random"  # the pulse direction's choice for a seeded random direction
BACKGROUND = (28, 25, 23)
WAVE_COLOUR = (245, 158, 11)
ONSET_COLOUR = (236, 72, 153)
NO_AUDIO = "Drop an audio file (WAV, MP3, FLAC, OGG or M4A, up to 10 minutes or an excerpt of it) to start."


def waveform_picture(sound: audio.Sound, found: audio.Analysis, width: int = 900, height: int = 140) -> np.ndarray:
    """The waveform as a ``[height, width, 3]`` uint8 picture: each column the range of its samples, each
    detected onset a full-height line at its time."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = BACKGROUND
    columns = np.array_split(sound.samples, width)
    peak = max(float(np.abs(sound.samples).max()), 1e-9)
    middle = (height - 1) / 2
    for x, part in enumerate(columns):
        if len(part):
            top = round(middle - part.max() / peak * middle)
            bottom = round(middle - part.min() / peak * middle)
            picture[top : bottom + 1, x] = WAVE_COLOUR
    for k in found.onsets:
        picture[:, min(width - 1, round(k / found.fps / sound.seconds * width))] = ONSET_COLOUR
    return picture


def sound_summary(sound: audio.Sound, found: audio.Analysis, name: str) -> str:
    """What the tab found in the sound: its excerpt, onsets, tempo and the frames it makes."""
    tempo = f"about {found.tempo:.0f} BPM" if found.tempo else "no steady beat"
    return (f"**{name}**: {sound.seconds:.1f} s from {sound.start:g} s (of {sound.file_seconds:.1f} s) · "
            f"{len(found.onsets)} onsets · {tempo} · {found.frames} frames at {found.fps:g} fps")


def analysed(path: str | None, start: float, duration: float | None, fps: float) -> tuple[audio.Sound, audio.Analysis]:
    """The excerpt of the uploaded file, decoded and analysed.

    Raises:
        ValueError: No file yet; audio.AudioError for one that cannot make a video.
    """
    if not path:
        raise ValueError(NO_AUDIO)
    sound = audio.decode(Path(path), float(start), excerpt_duration(duration))
    return sound, audio.analyse(sound, fps)


def excerpt_duration(duration: float | None) -> float | None:
    """The duration box's value: 0 or empty means to the file's end."""
    return float(duration) if duration else None


def keyframes_for(engine: Engine, source: str, model: str, seeds: str, keyframe_texts: list[str]) -> list[Recipe]:
    """The video's keyframes: one recipe per seed of ``model``, or the Interpolate tab's keyframes.

    Raises:
        ValueError: Bad seeds, or fewer than 2 or more than 16 keyframes; zoo.ModelUnavailable.
    """
    if source == "keyframes":
        recipes = [Recipe.from_json(t) for t in keyframe_texts]
        animation.check_keyframe_count(len(recipes))
        return recipes
    sha = engine.model(model).weights_sha256
    recipes = [Recipe(model, sha, seed) for seed in latent.parse_seeds(seeds, animation.MAX_KEYFRAMES)]
    animation.check_keyframe_count(len(recipes))
    return recipes


def video_recipe(engine: Engine, path: str | None, start: float, duration: float | None, source: str, model: str,
                 seeds: str, keyframe_texts: list[str], pace: float, per: str, pulse: float, decay: float,
                 direction: str, motion: float, harmony: float, harmony_to: str, fps: float,
                 scale: int) -> music.MusicRecipe:
    """The video's recipe from the tab's controls, checked before any frame is drawn.

    Raises:
        ValueError: No audio yet, audio that cannot make a video, bad keyframes or settings; zoo.ModelUnavailable.
    """
    if not path:
        raise ValueError(NO_AUDIO)
    recipes = keyframes_for(engine, source, model, seeds, keyframe_texts)
    defaults = music.Mapping()
    mapping = music.Mapping(float(pace), per, None, defaults.beats_per_bar, defaults.mode, float(pulse), float(decay),
                            None if direction == RANDOM else int(direction), defaults.pulse_seed, float(motion),
                            float(harmony), harmony_to)
    side = int(scale) * engine.config(recipes[0].model).resolution
    return music.recipe_for(recipes, Path(path), float(start), excerpt_duration(duration), float(fps), side, mapping)


class MusicFiles:
    """Music videos named by their recipe (a repeat is that very file); the newest ``keep`` stay, and the
    folder goes with this object."""

    def __init__(self, keep: int = 10) -> None:
        self.folder = scratch_dir(self, "music")
        self.keep = keep

    def render(self, engine: Engine, recipe: music.MusicRecipe, audio_path: str, seconds: float | None,
               progress: music.Progress) -> tuple[str, str]:
        """The paths of the video (its first ``seconds`` only, when given) and of its recipe as JSON."""
        key = hashlib.sha256(f"{recipe.to_json()}{seconds}".encode()).hexdigest()[:16]
        kind = "preview" if seconds else "video"
        path = self.folder / f"{recipe.model.replace('/', '--')}-{kind}-{key}.mp4"
        if not path.exists():
            music.render(engine, recipe, Path(audio_path), path, progress, seconds)
            music.write_sidecar(path, recipe)
            keep_newest(self.folder, 2 * self.keep, "[!.]*")  # a video and its recipe each; not writes under way
        return str(path), str(path.with_suffix(".json"))


def eta_text(done: int, total: int, elapsed: float) -> str:
    """Progress in words: frames done and the time left at the rate so far."""
    if not done:
        return f"Rendering {total} frames…"
    left = elapsed / done * (total - done)
    return f"Frame {done} of {total} · about {_clock(left)} left"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def with_progress(work: Callable[[music.Progress], object], report: Callable[[float, str], None],
                  every_s: float = 0.25) -> object:
    """Run ``work(progress)`` on a thread of its own, calling ``report(fraction, words)`` from this thread as it goes.

    Gradio's progress bar must be told from the event's own thread; the frames arrive on the export's.
    Returns what ``work`` returned, or raises what it raised.
    """
    state = {"done": 0, "total": 0}
    outcome: dict[str, object] = {}

    def progress(done: int, total: int) -> None:
        state.update(done=done, total=total)

    def run() -> None:
        try:
            outcome["value"] = work(progress)
        except BaseException as e:  # handed to the waiting event
            outcome["error"] = e

    began = time.monotonic()
    thread = threading.Thread(target=run, name="studio-music")
    thread.start()
    while thread.is_alive():
        thread.join(every_s)
        if state["total"]:
            report(state["done"] / state["total"], eta_text(state["done"], state["total"], time.monotonic() - began))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
