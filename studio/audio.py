"""Sound in: audio files decoded by ffmpeg, and what a music video reads from them, one value per video frame.

Any file ffmpeg reads (WAV, MP3, FLAC, OGG, M4A...) is decoded by the binary the imageio-ffmpeg wheel ships,
to mono float32 PCM at ``RATE``. The rest is numpy: a short-time Fourier transform whose frames sit on the
video's frames, then spectral flux (onsets, the percussive pulse), a smoothed energy envelope (loudness),
chroma (12 pitch classes, the harmony) and a tempo from the onsets' autocorrelation. No audio library:
these few transforms are a page of numpy, and the usual ones (librosa) pull in numba, scipy and
scikit-learn.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 22050  # analysis sample rate: 11 kHz of bandwidth holds every pitch and most of a drum's attack
N_FFT = 2048  # 93 ms windows: 10.8 Hz bins, fine enough for chroma from about 100 Hz up
CHROMA_RANGE_HZ = (100.0, 5000.0)  # below, bins are wider than a semitone; above, mostly overtones and noise
MAX_SECONDS = 600.0  # one music video; a longer file is rendered as a chosen excerpt
MIN_SECONDS = 0.5
SILENCE_PEAK = 10 ** (-60 / 20)  # quieter than -60 dBFS throughout: nothing for the picture to follow
ONSET_WINDOW = 256  # 12 ms windows...
ONSET_HOP = 64  # ...3 ms apart: onsets to within a few milliseconds (see onset_strength)
FLUX_COMPRESSION = 100.0  # log(1 + C|X|): quiet partials count, so soft attacks register too
ONSET_GAP_S = 0.1  # two onsets closer than this are one (a flam, or a drum's ringing)
ONSET_DELTA = 0.07  # an onset stands this far (of the strongest flux) above the flux around it...
ONSET_CONTEXT_S = 0.5  # ...averaged over this many seconds
ENERGY_SMOOTH_S = 0.25
TEMPO_RANGE_BPM = (60.0, 200.0)
TEMPO_PRIOR_BPM = 120.0  # autocorrelation also peaks at half and double the tempo: prefer the usual range
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FORMATS = "WAV, MP3, FLAC, OGG or M4A"


class AudioError(ValueError):
    """Audio that cannot make a music video; the message says why, in one sentence."""


@dataclass(frozen=True)
class Sound:
    """Decoded audio: mono float32 samples of an excerpt.

    Attributes:
        samples: ``[N]`` float32 in [-1, 1] at ``rate``.
        rate: Samples per second.
        start: Where the excerpt starts in the file, in seconds.
        file_seconds: The whole file's length in seconds.
    """

    samples: np.ndarray
    rate: int
    start: float
    file_seconds: float

    @property
    def seconds(self) -> float:
        """The excerpt's length in seconds."""
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class Analysis:
    """What a music video follows, one row per video frame (frame k is the sound around k / fps seconds).

    Attributes:
        fps: Video frames per second.
        flux: ``[T]`` onset strength (spectral flux), 1 at its strongest.
        onsets: Frame indices of the detected onsets, in order.
        energy: ``[T]`` loudness, smoothed over ``ENERGY_SMOOTH_S``, 1 at its loudest.
        chroma: ``[T, 12]`` share of each pitch class (C first), each row summing to 1.
        tempo: Beats per minute from the onsets' autocorrelation; None when the excerpt is too short or
            has no steady pulse.
    """

    fps: float
    flux: np.ndarray
    onsets: np.ndarray
    energy: np.ndarray
    chroma: np.ndarray
    tempo: float | None

    @property
    def frames(self) -> int:
        """How many video frames the excerpt makes."""
        return len(self.flux)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write mono float ``samples`` in [-1, 1] as a 16-bit WAV (made-up songs for benchmarks and tests)."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def frame_count(seconds: float, fps: float) -> int:
    """Video frames of ``seconds`` of sound at ``fps``: one per 1/fps s, at least one."""
    return max(1, round(seconds * fps))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks: which sound a recipe was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel (no system ffmpeg needed)."""
    import imageio_ffmpeg  # imported here: only audio work needs it

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_seconds(path: Path) -> float:
    """The length in seconds of the audio in ``path``.

    Raises:
        AudioError: No such file, a file ffmpeg cannot read, or one without a sound track.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"cannot read {path.name!r}: there is no such file")
    # Without an output ffmpeg only describes its input (and exits 1): format, streams and duration.
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                          text=True, errors="replace", timeout=60).stderr
    streams = re.findall(r"Stream #\d+:\d+\S*: (\w+):", info)
    if not streams:
        raise AudioError(f"{path.name!r} is not an audio file ffmpeg can read: give a {FORMATS} file")
    if "Audio" not in streams:
        raise AudioError(f"{path.name!r} holds no sound (only {streams[0].lower()}): give a {FORMATS} file")
    found = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", info)
    if found is None:  # a raw stream without a header that says its length: count the samples
        return len(_decode(path, 0.0, None, 8000)) / 8000
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def check_excerpt(file_seconds: float, start: float, duration: float | None, name: str) -> float:
    """The excerpt's length in seconds: ``duration``, or up to the file's end when None.

    Raises:
        AudioError: A start outside the file, a length under ``MIN_SECONDS``, or one over ``MAX_SECONDS``.
    """
    if not (np.isfinite(start) and 0 <= start < file_seconds):
        raise AudioError(f"the excerpt must start within {name!r}, between 0 and {file_seconds:.1f} s, "
                         f"not at {start:g} s")
    if duration is not None and not (np.isfinite(duration) and duration > 0):
        raise AudioError(f"the excerpt's duration must be a positive number of seconds, not {duration:g}")
    length = min(file_seconds - start, duration if duration is not None else np.inf)
    if length > MAX_SECONDS:
        raise AudioError(f"{name!r} runs {_clock(length)} from {start:g} s, over the {_clock(MAX_SECONDS)} one music "
                         f"video may last: choose an excerpt (start and duration) of at most {MAX_SECONDS:g} s")
    if length < MIN_SECONDS:
        raise AudioError(f"the excerpt of {name!r} lasts {length:.2f} s: a music video needs at least "
                         f"{MIN_SECONDS:g} s")
    return float(length)


