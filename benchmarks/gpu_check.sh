#!/usr/bin/env bash
# GPU check: throughput of advkit's I-FGSM, MI and SGM+MI against ART's BIM and the bare forward+backward passes,
# ResNet-50 (random weights) at 224 px, fp32 and bf16, and the largest batch that fits (benchmarks/gpu_bench.py
# says exactly what is measured). Meant for a lent H200 with no network; finishes in under 8 minutes.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [extra gpu_bench.py options]     # OUT_DIR defaults to benchmarks/results
#
# The full output also goes to OUT_DIR/gpu_check_<date>.txt (and the results to gpu_check_<date>.json).
# Set-up, each step bounded by `timeout`, pip with `--timeout 20 --retries 0` so that no step hangs on the network:
#   * python: $PYTHON, else python3 (on the lent H200, the image's python3 that holds torch with CUDA);
#   * wheels carried in $GPU_CHECK_WHEELS (default <repo>/.whl), if any, installed first with --no-index;
#   * torch: the installed one when it sees a GPU (not reinstalled unless GPU_CHECK_REINSTALL_TORCH=1), else
#     `pip install torch` (PyPI's Linux x86-64 wheels are CUDA builds);
#   * ART (adversarial-robustness-toolbox): the installed one, else pip; if neither works the ART rows are skipped;
#   * advkit: `pip install -e . --no-deps` (then without build isolation, then PYTHONPATH=src), its light deps by
#     pip only where missing.
# What was used is printed. GPU_CHECK_NO_INSTALL=1 skips every pip call (uses what is there; with --cpu-smoke this
# checks the script on a machine without a GPU). GPU_CHECK_BUDGET_S (default 470) is the whole script's time budget in seconds.
# Then, when Fashion-MNIST was carried in .data/fashion-mnist (GPU_CHECK_TRAIN_DATA), a training stage trains the
# depth question's ResNet-110 on the GPU in the last GPU_CHECK_TRAIN_S (default 170) seconds (GPU_CHECK_TRAIN=0: off).

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-$REPO/benchmarks/results}
[ $# -gt 0 ] && shift
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
STAMP=$(date +%Y%m%d-%H%M%S)
LOG=$OUT_DIR/gpu_check_$STAMP.txt
JSON=$OUT_DIR/gpu_check_$STAMP.json
BUDGET=${GPU_CHECK_BUDGET_S:-470}
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONUNBUFFERED=1
PIP_NET=(--timeout 20 --retries 0 --progress-bar off)
OFFLINE=0
NO_INSTALL=${GPU_CHECK_NO_INSTALL:-0}
TRAIN_DATA=${GPU_CHECK_TRAIN_DATA:-$REPO/.data/fashion-mnist}

say() { printf '[gpu_check %4ds] %s\n' "$SECONDS" "$*"; }

left() { echo $((BUDGET - SECONDS)); }

# pip_try SECONDS ARGS...: run `python -m pip install ARGS` under a time limit; print its last lines on failure;
# a network failure sets OFFLINE=1 so that later steps do not wait on the network again.
pip_try() {
    local limit=$1; shift
    local out rc
    out=$(timeout --kill-after=5 "$limit" "$PY" -m pip install "$@" 2>&1); rc=$?
    if [ $rc -ne 0 ]; then
        { printf '%s\n' "$out" | grep -E '^ *(ERROR|error|WARNING: Retrying)' | head -n 3 | grep . \
            || printf '%s\n' "$out" | tail -n 3; } | cut -c1-200 | sed 's/^/    pip: /'
        [ $rc -eq 124 ] && say "pip install stopped after ${limit} s"
        if [ $rc -eq 124 ] || printf '%s' "$out" | grep -qiE 'connection|resolution|network|timed out|No matching distribution|Could not find a version'; then
            OFFLINE=1
        fi
    fi
    return $rc
}

pyq() { timeout --kill-after=5 120 "$PY" -c "$@" 2>/dev/null; }

main() {
    say "repo $REPO; output $LOG; budget ${BUDGET} s"
    say "host $(uname -n) $(uname -m); $(date -u +%FT%TZ)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/    gpu: /'
    else
        say "nvidia-smi not found"
    fi
    if ! command -v "$PY" >/dev/null 2>&1; then say "no python ($PY)"; return 1; fi
    say "python: $(command -v "$PY") ($("$PY" -V 2>&1))"

    # carried wheels (no network needed)
    if [ "$NO_INSTALL" != 1 ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
        say "installing carried wheels from $WHEELS: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"
        pip_try 120 --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl && say "carried wheels installed" \
            || say "carried wheels: install failed (continuing)"
    fi

    # torch with CUDA
    local torch_line smoke=0
    case " $* " in *" --cpu-smoke "*) smoke=1 ;; esac
    torch_line=$(pyq 'import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()))')
    if [ -n "$torch_line" ] && [ "${torch_line##* }" = 1 ] && [ "${GPU_CHECK_REINSTALL_TORCH:-0}" != 1 ]; then
        say "torch: using the installed torch ${torch_line% *} (CUDA build, GPU visible); not reinstalled"
    elif [ $smoke = 1 ] && [ -n "$torch_line" ]; then
        say "torch: --cpu-smoke: using the installed torch ${torch_line% *} as it is"
    else
        local spec=(torch)
        [ -n "$torch_line" ] && spec=(--force-reinstall torch)   # importable but sees no GPU (a CPU build?)
        say "torch: ${torch_line:-not importable}${torch_line:+ (GPU visible: ${torch_line##* })}; trying pip install ${spec[*]}"
        if [ "$NO_INSTALL" = 1 ]; then say "torch: GPU_CHECK_NO_INSTALL=1: not installing"
        elif pip_try 300 "${PIP_NET[@]}" "${spec[@]}"; then say "torch: pip install succeeded"
        else say "torch: pip install failed$([ $OFFLINE = 1 ] && echo ' (no network)'); using what is installed"; fi
        torch_line=$(pyq 'import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()))')
        say "torch now: ${torch_line:-not importable}"
        if [ -z "$torch_line" ] || [ "${torch_line##* }" != 1 ]; then
            say "no torch that sees a GPU: the benchmark cannot run (benchmarks/gpu_bench.py --cpu-smoke checks the code on CPU)"
            return 1
        fi
    fi

    # ART
    local art_v
    art_v=$(pyq 'import art; print(art.__version__)')
    if [ -n "$art_v" ]; then
        say "ART: using the installed adversarial-robustness-toolbox $art_v"
    else
        say "ART: not installed; trying pip install adversarial-robustness-toolbox"
        if [ "$NO_INSTALL" = 1 ]; then say "ART: GPU_CHECK_NO_INSTALL=1: not installing"
        elif pip_try 90 "${PIP_NET[@]}" adversarial-robustness-toolbox; then say "ART: pip install succeeded"
        else say "ART: pip install failed$([ $OFFLINE = 1 ] && echo ' (no network)')"; fi
        art_v=$(pyq 'import art; print(art.__version__)')
        say "ART: ${art_v:+adversarial-robustness-toolbox $art_v}${art_v:-not available: the ART BIM rows will be skipped}"
    fi

    # advkit's light dependencies, only the missing ones
    local missing=()
    local mod pkg
    for pair in numpy:numpy safetensors:safetensors yaml:pyyaml typer:typer rich:rich matplotlib:matplotlib; do
        mod=${pair%%:*}; pkg=${pair##*:}
        pyq "import $mod" >/dev/null || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "advkit deps missing: ${missing[*]}"
        if [ $OFFLINE = 1 ] || [ "$NO_INSTALL" = 1 ]; then say "offline or GPU_CHECK_NO_INSTALL=1: not trying pip for them"
        elif pip_try 120 "${PIP_NET[@]}" "${missing[@]}"; then say "advkit deps installed"
        else say "advkit deps: pip install failed (the benchmark needs numpy and safetensors at least)"; fi
    else
        say "advkit deps: all present"
    fi

    # advkit itself
    local found
    found=$(pyq 'import advkit, os; print(os.path.realpath(os.path.dirname(advkit.__file__)))')
    if [ "$found" = "$(realpath "$REPO/src/advkit")" ]; then
        say "advkit: already installed from this checkout"
    elif [ "$NO_INSTALL" = 1 ]; then
        export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
        say "advkit: GPU_CHECK_NO_INSTALL=1: using PYTHONPATH=$REPO/src"
    elif [ $OFFLINE = 0 ] && pip_try 120 "${PIP_NET[@]}" --no-deps -e "$REPO"; then
        say "advkit: pip install -e . --no-deps"
    elif pip_try 60 --no-index --no-build-isolation --no-deps -e "$REPO"; then
        say "advkit: pip install -e . --no-deps --no-build-isolation --no-index"
    else
        export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
        say "advkit: not installed; using PYTHONPATH=$REPO/src"
    fi
    local where
    where=$(pyq 'import advkit.attacks, os; print(os.path.dirname(advkit.__file__))')
    if [ -z "$where" ]; then
        say "advkit does not import:"; "$PY" -c 'import advkit.attacks' 2>&1 | tail -n 5; return 1
    fi
    say "advkit imports from $where"

    # time kept back for the training stage (only when its data was carried)
    local train_s=0
    [ "${GPU_CHECK_TRAIN:-1}" = 1 ] && [ -f "$TRAIN_DATA/train-images-idx3-ubyte.gz" ] && train_s=${GPU_CHECK_TRAIN_S:-170}
    local remaining=$(($(left) - 5 - train_s))
    if [ $remaining -lt 90 ]; then say "only ${remaining} s left after set-up: not starting the benchmark"; return 1; fi
    say "running benchmarks/gpu_bench.py (limit ${remaining} s) $*"
    timeout --kill-after=10 "$remaining" "$PY" -u "$REPO/benchmarks/gpu_bench.py" \
        --budget-s $((remaining - 45)) --json "$JSON" "$@"
    local rc=$?
    [ $rc -eq 124 ] && say "gpu_bench.py stopped at its time limit (the output above is what it printed)"
    say "gpu_bench.py exit status $rc; total ${SECONDS} s; output in $LOG"
    train_stage $smoke
    return $rc
}

# What only a GPU trains fast here: the Fashion-MNIST ResNet-110 of the depth question (>= 92% wanted; 5 CPU
# epochs gave 89.15%). Needs the dataset carried: mkdir -p .data/fashion-mnist && cp
# /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/ (then run with carry [".data"]).
train_stage() {
    if [ "${GPU_CHECK_TRAIN:-1}" != 1 ]; then say "training stage off (GPU_CHECK_TRAIN=0)"; return 0; fi
    if [ ! -f "$TRAIN_DATA/train-images-idx3-ubyte.gz" ]; then
        say "training stage skipped: no Fashion-MNIST in $TRAIN_DATA (carry .data/fashion-mnist)"; return 0
    fi
    local limit=$(($(left) - 10))
    if [ $limit -lt 60 ]; then say "training stage skipped: only ${limit} s left"; return 0; fi
    local epochs=${GPU_CHECK_TRAIN_EPOCHS:-15} rows=train device=cuda
    if [ "${1:-0}" = 1 ]; then epochs=1; rows='train[:1024]'; device=auto; fi   # --cpu-smoke: the code path only
    say "training resnet110 on Fashion-MNIST ($rows), $epochs epochs, device $device (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$PY" -m advkit.cli train resnet110 --dataset fashion-mnist --epochs "$epochs" \
        --train-split "$rows" --device "$device" --data-dir "$TRAIN_DATA" \
        --out "$OUT_DIR/resnet110_gpu_$STAMP.safetensors" 2>&1 \
        | grep -v -E '━' | tail -n 5
    local rc=${PIPESTATUS[0]}
    [ $rc -eq 124 ] && say "training stopped at its time limit: rerun with fewer GPU_CHECK_TRAIN_EPOCHS"
    say "training exit status $rc; card: $OUT_DIR/resnet110_gpu_$STAMP.json"
}

main "$@" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
