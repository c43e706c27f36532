"""Fine-tuning an imported StyleGAN2: its own discriminator, FreezeD, the EMA generator and its w_avg,
exact resume, and a published model that the engine and the command line draw with.

The model is imported from an NVIDIA-style snapshot that ``test_stylegan2_import`` writes with its own
code: a 16 px pair with random weights, w_avg and noise included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from studio import data, train, zoo
from studio.engine import Engine
from studio.latent import seed_latents
from studio.media import to_uint8
from studio.models.folder import DISCRIMINATOR_FILE, from_pretrained, load_config
from studio.sampling import Request
from tests.conftest import ROOT, run_cli
from tests.test_stylegan2_import import write_snapshot
from tests.test_train import synthetic_set, weights

RESOLUTION = 16


@pytest.fixture
def imported(home: Path, tmp_path: Path) -> str:
    """An unconditional 16 px StyleGAN2 imported from a snapshot, its discriminator kept in its folder."""
    write_snapshot(tmp_path / "network-snapshot.pkl")
    zoo.import_file(tmp_path / "network-snapshot.pkl", "sg")
    return "sg"


def sg_config(out: str, **kwargs) -> train.TrainConfig:
    defaults = {"data": "synthetic", "out": out, "base": "sg", "steps": 6, "batch": 4, "checkpoint_every": 100,
                "augment": "on"}
    return train.TrainConfig(**{**defaults, **kwargs})


def artworks() -> torch.Tensor:
    return synthetic_set(16, RESOLUTION)


def test_the_imported_discriminator_trains_with_freezing_and_the_engine_draws_the_result(imported: str) -> None:
    base_d = load_file(str(zoo.model_folder(imported) / DISCRIMINATOR_FILE))
    result = train.finetune(sg_config("sg-ft", freeze_d=1, freeze_g=1), artworks())
    lineage = load_config(result.model_dir).lineage
    assert lineage["discriminator"] == f"pretrained, from {imported}" and lineage["augment"] is True
    d = load_file(str(result.model_dir / DISCRIMINATOR_FILE))
    assert d.keys() == base_d.keys()
    for name in d:  # FreezeD: the image-side block (b16) keeps the imported weights, the rest learn
        assert torch.equal(d[name], base_d[name]) == name.startswith("b16.") or "resample_filter" in name, name
    before, after = weights(zoo.model_folder(imported)), weights(result.model_dir)
    assert torch.equal(before["synthesis.b4.const"], after["synthesis.b4.const"])  # G's first block frozen
    assert not torch.equal(before["synthesis.b8.conv0.weight"], after["synthesis.b8.conv0.weight"])

    _, generator = from_pretrained(result.model_dir)
    with torch.no_grad():
        expected = to_uint8(generator(seed_latents(range(4), generator.config.z_dim)))
    with Engine("cpu") as engine:
        drawn = engine.generate(Request("sg-ft", (0, 1, 2, 3)))
        base = engine.generate(Request(imported, (0, 1, 2, 3)))
    assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 1  # channels_last may move a level
    assert not np.array_equal(drawn, base)


def test_w_avg_follows_the_trained_mapping_and_the_ema_generator_carries_it(imported: str) -> None:
    base_w_avg = weights(zoo.model_folder(imported))["mapping.w_avg"]
    result = train.finetune(sg_config("sg-w", steps=8, checkpoint_every=8), artworks())
    _, generator = from_pretrained(result.model_dir)
    with torch.no_grad():
        mean_w = generator.mapping.w(seed_latents(range(2000), generator.config.z_dim), None).mean(0)
    published = generator.mapping.w_avg
    # The imported w_avg is far from this mapping's mean (the fixture draws it at random); training moves it
    # toward the mean, at NVIDIA's rate per mapping pass (two a step here: the D step's fakes and the G step's).
    assert (published - mean_w).norm() < (base_w_avg - mean_w).norm()
    expected = mean_w.lerp(base_w_avg, 0.995**16)
    assert (published - base_w_avg).norm() > 0.5 * (expected - base_w_avg).norm()
    checkpoint = load_file(str(result.run_dir / "checkpoints" / "step-0000008.safetensors"))
    assert torch.equal(checkpoint["G.mapping.w_avg"], checkpoint["G_ema.mapping.w_avg"])
    assert torch.equal(checkpoint["G_ema.mapping.w_avg"], published)


def test_resume_continues_exactly_like_an_uninterrupted_run(imported: str) -> None:
    settings = {"steps": 10, "freeze_d": 1}  # R1 at steps 0, 4 and 8; the stop falls between two of them
    whole = train.finetune(sg_config("whole", **settings), artworks())
    polls = iter(range(100))
    stopped = train.finetune(sg_config("split", **settings), artworks(), should_stop=lambda: next(polls) >= 6)
    assert stopped.status == "stopped" and stopped.step == 6
    resumed = train.finetune(sg_config("split", **settings), artworks(), resume=True)
    for name in ("model.safetensors", DISCRIMINATOR_FILE):  # w_avg and the noise buffers included
        a, b = load_file(str(whole.model_dir / name)), load_file(str(resumed.model_dir / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert not torch.equal(weights(whole.model_dir)["mapping.w_avg"],
                           weights(zoo.model_folder(imported))["mapping.w_avg"])


def test_without_an_imported_discriminator_a_fresh_one_is_trained_and_said_so(imported: str) -> None:
    (zoo.model_folder(imported) / DISCRIMINATOR_FILE).unlink()
    with pytest.raises(ValueError, match="needs a pretrained discriminator"):
        train.finetune(sg_config("x", freeze_d=1), artworks())
    result = train.finetune(sg_config("fresh", steps=2), artworks())
    assert load_config(result.model_dir).lineage["discriminator"] == "fresh"
    assert (result.model_dir / DISCRIMINATOR_FILE).is_file()  # of the model's own shape: a later fine-tune loads it
    again = train.finetune(sg_config("again", base="fresh", steps=2, freeze_d=1), artworks())
    assert load_config(again.model_dir).lineage["discriminator"] == "pretrained, from fresh"


def test_a_narrow_discriminator_is_trained_but_not_kept(imported: str) -> None:
    run = train.Run(sg_config("narrow", d_width=4), artworks())
    image_side = run.d.freezable_blocks()[0]
    assert sum(p.numel() for p in run.d.parameters()) < sum(p.numel() for p in train.Run(sg_config("full"),
                                                                                          artworks()).d.parameters())
    assert image_side.fromrgb.weight.shape[0] == 4
    result = train.finetune(sg_config("narrow", d_width=4, steps=2), artworks())
    assert load_config(result.model_dir).lineage["discriminator"] == "fresh, 4 channels wide"
    assert not (result.model_dir / DISCRIMINATOR_FILE).exists()
    later = train.finetune(sg_config("later", base="narrow", steps=1), artworks())  # opens: nothing misfit kept
    assert load_config(later.model_dir).lineage["discriminator"] == "fresh"


def test_batches_and_resolutions_that_do_not_fit_are_refused_in_a_sentence(imported: str) -> None:
    with pytest.raises(ValueError, match="compares images in groups of 4: use a batch .* multiple of 4, not 6"):
        train.finetune(sg_config("x", batch=6), artworks())
    with pytest.raises(ValueError, match="the data set 'synthetic' is 32px but the model 'sg' draws 16px: ingest "
                                         "it at 16"):
        train.finetune(sg_config("x"), synthetic_set(16, 32))
    assert not (zoo.models_dir() / "x").exists()


def test_timing_real_steps_leaves_the_callers_random_state_and_the_home_alone(imported: str, home: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    timing = train.time_steps(sg_config("timed"))
    assert torch.equal(torch.rand(3), expected)
    assert timing.seconds > 0 and timing.measured_batch == 4 and timing.device == "cpu"
    assert not (home / "runs").exists() and "timed" not in zoo.model_names()
    # A model too slow to time at its batch is timed on one small step, and its batch still has to fit.
    monkeypatch.setattr(train, "TIME_AT_BATCH_BELOW_S", 0.0)
    scaled = train.time_steps(sg_config("timed", batch=8))
    assert scaled.measured_batch == train.PROBE_BATCH and scaled.seconds > 0
    with pytest.raises(ValueError, match="multiple of 4, not 6"):
        train.time_steps(sg_config("timed", batch=6))


@pytest.mark.slow
def test_the_command_line_imports_fine_tunes_and_draws_a_stylegan2(home: Path, tmp_path: Path) -> None:
    write_snapshot(tmp_path / "network-snapshot.pkl")
    assert run_cli("import", str(tmp_path / "network-snapshot.pkl"), "--name", "sg", home=home).returncode == 0
    for i, image in enumerate(to_uint8(artworks()[:8])):
        Image.fromarray(image).save(tmp_path / f"art{i}.png")
    ingested = run_cli("ingest", *(str(p) for p in sorted(tmp_path.glob("art*.png"))), "--name", "prints",
                       "--resolution", str(RESOLUTION), home=home)
    assert ingested.returncode == 0, ingested.stderr
    tuned = run_cli("finetune", "--data", "prints", "--from", "sg", "--out", "sg-prints", "--steps", "3", "--batch",
                    "4", "--freeze-d", "1", home=home)
    assert tuned.returncode == 0, tuned.stderr
    assert "wrote model sg-prints" in tuned.stdout
    lineage = json.loads((home / "models" / "sg-prints" / "config.json").read_text())["lineage"]
    assert lineage["discriminator"] == "pretrained, from sg" and lineage["steps"] == 3
    drawn = run_cli("generate", "--model", "sg-prints", "--seeds", "0-3", "--out-dir", str(tmp_path / "out"),
                    home=home)
    assert drawn.returncode == 0, drawn.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    odd = run_cli("finetune", "--data", "prints", "--from", "sg", "--out", "odd", "--steps", "2", "--batch", "6",
                  home=home)
    assert odd.returncode == 2 and "multiple of 4, not 6" in odd.stderr


@pytest.mark.slow
def test_torchrun_trains_an_imported_stylegan2_data_parallel(imported: str, home: Path, tmp_path: Path) -> None:
    files = []
    for i, image in enumerate(to_uint8(artworks()[:8])):
        files.append(tmp_path / f"art{i}.png")
        Image.fromarray(image).save(files[-1])
    data.ingest(files, "prints", resolution=RESOLUTION)
    env = {**os.environ, "STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "studio",
         "finetune", "--data", "prints", "--from", imported, "--out", "ddp", "--steps", "5", "--batch", "8",
         "--freeze-d", "1"],  # R1 at steps 0 and 4: the double backward runs through the replicas too
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lineage = load_config(home / "models" / "ddp").lineage
    assert lineage["processes"] == 2 and lineage["discriminator"] == f"pretrained, from {imported}"
    assert not torch.equal(weights(home / "models" / "ddp")["mapping.w_avg"],
                           weights(zoo.model_folder(imported))["mapping.w_avg"])


@pytest.mark.slow
def test_the_fine_tune_bench_times_an_imported_stylegan2(imported: str, home: Path) -> None:
    result = run_cli("bench", "finetune", "--model", imported, "--steps", "1", home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "(stylegan2) at 16px" in lines[0]
    assert f"discriminator pretrained, from {imported}:" in lines[1] and "fresh, 32 channels wide:" in lines[2]
    assert all(float(re.search(r"([\d.]+) s/step", line)[1]) > 0 for line in lines[1:3])
