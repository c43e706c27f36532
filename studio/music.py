"""Music videos: a path through keyframes that moves with a piece of audio, rendered with the sound muxed in.

The sound (``studio.audio``: onsets, energy, chroma, one row per video frame) drives four things:

- **path**: the keyframes follow one another at a pace (keyframes per minute, per bar of the tempo, or
  spread once over the whole excerpt), looping back to the first;
- **motion**: the energy envelope sets the speed along that path (louder is faster; the mean pace holds);
- **pulse**: each onset pushes the latent along a direction (a slider direction, or a seeded random one)
  by an amount that decays with a half-life;
- **harmony**: chroma sets the class blend of a conditional model, or moves a few slider directions.

Everything that made a video is a ``MusicRecipe`` (keyframe recipes, the audio's sha256 and excerpt,
fps, size, mapping): it goes into the MP4's comment (and the command line writes it beside the video
as JSON), and ``render`` from it draws the same frames again. Frames go through the engine in small
background requests (``animation``'s), into an H.264 video that is then muxed with the excerpt as AAC;
the MP4 appears whole or not at all.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from studio import animation, audio, directions, latent
from studio.engine import Engine
from studio.recipe import Recipe, RecipeError, refuse_constant
from studio.sampling import Request
from studio.storage import atomic_write, atomic_write_bytes

FORMAT = "gan-studio-music/1"
PACE_UNITS = ("minute", "bar", "song")
HARMONY_TARGETS = ("auto", "classes", "directions")
DEFAULT_FPS = 24.0
PREVIEW_SECONDS = 4.0
MAX_PACE = {"minute": 600.0, "bar": 16.0}  # a new keyframe every 0.1 s at most: at 24 fps, ~2 frames
# Harmony moves slider directions 1..4: direction 0, the strongest, is the pulse's by default, so the two
# change the picture in different ways. A fully dominant pitch moves its direction HARMONY_REACH units.
HARMONY_DIRECTIONS = slice(1, 5)
HARMONY_REACH = 3.0
HARMONY_SMOOTH_S = 1.0  # harmony drifts with the chords, not with every note
HARMONY_SHARPNESS = 4.0  # chroma to this power: the loudest pitch classes lead the blend
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "192k"]
MAX_RECIPE_BYTES = 2**20  # 16 keyframes of the largest recipe (64 KB each) fit


@dataclass(frozen=True)
class Mapping:
    """How the sound moves the picture; every field has a control in the tab and an option on the command line.

    Attributes:
        pace: Keyframes per minute (``per="minute"``) or per bar (``per="bar"``); ignored for ``"song"``,
            which spreads the keyframes once over the excerpt.
        per: One of ``PACE_UNITS``.
        tempo: Beats per minute for ``per="bar"``; None: estimated from the onsets.
        beats_per_bar: Beats in a bar.
        mode: "slerp" or "lerp" between keyframes in z (a style family walks W linearly).
        pulse: How far a full-strength onset pushes the latent, in slider units (0: no pulse).
        pulse_decay: Seconds for a pulse to fall to half.
        pulse_direction: The slider (SeFa) direction the pulse pushes along; None: a random one from ``pulse_seed``.
        pulse_seed: Seed of the random direction.
        motion: 0: a steady pace; 1: speed proportional to the energy envelope.
        harmony: 0: the keyframes' own classes; 1: the classes (or directions) chroma chooses.
        harmony_to: "classes" (conditional models), "directions", or "auto" (classes where there are some).
    """

    pace: float = 12.0
    per: str = "minute"
    tempo: float | None = None
    beats_per_bar: int = 4
    mode: str = "slerp"
    pulse: float = 1.5
    pulse_decay: float = 0.15
    pulse_direction: int | None = 0
    pulse_seed: int = 0
    motion: float = 0.5
    harmony: float = 0.5
    harmony_to: str = "auto"

    def __post_init__(self) -> None:
        """Refuse, in words, a value out of range or of the wrong kind.

        Raises:
            ValueError: The first field that is wrong.
        """
        if self.per not in PACE_UNITS:
            raise ValueError(f"unknown pace unit {self.per!r}; choose one of {', '.join(PACE_UNITS)}")
        if self.per != "song":  # which spreads the keyframes over the excerpt, whatever the pace
            latent.check_number(self.pace, f"keyframes per {self.per}", 1e-3, MAX_PACE[self.per])
        if self.tempo is not None:
            latent.check_number(self.tempo, "the tempo (beats per minute)", 20, 400)
        _check_whole(self.beats_per_bar, "beats per bar", 1, 16)
        if self.mode not in animation.MODES:
            raise ValueError(f"unknown interpolation {self.mode!r}; choose one of {', '.join(animation.MODES)}")
        latent.check_number(self.pulse, "the pulse", 0, latent.MAX_EDIT)
        latent.check_number(self.pulse_decay, "the pulse's half-life (seconds)", 0.01, 10)
        if self.pulse_direction is not None:
            _check_whole(self.pulse_direction, "the pulse's direction", 0, directions.MAX_DIRECTIONS - 1)
        latent.check_seed(self.pulse_seed)
        latent.check_number(self.motion, "motion", 0, 1)
        latent.check_number(self.harmony, "harmony", 0, 1)
        if self.harmony_to not in HARMONY_TARGETS:
            raise ValueError(f"harmony moves one of {', '.join(HARMONY_TARGETS)}, not {self.harmony_to!r}")


def _check_whole(value: object, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {value!r}")


@dataclass(frozen=True)
class MusicRecipe:
    """Everything that made a music video, so it can be rendered again frame for frame.

    Attributes:
        keyframes: 2 to 16 recipes of one model, in path order.
        audio_name: The audio file's name when the video was made (for messages only).
        audio_sha256: The audio file's sha256: only that very file renders the same video.
        start: Where the excerpt starts in the file, in seconds.
        duration: The excerpt's length in seconds.
        fps: Video frames per second.
        size: Output side in pixels (a multiple of the model's); None: the model's resolution.
        mapping: How the sound moves the picture.
    """

    keyframes: tuple[Recipe, ...]
    audio_name: str
    audio_sha256: str
    start: float
    duration: float
    fps: float = DEFAULT_FPS
    size: int | None = None
    mapping: Mapping = field(default_factory=Mapping)

    def __post_init__(self) -> None:
        """Refuse keyframes of several models, a bad count, or numbers out of range (ValueError)."""
        animation.keyframe_model(self.keyframes)
        if not re.fullmatch(r"[0-9a-f]{64}", str(self.audio_sha256)):
            raise ValueError("the audio's sha256 must be 64 hex digits")
        latent.check_number(self.start, "the excerpt's start (seconds)", 0, math.inf)
        latent.check_number(self.duration, "the excerpt's duration (seconds)", audio.MIN_SECONDS, audio.MAX_SECONDS)
        latent.check_number(self.fps, "fps", 1, animation.MAX_FPS)
        if self.size is not None:
            _check_whole(self.size, "the output size", 1, 8192)

    @property
    def model(self) -> str:
        """The keyframes' model."""
        return self.keyframes[0].model

    def to_json(self) -> str:
        """The recipe as one line of strict JSON (it rides in the MP4's comment)."""
        return json.dumps({
            "format": FORMAT,
            "audio": {"name": self.audio_name, "sha256": self.audio_sha256, "start": self.start,
                      "duration": self.duration},
            "video": {"fps": self.fps, "size": self.size},
            "mapping": asdict(self.mapping),
            "keyframes": [json.loads(k.to_json()) for k in self.keyframes],
        }, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> MusicRecipe:
        """Parse ``to_json``'s text, checking every field.

        Raises:
            RecipeError: Not a music recipe, or a field that is missing or wrong.
        """
        if len(text) > MAX_RECIPE_BYTES:
            raise RecipeError(f"not a music recipe: over the {MAX_RECIPE_BYTES // 1024} KB one may take")
        try:
            d = json.loads(text, parse_constant=refuse_constant)
        except ValueError as e:
            raise RecipeError(f"not a music recipe: the text is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RecipeError(f"not a music recipe: expected a JSON object with format {FORMAT!r}")
        try:
            sound, video = d["audio"], d["video"]
            keyframes = tuple(Recipe.from_json(json.dumps(k)) for k in d["keyframes"])
            return cls(keyframes, str(sound["name"]), sound["sha256"], sound["start"], sound["duration"],
                       video["fps"], video["size"], Mapping(**d["mapping"]))
        except (KeyError, TypeError, ValueError) as e:  # RecipeError is a ValueError
            raise RecipeError(f"invalid music recipe: {e}") from None


def read_music_recipe(path: Path) -> MusicRecipe:
    """The music recipe in a JSON file, or in the comment of an MP4 that ``render`` wrote.

    Raises:
        RecipeError: The file cannot be read or holds no music recipe.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise RecipeError(f"cannot read {path.name!r}: {e.strerror or e}") from None
    if head.lstrip()[:1] == b"{":
        return MusicRecipe.from_json(head.decode("utf-8", "replace"))
    done = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                           "-f", "ffmetadata", "-"], capture_output=True, timeout=60)
    # ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash.
    found = re.search(rb"^comment=((?:\\.|[^\\\n])*)$", done.stdout, re.MULTILINE | re.DOTALL)
    if done.returncode or found is None:
        raise RecipeError(f"{path.name!r} holds no music recipe: give the JSON or the MP4 that a music render wrote")
    return MusicRecipe.from_json(re.sub(rb"\\(.)", rb"\1", found.group(1), flags=re.DOTALL).decode("utf-8", "replace"))


def recipe_for(keyframes: Sequence[Recipe], audio_path: Path, start: float = 0.0, duration: float | None = None,
               fps: float = DEFAULT_FPS, size: int | None = None, mapping: Mapping | None = None) -> MusicRecipe:
    """A music recipe for an audio file's excerpt (to its end when ``duration`` is None), checked.

    Raises:
        audio.AudioError: The file cannot be read, or the excerpt is out of range.
        ValueError: Bad keyframes or settings.
    """
    audio_path = Path(audio_path)
    length = audio.check_excerpt(audio.probe_seconds(audio_path), start, duration, audio_path.name)
    return MusicRecipe(tuple(keyframes), audio_path.name, audio.file_sha256(audio_path), float(start), length,
                       float(fps), size, mapping or Mapping())


def path_positions(analysis: audio.Analysis, mapping: Mapping, keyframes: int) -> np.ndarray:
    """Each frame's place on the path ``[T]``, in keyframes: 2.25 is a quarter of the way from keyframe 2 to 3.

    Raises:
        ValueError: ``per="bar"`` without a tempo, given or found.
    """
    speed = 1 - mapping.motion + mapping.motion * analysis.energy / analysis.energy.mean()  # mean 1: pace holds
    travelled = np.concatenate([[0.0], np.cumsum(speed)[:-1]])  # frame 0 sits on the first keyframe
    if mapping.per == "song":  # the last frame sits on the last keyframe
        return travelled * (keyframes - 1) / max(travelled[-1], 1e-9)
    if mapping.per == "minute":
        per_second = mapping.pace / 60
    else:
        tempo = mapping.tempo or analysis.tempo
        if tempo is None:
            raise ValueError("no steady beat was found in the excerpt, so a pace per bar has no tempo: give the "
                             "tempo, or set the pace in keyframes per minute")
        per_second = mapping.pace * tempo / 60 / mapping.beats_per_bar
    return travelled * per_second / analysis.fps


def pulse_envelope(analysis: audio.Analysis, mapping: Mapping) -> np.ndarray:
    """How far each frame is pushed by the onsets before it ``[T]``, 1 at a full-strength onset.

    An onset's strength is its flux against the loud ones' (the 90th percentile), at most 1; a pulse
    falls to half every ``pulse_decay`` seconds, and a new onset lifts it back to at least its strength
    (a drum roll does not build up past one full push).
    """
    envelope = np.zeros(analysis.frames)
    if not len(analysis.onsets):
        return envelope
    heights = analysis.flux[analysis.onsets]
    strength = dict(zip(analysis.onsets.tolist(), np.minimum(1.0, heights / np.percentile(heights, 90))))
    keep = 0.5 ** (1 / (mapping.pulse_decay * analysis.fps))
    level = 0.0
    for k in range(analysis.frames):
        level = max(level * keep, strength.get(k, 0.0))
        envelope[k] = level
    return envelope


def harmony_weights(analysis: audio.Analysis, n: int) -> np.ndarray:
    """Chroma folded onto ``n`` targets ``[T, n]`` (pitch class j to target j mod n), smoothed and sharpened,
    each row summing to 1."""
    chroma = audio.smooth(analysis.chroma, max(1, round(HARMONY_SMOOTH_S * analysis.fps)))
    folded = np.zeros((len(chroma), n))
    for j in range(12):
        folded[:, j % n] += chroma[:, j]
    sharp = folded**HARMONY_SHARPNESS
    return sharp / sharp.sum(axis=1, keepdims=True).clip(min=1e-12)


def frames_request(engine: Engine, recipe: MusicRecipe, analysis: audio.Analysis) -> Request:
    """The background request that draws every frame of ``recipe``'s video, from the sound's ``analysis``.

    Raises:
        ValueError: Bad keyframes (see ``animation.keyframe_inputs``), harmony on classes for a model
            without any, or a pace per bar without a tempo.
    """
    keys, mapping = recipe.keyframes, recipe.mapping
    z, c = animation.keyframe_inputs(engine, keys)  # [K, D] or styles [K, L, W]; [K, C] or None
    dirs = directions.load_or_compute(engine.model(recipe.model, keys[0].tuned), "sefa")  # [n, D]: one slider unit each
    place = torch.from_numpy(path_positions(analysis, mapping, len(keys)))
    segment = place.floor().long()
    t = (place - segment).float()
    a, b = segment % len(keys), (segment + 1) % len(keys)
    styled = z.dim() == 3
    interpolate = latent.slerp if mapping.mode == "slerp" and not styled else latent.lerp
    along = t.view(-1, *[1] * (z.dim() - 1))
    frames_z = torch.where(along == 0, z[a], interpolate(z[a], z[b], along))  # a keyframe's own frame is exact
    pulse = torch.from_numpy(pulse_envelope(analysis, mapping)).float()
    offset = mapping.pulse * pulse[:, None] * _pulse_direction(dirs, mapping)  # [T, D]
    frames_c = None if c is None else torch.lerp(c[a], c[b], t[:, None])
    target = ("classes" if c is not None else "directions") if mapping.harmony_to == "auto" else mapping.harmony_to
    if target == "classes":
        if c is None:
            raise ValueError(f"harmony can move classes only on a conditional model, and {recipe.model!r} has none "
                             "in its inputs: let it move directions")
        chosen = torch.from_numpy(harmony_weights(analysis, c.shape[1])).float()
        frames_c = torch.lerp(frames_c, chosen, mapping.harmony)
    else:
        moved = dirs[HARMONY_DIRECTIONS]
        n = len(moved)
        weights = torch.from_numpy(harmony_weights(analysis, n)).float()
        values = mapping.harmony * HARMONY_REACH * (n * weights - 1) / (n - 1)  # [T, n], 0 for an even spread
        offset = offset + values @ moved
    frames_z = frames_z + (offset[:, None] if styled else offset)  # a style family's offset moves every layer
    bends = None
    if any(k.bends for k in keys):  # each frame bent as its nearer keyframe
        bends = tuple(keys[int(i)].bends for i in (place.round().long() % len(keys)))
    # As animations: the first keyframe's noise (detail that changed each frame would flicker) and blend of weights
    return Request(recipe.model, z=frames_z, c=frames_c, noise_seed=keys[0].noise_seed, frame_bends=bends,
                   tuned=keys[0].tuned, background=True)


def _pulse_direction(dirs: torch.Tensor, mapping: Mapping) -> torch.Tensor:
    """The pulse's direction ``[D]``: a slider's, or a seeded random one as long as the strongest slider's."""
    if mapping.pulse_direction is not None:
        if mapping.pulse_direction >= len(dirs):
            raise ValueError(f"direction {mapping.pulse_direction} does not exist: there are {len(dirs)} "
                             f"(0-{len(dirs) - 1})")
        return dirs[mapping.pulse_direction]
    drawn = torch.randn(dirs.shape[1], generator=torch.Generator().manual_seed(mapping.pulse_seed))
    return drawn / drawn.norm() * dirs[0].norm()


@dataclass(frozen=True)
class Rendered:
    """What a render did: the frames written, the whole render's seconds, and the seconds spent drawing."""

    frames: int
    seconds: float
    drawing_seconds: float

    @property
    def engine_fps(self) -> float:
        """Frames the engine drew per second of drawing."""
        return self.frames / max(self.drawing_seconds, 1e-9)


Progress = Callable[[int, int], None]


def render(engine: Engine, recipe: MusicRecipe, audio_path: Path, out: Path, progress: Progress | None = None,
           seconds: float | None = None) -> Rendered:
    """Draw ``recipe``'s video and write it with its sound as an H.264 + AAC MP4 carrying the recipe, atomically.

    Args:
        engine: Draws the frames, in background requests.
        recipe: The video; ``audio_path`` must be the very file it was made from.
        audio_path: The audio file.
        out: The MP4 to write; nothing is left there (or beside it) if the render fails.
        progress: Called with (frames done, frames in all) after each frame.
        seconds: Only the first ``seconds`` of the video (a preview); the analysis is still the whole
            excerpt's, so a preview's frames are the video's own.

    Raises:
        audio.AudioError: The file is not the recipe's, or cannot be decoded.
        ValueError: Settings the render refuses, checked before any frame is drawn; the engine's errors.
    """
    began = time.perf_counter()
    out, audio_path = Path(out), Path(audio_path)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"cannot write {out.name!r}: a music video is an MP4, so the name must end in .mp4")
    if audio.file_sha256(audio_path) != recipe.audio_sha256:
        raise audio.AudioError(f"{audio_path.name!r} is not the audio this recipe was made from "
                               f"({recipe.audio_name!r}): give that file")
    analysis = audio.analyse(audio.decode(audio_path, recipe.start, recipe.duration), recipe.fps)
    count = analysis.frames if seconds is None else min(analysis.frames, audio.frame_count(seconds, recipe.fps))
    animation.check_export(out, count, engine.config(recipe.model).resolution, recipe.fps, recipe.size)
    request = frames_request(engine, recipe, analysis)
    frames = replace(request, z=request.z[:count], c=None if request.c is None else request.c[:count],
                     frame_bends=None if request.frame_bends is None else request.frame_bends[:count])
    clock = _Clock()
    drawn = clock.timed(animation.drawn_frames(engine, frames))
    counted = _counted(drawn, count, progress) if progress else drawn

    def write(tmp: Path) -> None:
        video = tmp.with_name(f"{tmp.name}.video.mp4")  # hidden and temporary too: beside the MP4 being written
        try:
            animation.export(video, counted, recipe.fps, recipe.size)
            _mux(video, audio_path, recipe.start, count / recipe.fps, recipe.to_json(), tmp)
        finally:
            video.unlink(missing_ok=True)

    atomic_write(out, write)
    return Rendered(count, time.perf_counter() - began, clock.seconds)


def write_sidecar(out: Path, recipe: MusicRecipe) -> Path:
    """Write ``recipe`` as JSON beside the video ``out`` (``OUT.json``), atomically; its path."""
    path = Path(out).with_suffix(".json")
    atomic_write_bytes(path, (json.dumps(json.loads(recipe.to_json()), indent=2) + "\n").encode())
    return path


class _Clock:
    """Seconds spent inside an iterator's ``next``: the time a render waited for the engine."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, items: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        items = iter(items)
        while True:
            began = time.perf_counter()
            item = next(items, None)
            self.seconds += time.perf_counter() - began
            if item is None:
                return
            yield item


def _counted(frames: Iterator[np.ndarray], total: int, progress: Progress) -> Iterator[np.ndarray]:
    for done, frame in enumerate(frames, start=1):
        yield frame
        progress(done, total)  # once the frame is taken: written, or on its way


def _mux(video: Path, audio_path: Path, start: float, seconds: float, comment: str, out: Path) -> None:
    """Write ``video`` with ``seconds`` of ``audio_path`` from ``start`` as AAC into the MP4 ``out``."""
    done = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(video),
                           "-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", str(audio_path),
                           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *AUDIO_CODEC,
                           "-metadata", f"comment={comment}", "-movflags", "+faststart", "-f", "mp4", str(out)],
                          capture_output=True, timeout=3600)
    if done.returncode:
        raise audio.AudioError(f"ffmpeg could not add the sound to the video ({audio.ffmpeg_reason(done.stderr)})")
