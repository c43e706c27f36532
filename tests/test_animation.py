"""Keyframe animation: paths through recipes' latents, frames through the engine, GIF/MP4 export, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from studio import animation, zoo
from studio.__main__ import main
from studio.animation import PathOptions
from studio.engine import Engine, Request
from studio.recipe import Recipe, RecipeError, request_for
from tests.conftest import RecordingEngine, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    with Engine() as eng:
        yield eng


def recipes_for(name: str, seeds: list[int]) -> list[Recipe]:
    """Keyframes of model ``name`` whose states differ in more than the seed: classes, truncation, edits."""
    sha = zoo.load(name).weights_sha256
    states = [({"cat": 1.0}, 1.0, {}), ({"dog": 0.6, "fox": 0.4}, 0.8, {0: 2.0}), ({}, 0.7, {1: -1.5})]
    return [Recipe(name, sha, s, classes, psi, "sefa", edits)
            for s, (classes, psi, edits) in zip(seeds, states * len(seeds))]


def image_of(engine: Engine, recipe: Recipe) -> np.ndarray:
    """The keyframe's own image, drawn as the studio draws one recipe."""
    return engine.generate(request_for(recipe))[0]


def render(engine: Engine, recipes: list[Recipe], options: PathOptions) -> np.ndarray:
    """Every frame of the path, ``[T, H, W, 3]``."""
    return np.stack(list(animation.draw_frames(engine, recipes, options)))


def test_frames_at_segment_starts_are_the_keyframe_images_exactly(tiny: str, engine: Engine) -> None:
    recipes = recipes_for(tiny, [3, 7, 11])
    frames = render(engine, recipes, PathOptions(5, "slerp", "ease-in-out", loop=False))
    assert frames.shape == (10, 32, 32, 3)  # 2 segments x 5: the end keyframe is not a frame
    assert np.array_equal(frames[0], image_of(engine, recipes[0]))
    assert np.array_equal(frames[5], image_of(engine, recipes[1]))
    assert not np.array_equal(frames[1], frames[0])  # the path moves between keyframes


def test_keyframe_latents_are_kept_to_the_bit() -> None:
    torch.manual_seed(0)
    z, c = torch.randn(4, 16) * 0.7, torch.softmax(torch.randn(4, 3), 1)
    for mode in animation.MODES:
        fz, fc = animation.frame_inputs(z, c, PathOptions(7, mode, "ease-in-out", loop=True))
        for k in range(4):
            assert torch.equal(fz[7 * k], z[k]) and torch.equal(fc[7 * k], c[k]), (mode, k)


def test_a_loop_closes_on_the_first_keyframe(tiny: str, engine: Engine) -> None:
    recipes = recipes_for(tiny, [3, 7, 11])
    z, c = animation.keyframe_inputs(engine, recipes)
    fz, fc = animation.frame_inputs(z, c, PathOptions(4, "lerp", "linear", loop=True))
    assert len(fz) == 12 and torch.equal(fz[8], z[2])  # the third segment starts at the last keyframe...
    # ...and heads to keyframe 0: one more even step from the last frame lands on it.
    assert torch.allclose(z[0] - fz[-1], fz[-1] - fz[-2], atol=1e-6)
    assert torch.allclose(c[0] - fc[-1], fc[-1] - fc[-2], atol=1e-6)

    frames = render(engine, recipes, PathOptions(8, "slerp", "linear", loop=True))
    assert len(frames) == 24
    first, second = image_of(engine, recipes[0]).astype(int), image_of(engine, recipes[1]).astype(int)
    last = frames[-1].astype(int)
    assert np.abs(last - first).mean() < np.abs(last - second).mean()


@pytest.mark.parametrize(("keyframes", "per_segment", "loop", "count"),
                         [(2, 1, False, 1), (2, 12, True, 24), (3, 12, False, 24), (16, 120, True, 1920)])
def test_frame_count_is_frames_per_segment_times_segments(keyframes: int, per_segment: int, loop: bool,
                                                          count: int) -> None:
    z = torch.randn(keyframes, 16)
    fz, fc = animation.frame_inputs(z, None, PathOptions(per_segment, "slerp", "linear", loop))
    assert fz.shape == (count, 16) and fc is None


def test_class_vectors_are_lerped_and_easing_lingers_at_keyframes() -> None:
    z = torch.randn(2, 16)
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    _, fc = animation.frame_inputs(z, c, PathOptions(4, "slerp", "linear"))
    assert torch.allclose(fc[2], torch.tensor([0.5, 0.0, 0.5]))
    linear, _ = animation.frame_inputs(z, None, PathOptions(4, "lerp", "linear"))
    eased, _ = animation.frame_inputs(z, None, PathOptions(4, "lerp", "ease-in-out"))
    # A quarter of the way in time, ease-in-out has covered 0.5 - 0.5 cos(pi / 4) ~ 15% of the way.
    assert ((eased[1] - z[0]).norm() / (z[1] - z[0]).norm()).item() == pytest.approx(0.1464, abs=1e-4)
    assert torch.allclose(eased[2], linear[2], atol=1e-6)  # both are half-way at the middle


