#!/usr/bin/env bash
# The GPU check: one machine with one CUDA GPU, under 8 minutes end to end, one JSON file of figures.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else ./gpu-check
#
# Steps (each bounded by its own timeout, so one stuck step cannot eat the others' time):
#   env       nvidia-smi, torch/CUDA versions; installs ./.whl/*.whl (packages the machine lacks,
#             e.g. av, crc32c, filelock) into a private --target dir, and vadpipe itself (--no-deps)
#   weights   $VADPIPE_I3D_WEIGHTS, else ./.gpu/i3d_rgb_kinetics400.safetensors (copy it there from
#             ~/.cache/vadpipe/ on a machine that has it: the GPU machine may reach no index)
#   tests     pytest -m cuda (the port on CUDA with TF32 off, pinned-memory workers, ...)
#   precision bench/precision.py --device cuda: fp32 vs bf16 seconds per clip and feature cosines
#   extract   bench/extract.py --device cuda, fp32 and bf16 x workers 0, 4, all on a 1280x720 set,
#             against the network alone
#   live      bench/live.py --device cuda (25 fps streams sustained), when that bench exists
#   train     bench/train.py one epoch (the trainer runs on the CPU: this times that machine's CPU)
# Each step's output is kept as text and its figures (lines starting with '{') as JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-$PWD/gpu-check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/vadpipe-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/vadpipe-site${PYTHONPATH:+:$PYTHONPATH}
fi
"$py" -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/install.txt" 2>&1 \
  || { echo "vadpipe did not install (see $out/install.txt)"; exit 1; }
if [ -z "${VADPIPE_I3D_WEIGHTS:-}" ] && [ -f .gpu/i3d_rgb_kinetics400.safetensors ]; then
  export VADPIPE_I3D_WEIGHTS=$PWD/.gpu/i3d_rgb_kinetics400.safetensors
fi
if [ ! -e ../shared ] && [ -d .gpu/shared ]; then ln -sfn "$PWD/.gpu/shared" ../shared; fi

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.txt"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$out/steps.jsonl"
}

: >"$out/steps.jsonl"
step env 30 bash -c "nvidia-smi; $py -c 'import torch, vadpipe; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0))'"
step tests 120 "$py" -m pytest -q -m cuda -p no:cacheprovider tests
step precision 60 "$py" bench/precision.py --device cuda --batch-size 32 --repeats 5 --json "$out/precision.json"
step extract 180 "$py" bench/extract.py --device cuda --precision fp32,bf16 --decode-procs 0,4,all \
  --size 1280x720 --seconds 8 --copies 8 --batch-size 32
if [ -f bench/live.py ]; then step live 60 "$py" bench/live.py --device cuda; fi
step train 60 "$py" bench/train.py --videos 100 --repeats 1 --max-batches 20

"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
doc = {"steps": steps, "outputs": {}}
for s in steps:
    text = (out / f"{s['step']}.txt").read_text(errors="replace")
    doc["outputs"][s["step"]] = text.splitlines()[-40:]
if (out / "precision.json").exists():
    doc["precision"] = json.loads((out / "precision.json").read_text())
(out / "gpu_check.json").write_text(json.dumps(doc, indent=1))
print(f"wrote {out / 'gpu_check.json'}")
PY