def decode(path: Path, start: float = 0.0, duration: float | None = None) -> Sound:
    """Decode an excerpt of an audio file (the whole file when ``duration`` is None) to mono at ``RATE``.

    Raises:
        AudioError: See ``probe_seconds`` and ``check_excerpt``; an excerpt that is silent.
    """
    path = Path(path)
    file_seconds = probe_seconds(path)
    length = check_excerpt(file_seconds, start, duration, path.name)
    samples = _decode(path, start, length, RATE)
    if len(samples) < MIN_SECONDS * RATE / 2:
        raise AudioError(f"ffmpeg could decode only {len(samples) / RATE:.2f} s of {path.name!r}: the file may be "
                         "damaged")
    if not np.abs(samples).max() > SILENCE_PEAK:
        raise AudioError(f"{path.name!r} is silent from {start:g} s to {start + length:g} s: there is nothing for "
                         "the picture to follow")
    return Sound(samples, RATE, float(start), file_seconds)


def _decode(path: Path, start: float, seconds: float | None, rate: int) -> np.ndarray:
    """``seconds`` (None: all) of ``path`` from ``start``, as mono float32 at ``rate``."""
    span = ["-ss", f"{start:.6f}"] + (["-t", f"{seconds:.6f}"] if seconds is not None else [])
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *span, "-i", str(path),
                           "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
                          capture_output=True, timeout=600)
    if done.returncode:
        raise AudioError(f"ffmpeg cannot decode {path.name!r} ({ffmpeg_reason(done.stderr)}): give a {FORMATS} file")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def ffmpeg_reason(stderr: bytes) -> str:
    """The last line ffmpeg wrote on its error stream: why it stopped."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else "no reason given"


def _clock(seconds: float) -> str:
    """``seconds`` as m:ss, such as 10:00."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def analyse(sound: Sound, fps: float) -> Analysis:
    """Onsets, energy, chroma and tempo of ``sound``, one row per video frame at ``fps``.

    Frame k is the sound around ``k / fps`` seconds: energy and chroma from an ``N_FFT`` window centred
    there, onset strength from the short windows of ``onset_strength`` within half a frame of it.
    """
    rate, x = sound.rate, sound.samples
    count = frame_count(sound.seconds, fps)
    freqs = np.fft.rfftfreq(N_FFT, 1 / rate)
    in_range = (freqs >= CHROMA_RANGE_HZ[0]) & (freqs <= CHROMA_RANGE_HZ[1])
    pitch = (np.round(12 * np.log2(freqs[in_range] / 440.0)).astype(int) + 9) % 12  # A = 9 when C = 0
    fold = np.zeros((in_range.sum(), 12), np.float32)
    fold[np.arange(len(pitch)), pitch] = 1
    rms, chroma = np.zeros(count), np.zeros((count, 12))
    centres = np.round(np.arange(count) * rate / fps).astype(int)
    for part, frames, magnitude in _spectra(x, centres, N_FFT):
        rms[part] = np.sqrt((frames**2).mean(axis=1))
        chroma[part] = (magnitude[:, in_range] ** 2) @ fold
    totals = chroma.sum(axis=1, keepdims=True)
    chroma = np.where(totals > 0, chroma / np.where(totals > 0, totals, 1), 1 / 12)
    energy = _unit(smooth(rms, max(1, round(ENERGY_SMOOTH_S * fps))))
    flux = onset_strength(sound, fps, count)
    return Analysis(fps, flux, detect_onsets(flux, fps), energy, chroma, estimate_tempo(flux, fps))