def test_keyframes_from_two_models_are_refused(tiny: str, home: Path, engine: Engine) -> None:
    make_tiny_model(home, "tiny2", seed=1)
    mixed = recipes_for(tiny, [1, 2]) + recipes_for("tiny2", [3])
    with pytest.raises(ValueError, match="same model: keyframe 1 uses 'tiny', keyframe 3 uses 'tiny2'"):
        animation.draw_frames(engine, mixed, PathOptions())


def test_a_keyframe_made_with_other_weights_is_refused(tiny: str, engine: Engine) -> None:
    recipes = recipes_for(tiny, [1, 2])
    recipes[1] = Recipe(tiny, "0" * 64, 2)
    with pytest.raises(RecipeError, match="other weights"):
        animation.draw_frames(engine, recipes, PathOptions())


@pytest.mark.parametrize(("count", "ok"), [(1, False), (2, True), (16, True), (17, False)])
def test_keyframe_count_limits(tiny: str, count: int, ok: bool) -> None:
    recipes = [Recipe(tiny, "0" * 64, s) for s in range(count)]
    if ok:
        assert animation.keyframe_model(recipes) == tiny
    else:
        with pytest.raises(ValueError, match=f"needs 2 to 16 keyframes, not {count}"):
            animation.keyframe_model(recipes)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frames_per_segment": 0}, "frames per segment must be a whole number from 1 to 120, not 0"),
    ({"frames_per_segment": 121}, "from 1 to 120, not 121"),
    ({"frames_per_segment": 2.5}, "from 1 to 120, not 2.5"),
    ({"mode": "cubic"}, "unknown interpolation 'cubic'; choose one of lerp, slerp"),
    ({"easing": "bounce"}, "unknown easing 'bounce'; choose one of linear, ease-in-out"),
])
def test_bad_path_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathOptions(**kwargs)


def block_frames(count: int, side: int = 32) -> np.ndarray:
    """Frames of 16 coloured blocks that shift from frame to frame: distinct, and few colours (lossless GIF)."""
    y, x = np.mgrid[:side, :side] * 4 // side
    return np.stack([np.stack([(x * 60 + 9 * i) % 256, y * 60, np.full_like(x, 20 * i % 256)], -1)
                     for i in range(count)]).astype(np.uint8)


def test_gif_export_frame_count_size_timing_and_loop(tmp_path: Path) -> None:
    frames = block_frames(12)
    animation.export(tmp_path / "a.gif", frames, fps=10, size=96)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 12 and gif.size == (96, 96)
        assert gif.info["duration"] == 100 and gif.info["loop"] == 0  # 10 fps, loops for ever
        shown = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert np.array_equal(shown[5][::3, ::3], frames[5])  # 16 colours: lossless, enlarged 3x


def test_mp4_export_frame_count_size_and_codec(tmp_path: Path) -> None:
    frames = block_frames(18)
    animation.export(tmp_path / "a.mp4", frames, fps=12, size=64)
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "a.mp4")) == (18, 1.5)
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "a.mp4"))
    meta = next(reader)
    assert meta["size"] == (64, 64) and meta["codec"] == "h264" and meta["fps"] == 12
    first = np.frombuffer(next(reader), np.uint8).reshape(64, 64, 3)
    reader.close()
    assert np.abs(first[::2, ::2].astype(int) - frames[0]).mean() < 12  # lossy, but the same picture


