"""Audio analysis on synthetic sound made here: clicks, pure tones, loudness steps, every format ffmpeg writes."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from studio import audio

RATE = 44100
CLICKS = [0.37, 0.91, 1.52, 2.2, 2.61, 3.33, 4.05, 4.48]  # uneven, so no grid can line up by luck


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit WAV at the tests' rate."""
    return audio.write_wav(path, samples, rate)


def click_track(times: list[float], seconds: float, rate: int = RATE) -> np.ndarray:
    """Short decaying noise bursts (5 ms) at ``times`` over a quiet hum that fades in, ``seconds`` long."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.01 * np.sin(2 * np.pi * 110 * t) * np.minimum(1, t / 0.3)
    burst = int(0.005 * rate)
    for when in times:
        i = int(when * rate)
        x[i : i + burst] += rng.uniform(-0.9, 0.9, burst) * np.exp(-np.arange(burst) / (burst / 4))
    return x


def tone(hz: float, seconds: float, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def converted(wav: Path, suffix: str) -> Path:
    """``wav`` re-encoded by the ffmpeg binary the studio decodes with."""
    out = wav.with_suffix(suffix)
    subprocess.run([audio.ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), str(out)], check=True)
    return out


@pytest.mark.parametrize("fps", [24, 30])
def test_a_click_track_gives_onsets_at_the_clicks_within_one_frame(tmp_path: Path, fps: int) -> None:
    path = write_wav(tmp_path / "clicks.wav", click_track(CLICKS, 5.0))
    found = audio.analyse(audio.decode(path), fps)
    assert found.frames == 5 * fps
    assert len(found.onsets) == len(CLICKS)
    assert np.abs(found.onsets / fps - np.array(CLICKS)).max() <= 1 / fps


@pytest.mark.parametrize(("hz", "name"), [(440.0, "A"), (261.63, "C"), (392.0, "G")])
def test_a_pure_tone_makes_its_pitch_class_the_strongest_chroma_bin(tmp_path: Path, hz: float, name: str) -> None:
    found = audio.analyse(audio.decode(write_wav(tmp_path / "tone.wav", tone(hz, 2.0))), 24)
    mean = found.chroma.mean(axis=0)
    assert audio.PITCH_CLASSES[int(mean.argmax())] == name
    assert mean.max() > 0.9
    assert np.allclose(found.chroma.sum(axis=1), 1)
    assert list(found.onsets) == [0]  # the tone starts; a steady tone makes no other onset, nor its cut-off end


def test_the_tempo_of_a_steady_beat_is_found(tmp_path: Path) -> None:
    beat = 60 / 128
    path = write_wav(tmp_path / "beat.wav", click_track(list(np.arange(0.2, 9.8, beat)), 10.0))
    tempo = audio.analyse(audio.decode(path), 24).tempo  # a beat is 11.25 frames: the peak is refined
    assert tempo == pytest.approx(128, rel=0.03)


def test_energy_follows_the_loudness(tmp_path: Path) -> None:
    quiet_then_loud = np.concatenate([tone(330, 2.0, 0.05), tone(330, 2.0, 0.8)])
    energy = audio.analyse(audio.decode(write_wav(tmp_path / "steps.wav", quiet_then_loud)), 25).energy
    assert energy.max() == pytest.approx(1)
    assert energy[60:].min() > 10 * energy[10:40].max()  # 16x the amplitude, away from the step's smoothing


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".flac", ".m4a"])
def test_compressed_files_give_the_same_onsets_as_the_wav(tmp_path: Path, suffix: str) -> None:
    wav = write_wav(tmp_path / "clicks.wav", click_track(CLICKS, 5.0))
    sound = audio.decode(converted(wav, suffix))
    assert sound.seconds == pytest.approx(5.0, abs=0.1)
    onsets = audio.analyse(sound, 24).onsets
    assert len(onsets) == len(CLICKS)
    assert np.abs(onsets / 24 - np.array(CLICKS)).max() <= 2 / 24  # an encoder's delay may add a frame


def test_an_excerpt_is_that_part_of_the_file(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "clicks.wav", click_track(CLICKS, 5.0))
    sound = audio.decode(path, start=2.0, duration=2.0)
    assert sound.seconds == pytest.approx(2.0, abs=1e-3) and sound.file_seconds == pytest.approx(5.0)
    inside = np.array([t - 2.0 for t in CLICKS if 2.0 < t < 4.0])
    onsets = audio.analyse(sound, 24).onsets
    assert len(onsets) == len(inside) and np.abs(onsets / 24 - inside).max() <= 1 / 24


def bad_files(folder: Path) -> dict[str, tuple[Path, dict, str]]:
    """Files (and excerpts) no music video can come from, with the words the refusal must hold."""
    text = folder / "song.mp3"
    text.write_text("these are the lyrics, not the song\n" * 50)
    picture = folder / "cover.wav"
    subprocess.run([audio.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:size=32x32",
                    "-frames:v", "1", "-f", "image2", "-c:v", "png", str(picture)], check=True)
    silent = write_wav(folder / "silent.wav", np.zeros(RATE))
    # 11 minutes at 8 kHz, 8-bit: the length alone is refused, before anything is decoded
    hour = folder / "long.wav"
    with wave.open(str(hour), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(1)
        f.setframerate(8000)
        f.writeframes(bytes([128]) * 8000 * 660)
    clicks = write_wav(folder / "clicks.wav", click_track(CLICKS, 5.0))
    return {
        "text": (text, {}, "'song.mp3' is not an audio file ffmpeg can read: give a WAV, MP3, FLAC, OGG or M4A file"),
        "picture": (picture, {}, "'cover.wav' holds no sound (only video)"),
        "silent": (silent, {}, "'silent.wav' is silent from 0 s to 1 s"),
        "long": (hour, {}, "'long.wav' runs 11:00 from 0 s, over the 10:00 one music video may last: choose an "
                           "excerpt (start and duration) of at most 600 s"),
        "long excerpt": (hour, {"start": 30.0, "duration": 601.0}, "runs 10:01 from 30 s"),
        "start after the end": (clicks, {"start": 7.0}, "must start within 'clicks.wav', between 0 and 5.0 s"),
        "too short": (clicks, {"start": 4.8}, "lasts 0.20 s: a music video needs at least 0.5 s"),
        "missing": (folder / "nowhere.wav", {}, "cannot read 'nowhere.wav': there is no such file"),
    }


@pytest.mark.parametrize("case", ["text", "picture", "silent", "long", "long excerpt", "start after the end",
                                  "too short", "missing"])
def test_audio_no_video_can_come_from_is_refused_in_one_sentence(tmp_path: Path, case: str) -> None:
    path, excerpt, said = bad_files(tmp_path)[case]
    with pytest.raises(audio.AudioError) as refused:
        audio.decode(path, **excerpt)
    assert said in str(refused.value) and "\n" not in str(refused.value)