def _spectra(x: np.ndarray, centres: np.ndarray, n_fft: int,
             chunk: int = 512) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Hann-windowed frames of ``x`` centred on ``centres`` and their magnitude spectra, ``chunk`` at a time
    (memory stays small for a long song): ``(rows, frames [n, n_fft], magnitudes [n, n_fft // 2 + 1])``."""
    padded = np.pad(x, (n_fft // 2, n_fft))  # silence around the sound
    window = np.hanning(n_fft).astype(np.float32)
    for first in range(0, len(centres), chunk):
        rows = slice(first, min(first + chunk, len(centres)))
        frames = padded[centres[rows, None] + np.arange(n_fft)] * window  # centred thanks to the padding
        yield rows, frames, np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32)


def onset_strength(sound: Sound, fps: float, count: int) -> np.ndarray:
    """Spectral flux ``[count]`` per video frame, 1 at its strongest: the largest rise of the log-compressed
    spectrum, between short windows ``ONSET_HOP`` apart, within half a frame of the frame's time.

    Short windows, because a log-compressed flux rises most as a sound enters a window, half a window
    early: at ``ONSET_WINDOW`` that error stays a few milliseconds, so an onset lands on its own frame.
    """
    # Up to the last whole window: a note cut off by the excerpt's end would spray energy over every bin
    # of a window that reached past it, an onset that is not in the music.
    centres = np.arange(0, max(1, len(sound.samples) - ONSET_WINDOW // 2), ONSET_HOP)
    fine = np.zeros(len(centres))
    previous = np.zeros(ONSET_WINDOW // 2 + 1, np.float32)
    for rows, _, magnitude in _spectra(sound.samples, centres, ONSET_WINDOW, chunk=4096):
        compressed = np.log1p(FLUX_COMPRESSION * magnitude)
        fine[rows] = np.diff(np.concatenate([previous[None], compressed]), axis=0).clip(min=0).sum(axis=1)
        previous = compressed[-1]
    frame = np.minimum(np.round(centres / sound.rate * fps).astype(int), count - 1)
    flux = np.zeros(count)
    np.maximum.at(flux, frame, fine)
    return _unit(flux)


def _unit(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their maximum (left as they are when that is 0)."""
    top = values.max(initial=0.0)
    return values / top if top > 0 else values


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """A centred moving average of ``values`` (along the first axis) over ``width`` rows; the ends average what
    they have."""
    if width <= 1:
        return values.astype(float)
    kernel = np.ones(width)
    cols = values.reshape(len(values), -1).astype(float)
    sums = np.stack([np.convolve(c, kernel, mode="same") for c in cols.T], axis=1)
    counts = np.convolve(np.ones(len(values)), kernel, mode="same")[:, None]
    return (sums / counts).reshape(values.shape)


def detect_onsets(flux: np.ndarray, fps: float) -> np.ndarray:
    """The frames where the onset strength peaks: the highest within ``ONSET_GAP_S``, and ``ONSET_DELTA``
    above its average over ``ONSET_CONTEXT_S``."""
    gap = max(1, int(ONSET_GAP_S * fps))
    context = smooth(flux, max(1, round(ONSET_CONTEXT_S * fps)))
    padded = np.pad(flux, gap, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * gap + 1)  # [T, 2 * gap + 1]
    left = windows[:, :gap].max(axis=1)  # strictly higher than before, so a plateau counts once
    peak = (flux > left) & (flux >= windows.max(axis=1)) & (flux > context + ONSET_DELTA)
    return np.flatnonzero(peak)


def estimate_tempo(flux: np.ndarray, fps: float) -> float | None:
    """Beats per minute: the lag at which the onset strength best repeats, between ``TEMPO_RANGE_BPM``.

    Each lag's autocorrelation is weighted by a log-normal preference for ``TEMPO_PRIOR_BPM`` (one octave
    wide), and the peak is refined by a parabola through its neighbours, since a lag is whole frames.
    """
    x = flux - flux.mean()
    lags = np.arange(max(1, int(60 * fps / TEMPO_RANGE_BPM[1])), int(np.ceil(60 * fps / TEMPO_RANGE_BPM[0])) + 2)
    if len(x) < 2 * lags[-1] or not x.any():
        return None
    ac = np.array([np.dot(x[:-lag], x[lag:]) / (len(x) - lag) for lag in lags])
    weighted = ac * np.exp(-0.5 * np.log2(60 * fps / lags / TEMPO_PRIOR_BPM) ** 2)
    best = int(np.argmax(weighted[1:-1])) + 1  # the ends are only there for the parabola
    if ac[best] <= 0:
        return None
    below, at, above = ac[best - 1 : best + 2]
    curve = below - 2 * at + above
    shift = 0.5 * (below - above) / curve if curve < 0 else 0.0
    return float(60 * fps / (lags[best] + shift))