@pytest.mark.parametrize(("name", "fps", "size", "message"), [
    ("a.webm", 12, None, "must end in .gif or .mp4"),
    ("a.gif", 0, None, "fps must be from 1 to 60, not 0"),
    ("a.mp4", 61, None, "fps must be from 1 to 60, not 61"),
    ("a.gif", 12, 48, r"size must be a multiple of the frames' side \(32 px\), such as 32 or 64, not 48"),
    ("a.gif", 12, 16, "not 16"),
])
def test_bad_export_settings_are_refused_and_write_nothing(tmp_path: Path, name: str, fps: float,
                                                           size: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        animation.export(tmp_path / name, block_frames(2), fps, size)
    assert not list(tmp_path.iterdir())


def test_too_many_pixels_are_refused_before_drawing() -> None:
    with pytest.raises(ValueError, match=r"1920 frames at 1024x1024 are too many pixels for one animation "
                                         r"\(at most 512 megapixels of frames \(2,048 frames at 512×512\)\)"):
        animation.check_export(Path("a.mp4"), 1920, 128, 12, 1024)
    animation.check_export(Path("a.mp4"), 1920, 128, 12, 512)  # the longest path, at 4x the default model


def test_a_stream_past_the_pixel_limit_stops_and_writes_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(animation, "MAX_ANIMATION_PIXELS", 10 * 64**2)
    animation.export(tmp_path / "ok.gif", iter(block_frames(10)), 12, 64)
    with pytest.raises(ValueError, match="11 frames at 64x64 are too many pixels"):
        animation.export(tmp_path / "long.mp4", iter(block_frames(11)), 12, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.gif"]


def test_an_export_is_drawn_in_bounded_requests_with_the_same_pixels(tiny: str, tmp_path: Path) -> None:
    recipes = recipes_for(tiny, [3, 7, 11])
    options = PathOptions(40, "slerp", "linear", loop=True)  # 120 frames
    with RecordingEngine() as eng:
        animation.export(tmp_path / "a.gif", animation.draw_frames(eng, recipes, options), 12)
        assert eng.sizes == [16] * 7 + [8] and animation.FRAMES_PER_REQUEST == 16  # nobody else draws
        z, c = animation.frame_inputs(*animation.keyframe_inputs(eng, recipes), options)
        whole = eng.generate(Request(tiny, z=z, c=c))  # the whole path in one request
        assert np.array_equal(render(eng, recipes, options), whole)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 120


def test_export_requests_shrink_to_one_frame_while_someone_draws(tiny: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(animation, "DRAWING_QUIET_S", 3600.0)  # the drawing below counts for the whole test
    recipes = recipes_for(tiny, [3, 7, 11])
    with RecordingEngine() as eng:
        eng.generate(request_for(recipes[0]))  # someone draws
        animation.export(tmp_path / "a.gif", animation.draw_frames(eng, recipes, PathOptions(10, loop=True)), 12)
        assert eng.sizes == [animation.FRAMES_WHILE_DRAWING] * 30 and animation.FRAMES_WHILE_DRAWING == 1


def test_an_interactive_request_is_served_while_a_long_export_runs(tiny: str, tmp_path: Path) -> None:
    recipes = recipes_for(tiny, [3, 7, 11])
    options = PathOptions(120, "slerp", "linear", loop=True)  # 360 frames
    with RecordingEngine(slip_in=request_for(recipes[0])) as eng:
        animation.export(tmp_path / "a.mp4", animation.draw_frames(eng, recipes, options), 24, 64)
        assert eng.frames_served == 360
        assert eng.frames_before_slip_in is not None and eng.frames_before_slip_in <= animation.FRAMES_PER_REQUEST


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own priority on Linux only")
def test_exports_encode_at_a_lower_cpu_priority_and_the_caller_keeps_its_own(tmp_path: Path) -> None:
    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen = []

    def frames() -> Iterator[np.ndarray]:
        for frame in block_frames(3):
            seen.append(priority())  # frames are pulled by the thread that encodes them
            yield frame

    mine = priority()
    animation.export(tmp_path / "a.mp4", frames(), 12)
    assert seen == [min(19, mine + animation.EXPORT_NICENESS)] * 3
    assert priority() == mine


def test_a_long_export_never_holds_all_its_frames(tiny: str, tmp_path: Path) -> None:
    recipes = recipes_for(tiny, [3, 7])
    options = PathOptions(100, "lerp", "linear", loop=True)  # 200 frames, 128x128 once enlarged
    everything = 200 * 128 * 128 * 3  # bytes of all enlarged frames: 9.8 MB
    with Engine() as eng:
        frames = animation.draw_frames(eng, recipes, options)
        tracemalloc.start()  # numpy reports its arrays to tracemalloc
        try:
            animation.export(tmp_path / "a.mp4", frames, 24, 128)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "a.mp4"))[0] == 200
    assert peak < everything / 10


def test_cli_interpolate_writes_a_looping_gif(tiny_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk.gif"
    env = {**os.environ, "STUDIO_HOME": str(tiny_home)}
    result = subprocess.run([sys.executable, "-m", "studio", "interpolate", "--model", "tiny", "--seeds", "1,5,9",
                             "--class", "fox", "--frames", "4", "--loop", "--size", "64", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stdout
    with Image.open(out) as gif:
        assert gif.n_frames == 12 and gif.size == (64, 64)  # 3 segments x 4, enlarged 2x
    # The same file as the studio's own path through those seeds' images (whose first frame is
    # seed 1's image exactly, see above).
    with Engine() as eng, pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(tiny_home))
        sha = zoo.load("tiny").weights_sha256
        recipes = [Recipe("tiny", sha, s, {"fox": 1.0}) for s in (1, 5, 9)]
        frames = render(eng, recipes, PathOptions(4, "slerp", "linear", loop=True))
    animation.export(tmp_path / "expected.gif", frames, 12, 64)
    assert out.read_bytes() == (tmp_path / "expected.gif").read_bytes()


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "4"], "an animation needs 2 to 16 keyframes, not 1"),
    (["--seeds", "0-16"], "not 17"),
    (["--frames", "0"], "frames per segment must be a whole number from 1 to 120"),
    (["--fps", "0"], "fps must be from 1 to 60"),
    (["--size", "40"], "size must be a multiple of the frames' side (32 px)"),
    (["--out", "walk.webm"], "must end in .gif or .mp4"),
    (["--class", "purple"], "unknown class 'purple'"),
    (["--model", "nope"], "unknown model 'nope'"),
])
def test_cli_interpolate_bad_input_is_one_line_and_exit_2(tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture, args: list[str],
                                                         message: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    base = {"--model": "tiny", "--seeds": "1,2", "--out": "walk.gif"}
    base.update(zip(args[::2], args[1::2]))
    assert main(["interpolate", *[x for pair in base.items() for x in pair]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not list(work.iterdir())
