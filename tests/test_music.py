"""Music videos: the mapping from sound to path, pulse, motion and harmony; real renders of a tiny model with
synthetic audio (frames, sound track, beats, recipes), and the command line's refusals."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from studio import audio, music
from studio.__main__ import main
from studio.engine import Engine
from studio.recipe import Recipe
from studio.ui import music_logic
from tests.conftest import make_tiny_model
from tests.test_audio import click_track, write_wav

BEATS = [0.5, 1.0, 1.5, 2.0, 2.5]  # 120 BPM: 12 frames apart at 24 fps


def make_vivid_model(home: Path) -> None:
    """The tiny model with its convolutions scaled up, so its images have contrast (the tiny one's are nearly
    flat grey, which H.264 flattens further) and a video's changes can be measured."""
    folder = make_tiny_model(home, "vivid")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v * 4 if v.dim() == 4 else v for k, v in weights.items()}, str(folder / "model.safetensors"))


@pytest.fixture
def engine(home: Path) -> Engine:
    make_vivid_model(home)
    with Engine("cpu") as eng:
        yield eng


def keyframes(engine: Engine, seeds: tuple[int, ...] = (1, 5, 9)) -> list[Recipe]:
    sha = engine.model("vivid").weights_sha256
    return [Recipe("vivid", sha, seed) for seed in seeds]


def frames_of(path: Path) -> np.ndarray:
    """The decoded frames ``[T, H, W, 3]`` of a video."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])


def streams(path: Path) -> list[str]:
    """The kinds and codecs of a file's streams, as ffmpeg reports them (such as 'Audio: aac')."""
    info = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return re.findall(r"Stream #\d+:\d+\S*: (\w+: \w+)", info)


def analysis(fps: float = 24, frames: int = 240, onsets: tuple[int, ...] = (), energy: np.ndarray | None = None,
             chroma: np.ndarray | None = None, tempo: float | None = None) -> audio.Analysis:
    """An analysis written by hand, so the mapping's arithmetic can be checked exactly."""
    flux = np.zeros(frames)
    flux[list(onsets)] = 1.0
    return audio.Analysis(fps, flux, np.array(onsets, int), np.ones(frames) if energy is None else energy,
                          np.full((frames, 12), 1 / 12) if chroma is None else chroma, tempo)


def test_the_path_keeps_its_pace_and_motion_speeds_it_up_where_it_is_loud() -> None:
    steady = music.path_positions(analysis(), music.Mapping(pace=12, motion=0.0), 3)
    assert steady == pytest.approx(np.arange(240) / 24 / 5)  # a keyframe every 5 s
    energy = np.where(np.arange(240) < 120, 0.2, 1.0)
    moving = music.path_positions(analysis(energy=energy), music.Mapping(pace=12, motion=1.0), 3)
    quiet, loud = np.diff(moving)[:100].mean(), np.diff(moving)[130:].mean()
    assert loud == pytest.approx(5 * quiet)
    assert moving[-1] == pytest.approx(steady[-1], rel=0.05)  # the mean pace holds
    per_bar = music.path_positions(analysis(tempo=120), music.Mapping(pace=0.5, per="bar", motion=0), 3)
    assert per_bar[48] == pytest.approx(0.5)  # 48 frames = 2 s = one bar of 4 beats at 120 BPM
    song = music.path_positions(analysis(energy=energy), music.Mapping(per="song", motion=0.7), 4)
    assert song[0] == 0 and song[-1] == pytest.approx(3)  # the last frame sits on the last keyframe
    with pytest.raises(ValueError, match="no steady beat was found"):
        music.path_positions(analysis(), music.Mapping(pace=1, per="bar"), 3)


def test_a_pulse_jumps_at_each_onset_and_halves_every_half_life() -> None:
    envelope = music.pulse_envelope(analysis(onsets=(24, 120)), music.Mapping(pulse_decay=0.25))
    assert envelope[:24].max() == 0 and envelope[24] == 1 and envelope[120] == 1
    assert envelope[30] == pytest.approx(0.5) and envelope[36] == pytest.approx(0.25)  # 6 frames = 0.25 s


def test_harmony_blends_toward_the_class_of_the_loudest_pitch(engine: Engine) -> None:
    chroma = np.zeros((48, 12))
    chroma[:, 9] = 0.9  # A
    chroma[:, 4] = 0.1  # E
    weights = music.harmony_weights(analysis(frames=48, chroma=chroma), 3)
    assert weights[:, 0] == pytest.approx(np.full(48, 0.9**4 / (0.9**4 + 0.1**4)))  # A = 9 -> 9 mod 3 = class 0
    recipe = music.MusicRecipe(tuple(keyframes(engine)), "x.wav", "0" * 64, 0.0, 2.0,
                               mapping=music.Mapping(harmony=1.0, pulse=0.0))
    request = music.frames_request(engine, recipe, analysis(frames=48, chroma=chroma))
    assert request.c.shape == (48, 3) and request.c[:, 0].min() > 0.99


@pytest.fixture
def clicks(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "beat.wav", click_track(BEATS, 3.0))


