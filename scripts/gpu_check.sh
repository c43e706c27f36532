#!/usr/bin/env bash
# The prepared device check: on a machine with CUDA, the device tests, bench forward and bench engine for
# both families (DCGAN and StyleGAN2) in exact and fast precision, a short fine-tune in each precision, then
# one table; about five minutes. Without CUDA it runs the same on the CPU (smaller StyleGAN2, the tiny model
# for the fine-tune) and says so, so the script itself is checked on every machine.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (logs and JSON land in OUT_DIR, default a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
export STUDIO_HOME="$out/home"
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  device=cuda; sg2=256; batches=1,16; tune=omniart-eyes
  python -c "import torch; print('CUDA:', torch.cuda.get_device_name(0))"
else
  device=cpu; sg2=32; batches=1,4; tune=tiny
  echo "no CUDA on this machine: CPU figures ($(python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
fi
SG2=$sg2 python - <<'PY'
# A StyleGAN2 model folder of config-f's widths for bench engine, and the tiny DCGAN for a quick fine-tune.
import os
from pathlib import Path
from studio.bench import random_stylegan2
from studio.models.folder import save_pretrained
from tests.conftest import make_tiny_model
home = Path(os.environ["STUDIO_HOME"])
make_tiny_model(home)
model = random_stylegan2(int(os.environ.get("SG2", "64")), "cpu")
save_pretrained(home / "models" / "sg2", model.config, model.generator)
PY
# The device tests and the precision policy's; plain tests, on the device when there is one.
STUDIO_DEVICE=$device python -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_precision.py \
  tests/test_stylegan2_fused.py 2>&1 | tail -3 | tee "$out/tests.txt"
for precision in exact fast; do
  python -m studio bench forward --device "$device" --stylegan2 "$sg2" --batches "$batches" --repeats 2 \
    --precision "$precision" | tee "$out/forward-$precision.txt"
done
for model in omniart-eyes sg2; do
  python -m studio bench engine --device "$device" --model "$model" --clients 1,16 --seconds 5 \
    --json "$out/engine-$model.json" > "$out/engine-$model.txt"
done
STUDIO_DEVICE=$device python -m studio bench finetune --model "$tune" --steps 2 | tee "$out/finetune.txt"
python - "$out" <<'PY'
# One table: the engine's ceilings in both precisions and 16 clients' share of the ceiling, per family.
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"\n| model | precision (why) | fp32 ceiling img/s | chosen ceiling img/s | 16 clients img/s | of ceiling |")
print("|---|---|---|---|---|---|")
for name in ("omniart-eyes", "sg2"):
    r = json.loads((out / f"engine-{name}.json").read_text())
    c16 = r["clients"]["16"]["engine_img_s"]
    print(f"| {name} | {r['precision']} ({r['precision_reason']}) | {r['ceiling_fp32_img_s']:.1f} "
          f"| {r['ceiling_img_s']:.1f} | {c16:.1f} | {c16 / r['ceiling_img_s']:.2f} |")
print(f"\ntests: {(out / 'tests.txt').read_text().strip().splitlines()[-1]}; logs and JSON in {out}")
PY
