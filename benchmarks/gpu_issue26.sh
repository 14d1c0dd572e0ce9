#!/usr/bin/env bash
# Issue 26's full-size table on a lent GPU: every transfer method and the promising combinations from resnet20,
# resnet56 and densenet_bc40 against the Fashion-MNIST zoo, 1,000 images x 3 seeds, eps 0.1
# (examples/transfer_methods.yaml), then the choice on the selection half reported on fresh images
# (advkit analyze surrogates). On 2 CPU cores this is about two days; on one H100 the estimate is minutes
# (28-pixel models, batches of 250), so it fits one call of the device tool:
#
#   device run, carry [".data"]:  benchmarks/gpu_issue26.sh [OUT_DIR]        # OUT_DIR defaults to $OUT or runs/
#
# Needs Fashion-MNIST carried in .data/fashion-mnist (the four IDX .gz files; cp /usr/share/datasets/fashion-mnist/*
# .data/fashion-mnist/ here first) and a python whose torch sees the GPU ($PYTHON, else python3). advkit is installed
# with `pip install -e . --no-deps` (else used from src/ through PYTHONPATH). The study resumes: a second call with
# the same OUT_DIR finishes what a cut-off first call left. A time budget (GPU26_BUDGET_S, default 540 s) stops the
# study cleanly before the device tool's 600 s limit; what was finished stays in OUT_DIR/methods.

set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-${OUT:-$REPO/runs}}
PY=${PYTHON:-python3}
BUDGET=${GPU26_BUDGET_S:-540}
mkdir -p "$OUT_DIR"
export ADVKIT_DATA=$REPO/.data PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$REPO" || exit 2

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 3
timeout 120 "$PY" -m pip install -q --no-deps -e . 2>/dev/null || export PYTHONPATH=$REPO/src
for pkg in safetensors typer rich pyyaml scipy scikit-learn matplotlib; do
    mod=${pkg/pyyaml/yaml}; mod=${mod/scikit-learn/sklearn}
    "$PY" -c "import $mod" 2>/dev/null || timeout 60 "$PY" -m pip install -q --timeout 20 --retries 0 "$pkg"
done
ADVKIT=("$PY" -m advkit.cli)
[ -f "$ADVKIT_DATA/fashion-mnist/train-images-idx3-ubyte.gz" ] || { echo "carry .data/fashion-mnist"; exit 4; }

start=$(date +%s)
timeout --signal=INT "$BUDGET" "${ADVKIT[@]}" transfer examples/transfer_methods.yaml --out "$OUT_DIR/methods"
status=$?
echo "transfer: exit $status after $(( $(date +%s) - start )) s"
if [ "$status" = 0 ]; then
    "${ADVKIT[@]}" analyze surrogates "$OUT_DIR/methods" --out "$OUT_DIR/methods-choice" --force
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
exit "$status"