def test_a_video_has_fps_x_duration_frames_its_sound_and_changes_most_on_the_beats(
        engine: Engine, clicks: Path, tmp_path: Path) -> None:
    recipe = music.recipe_for(keyframes(engine), clicks, fps=24, mapping=music.Mapping(harmony=0.0))
    out = tmp_path / "video" / "beat.mp4"
    seen = []
    done = music.render(engine, recipe, clicks, out, progress=lambda n, total: seen.append((n, total)))
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == done.frames == 72  # 3 s x 24 fps
    assert streams(out) == ["Video: h264", "Audio: aac"]
    assert seen[-1] == (72, 72) and len(seen) == 72
    frames = frames_of(out).astype(float)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # change[k]: frame k to k + 1
    beats = [round(b * 24) - 1 for b in BEATS]  # the change into each beat's frame
    between = np.delete(change, beats)
    assert change[beats].mean() > 3 * between.mean()
    assert change[beats].min() > 2 * np.median(between)  # every beat, not only the loudest
    assert sorted(p.name for p in out.parent.iterdir()) == ["beat.mp4"]  # no temporary file left


def test_a_recipe_renders_the_same_frames_again_and_only_from_its_own_audio(
        engine: Engine, clicks: Path, tmp_path: Path) -> None:
    mapping = music.Mapping(pace=30, pulse_direction=None, pulse_seed=7, motion=0.8, harmony=0.6, mode="lerp")
    recipe = music.recipe_for(keyframes(engine, (2, 4)), clicks, start=0.5, duration=2.0, fps=12, size=64,
                              mapping=mapping)
    first = tmp_path / "first.mp4"
    music.render(engine, recipe, clicks, first)
    read = music.read_music_recipe(first)
    assert read == recipe
    again = tmp_path / "again.mp4"
    music.render(engine, read, clicks, again)
    assert np.array_equal(frames_of(first), frames_of(again)) and frames_of(first).shape == (24, 64, 64, 3)
    other = write_wav(tmp_path / "other.wav", click_track(BEATS, 3.1))
    with pytest.raises(audio.AudioError, match="'other.wav' is not the audio this recipe was made from"):
        music.render(engine, read, other, tmp_path / "never.mp4")
    assert not (tmp_path / "never.mp4").exists()


def test_a_render_stopped_midway_leaves_nothing_behind(engine: Engine, clicks: Path, tmp_path: Path) -> None:
    recipe = music.recipe_for(keyframes(engine), clicks)
    folder = tmp_path / "out"
    folder.mkdir()

    def stop(done: int, total: int) -> None:
        if done == 20:
            raise KeyboardInterrupt  # what a cancelled render raises through the frames

    with pytest.raises(KeyboardInterrupt):
        music.render(engine, recipe, clicks, folder / "song.mp4", progress=stop)
    assert list(folder.iterdir()) == []


def test_the_waveform_picture_marks_each_onset(clicks: Path) -> None:
    sound = audio.decode(clicks)
    found = audio.analyse(sound, 24)
    picture = music_logic.waveform_picture(sound, found, width=300, height=80)
    assert picture.shape == (80, 300, 3) and picture.dtype == np.uint8
    marked = np.flatnonzero((picture == music_logic.ONSET_COLOUR).all(axis=2).any(axis=0))
    expected = [round(k / 24 / sound.seconds * 300) for k in found.onsets]
    assert len(found.onsets) == len(BEATS)
    assert all(np.abs(marked - x).min() <= 1 for x in expected)
    assert all(np.abs(np.array(expected) - x).min() <= 1 for x in marked)


def test_the_command_line_renders_re_renders_and_refuses_in_one_line(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_vivid_model(home)
    (tmp_path / "in").mkdir()
    sound = write_wav(tmp_path / "in" / "song.wav", click_track(BEATS, 3.0))
    out = tmp_path / "out"
    args = ["music", "--model", "vivid", "--audio", str(sound), "--seeds", "1,5,9", "--fps", "12", "--pulse", "2",
            "--motion", "0.3", "--start", "0.5", "--duration", "2"]
    assert main([*args, "--out", str(out / "a.mp4")]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "a.json").is_file()
    assert imageio_ffmpeg.count_frames_and_secs(str(out / "a.mp4"))[0] == 24
    assert main(["music", "--recipe", str(out / "a.json"), "--audio", str(sound), "--out", str(out / "b.mp4")]) == 0
    assert np.array_equal(frames_of(out / "a.mp4"), frames_of(out / "b.mp4"))
    capsys.readouterr()

    text = tmp_path / "in" / "notes.mp3"
    text.write_text("not a song")
    silent = write_wav(tmp_path / "in" / "silent.wav", np.zeros(44100))
    refusals = {
        (str(text), "x.mp4", ()): "'notes.mp3' is not an audio file ffmpeg can read",
        (str(silent), "x.mp4", ()): "'silent.wav' is silent",
        (str(sound), "x.mp4", ("--start", "5")): "must start within 'song.wav', between 0 and 3.0 s",
        (str(sound), "x.gif", ()): "a music video is an MP4",
        (str(sound), "x.mp4", ("--pulse", "9")): "the pulse must be a finite number from 0 to 5",
        (str(sound), "x.mp4", ("--fps", "90")): "fps must be a finite number from 1 to 60",
        (str(sound), "x.mp4", ("--per", "bar", "--duration", "0.8")): "no steady beat was found",
    }
    for (path, name, extra), said in refusals.items():
        bad = tmp_path / "bad"
        assert main(["music", "--model", "vivid", "--audio", path, "--seeds", "1,2", *extra,
                     "--out", str(bad / name)]) == 2, said
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
        assert not bad.exists() or list(bad.iterdir()) == [], said
