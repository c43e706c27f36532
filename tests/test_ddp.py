"""Data-parallel fine-tuning: two CPU processes under torchrun, as the CLI runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import data

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes_train_one_model(tiny_home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(10):
        files.append(tmp_path / f"art{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(files[-1])
    data.ingest(files, "prints", resolution=32)
    env = {**os.environ, "STUDIO_HOME": str(tiny_home), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "studio",
         "finetune", "--data", "prints", "--from", "tiny", "--out", "ddp", "--steps", "6", "--batch", "8",
         "--checkpoint-every", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote model ddp") == 1  # only rank 0 reports and writes
    lineage = json.loads((tiny_home / "models" / "ddp" / "config.json").read_text())["lineage"]
    assert lineage["processes"] == 2 and lineage["steps"] == 6
    (run,) = (tiny_home / "runs").iterdir()  # one run folder: only rank 0 writes
    assert run.name.startswith("ddp-")
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-0000003.safetensors", "step-0000006.safetensors"]  # no leftovers, no doubles
