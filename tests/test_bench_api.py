"""``bench api``'s driver against a launched studio: consistent figures, and a check that can fail."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import loadtest, media, zoo
from studio.engine import Engine, generate_unbatched
from studio.loadtest import Plan, Tally

pytestmark = pytest.mark.slow

CLIENTS, PROCESSES, SECONDS = 4, 2, 3.0


@pytest.fixture(scope="module")
def measured(converted_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, Tally, object]]:
    """One short run (2 processes x 2 clients) against a launched studio, verified: its figures, tally, template."""
    log = tmp_path_factory.mktemp("bench-api") / "studio.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(converted_home))  # the CLI's images come from the studio's own model folder
        with Engine() as engine:
            template = loadtest.template_for(zoo.DEFAULT_MODEL, engine.cache.get(zoo.DEFAULT_MODEL).weights_sha256)
        with loadtest.launched_studio(converted_home, log) as (url, pid):
            loadtest.drive(Plan(url, template, 0, 1.0), 1, 1, pid)  # the model loads outside the measured run
            run, tally = loadtest.drive(Plan(url, template, loadtest.RUN_SEEDS, SECONDS), CLIENTS, PROCESSES, pid)
        loadtest.verify(run, tally, template)
        yield run, tally, template


def test_a_run_reports_consistent_figures(measured: tuple[dict, Tally, object]) -> None:
    run, _, _ = measured
    assert run["clients"] == CLIENTS and run["processes"] == PROCESSES
    assert run["errors"] == 0 and run["busy"] == 0, run["error_messages"]
    assert run["images"] > 0 and run["img_s"] > 0
    assert run["checked"] == run["images"] + CLIENTS  # every timed image and each client's untimed first one
    assert run["mismatches"] == 0 and run["mismatched_seeds"] == []
    assert 0 < run["p50_ms"] <= run["p95_ms"]
    assert run["server_cpu_ms_per_img"] > 0 and run["client_cpu_ms_per_img"] > 0
    # The engine counted the run's requests: each timed call is one request, less any that finished
    # in the moment between the start and the first reading of the counters.
    assert run["images"] - CLIENTS <= run["engine"]["requests"] <= run["images"]
    assert run["engine"]["images"] == run["engine"]["requests"] and run["engine"]["mean_batch"] >= 1


def test_every_call_drew_its_own_seed(measured: tuple[dict, Tally, object]) -> None:
    _, tally, _ = measured
    seeds = [seed for seed, _ in tally.drawn]
    assert len(seeds) == len(set(seeds))  # clients walk disjoint seeds: no image is served from a repeat
    assert {seed % CLIENTS for seed in seeds} == set(range(CLIENTS))  # all four clients drew


def test_a_wrong_expected_image_counts_as_a_mismatch(measured: tuple[dict, Tally, object]) -> None:
    _, tally, template = measured
    seeds = sorted(seed for seed, _ in tally.drawn)
    expected = dict(zip(seeds, loadtest.cli_images(template, seeds)))
    assert loadtest.mismatched(tally.drawn, expected) == []
    wrong = seeds[1]
    expected[wrong] = expected[wrong].copy()
    expected[wrong][5, 7, 0] ^= 1  # one level of one channel of one pixel
    assert loadtest.mismatched(tally.drawn, expected) == [wrong]


def test_pixel_digests_tell_images_apart() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    assert loadtest.pixel_digest(image) == loadtest.pixel_digest(image.copy())
    assert loadtest.pixel_digest(image) != loadtest.pixel_digest(np.zeros((2, 8, 3), np.uint8))  # same bytes


def test_drawn_pngs_stay_lossless_and_small(eyes: zoo.LoadedModel) -> None:
    images = generate_unbatched(eyes, range(8), zoo.OMNIART_CLASSES[0], 0.8)
    for image in images:
        fast = media.png_bytes(image, **media.DRAWN_PNG)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast))), image)
        assert len(fast) <= 1.05 * len(media.png_bytes(image))  # the speed costs no size on drawn images
