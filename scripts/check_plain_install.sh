#!/usr/bin/env bash
# The plain-install check that `make test` runs: build advkit's wheel from this checkout, install it WITHOUT extras
# into a new, empty virtual environment (torch first, so nothing pulls a CUDA build), then run the CLI from a folder
# outside the checkout: `advkit --help`, the registries, and a short attack on the shipped zoo.
# A missing runtime dependency (typer >= 0.28 no longer brings click) fails here, although the dev extras hide it.
#
#   scripts/check_plain_install.sh [PYTHON] [TORCH]      e.g. scripts/check_plain_install.sh python3 torch==2.13.0
set -euo pipefail
PYTHON=${1:-python3}
TORCH=${2:-torch==2.13.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/advkit-plain.XXXXXX")
trap 'rm -rf "$WORK" "$ROOT/build"' EXIT

echo "plain install: building the wheel from $ROOT"
"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/pip" install --quiet --upgrade pip
"$WORK/build-env/bin/pip" wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/advkit-*.whl)

echo "plain install: $(basename "$WHEEL") into a clean virtual environment, $TORCH first, no extras"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --upgrade pip
"$WORK/venv/bin/pip" install --quiet "$TORCH"
"$WORK/venv/bin/pip" install --quiet "$WHEEL"

mkdir -p "$WORK/elsewhere"
cd "$WORK/elsewhere"   # outside the checkout: only the installed wheel can be imported
ADVKIT="$WORK/venv/bin/advkit"
"$WORK/venv/bin/python" - <<'PY'
import advkit, pathlib
where = pathlib.Path(advkit.__file__).resolve()
assert "site-packages" in where.parts, f"advkit imported from {where}, not from the installed wheel"
print(f"plain install: advkit imported from {where.parent}")
PY
"$ADVKIT" --help > "$WORK/help.txt"
grep -q "attack" "$WORK/help.txt" || { echo "advkit --help does not list the attack command"; exit 1; }
"$ADVKIT" attacks list > /dev/null
"$ADVKIT" models list > /dev/null
# a short attack on the shipped zoo; the data come from the local copy or the canonical download
"$ADVKIT" attack ifgsm --model resnet20 --dataset fashion-mnist --eps 0.1 --steps 5 --limit 32 --seed 0 \
    --out "$WORK/elsewhere/run" | tee "$WORK/attack.txt"
grep -Eq "success" "$WORK/attack.txt" || { echo "advkit attack printed no success rate"; exit 1; }
# a bad input is an error with exit status 2, not a traceback (the app-wide handler works with this typer)
set +e
"$ADVKIT" attack ifgsm --model no-such-model --limit 4 --out "$WORK/elsewhere/bad" 2> "$WORK/bad.txt"
status=$?
set -e
[ "$status" = 2 ] || { echo "a bad model name exited with $status, not 2"; cat "$WORK/bad.txt"; exit 1; }
grep -q "error:" "$WORK/bad.txt" || { echo "a bad model name printed no 'error:' line"; cat "$WORK/bad.txt"; exit 1; }
! grep -q "Traceback" "$WORK/bad.txt" || { echo "a bad model name printed a traceback"; cat "$WORK/bad.txt"; exit 1; }
echo "plain install: ok ($("$WORK/venv/bin/pip" list 2>/dev/null | grep -iE '^(typer|click) ' | tr -s ' ' | paste -sd ', '))"
