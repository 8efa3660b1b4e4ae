#!/usr/bin/env bash
# The GPU kit: install the carried wheels into a temporary folder, then run benchmarks/gpu/kit.py.
#
#   benchmarks/gpu/run.sh --device cuda --out DIR [kit options]     on the GPU machine (wheels from .whl/)
#   benchmarks/gpu/run.sh --device cpu --out DIR --tiny             the CPU rehearsal (make gpu-rehearsal)
#
# --wheels DIR installs the wheels in DIR (default: .whl/ when it holds wheels and --device is not cpu);
# --no-wheels installs none. --tiny sets the rehearsal's sizes (any option after it still wins).
# PYTHON picks the interpreter (default python3: on the GPU machine, the one that holds torch).
# Every other option goes to kit.py: `python3 benchmarks/gpu/kit.py --help` lists them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
TINY=(--dataset digits --epochs 1 --seeds 1 --rounds 3 --min-run-time 0.01 --ladder-epochs 1 --ladder-seeds 1
      --augment-shifts 0,1 --cifar-train 200 --cifar-test 50 --cifar-epochs 1 --target-mnist 0.5 --target-cifar 0.3
      --compile-disabled --set 'evaluate.shifts=[0]' --set 'evaluate.noise_std=[0.0]'
      --set 'evaluate.throughput_batch_sizes=[32]')
wheels="" no_wheels=0 device=cuda out="" args=()
while (($#)); do
  case $1 in
    --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
    --no-wheels) no_wheels=1; shift ;;
    --tiny) args+=("${TINY[@]}"); shift ;;
    --device) device=${2:-}; args+=("$1" "${2:-}"); shift 2 ;;
    --device=*) device=${1#*=}; args+=("$1"); shift ;;
    --out) out=${2:-}; args+=("$1" "${2:-}"); shift 2 ;;
    --out=*) out=${1#*=}; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ -z $out ]]; then
  echo "gpu-kit: give --out DIR, the folder for every report, figure and log" >&2
  exit 2
fi
if [[ -z $wheels && $no_wheels == 0 && $device != cpu ]] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  wheels=$ROOT/.whl
fi
mkdir -p "$out/logs"
if [[ -n $wheels && $no_wheels == 0 ]]; then
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "gpu-kit: no wheels in $wheels; fetch them with \`make gpu-wheels\` (and carry .whl to the GPU machine)" >&2
    exit 2
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    echo "gpu-kit: the wheels in $wheels are for CPython 3.12, but $PYTHON is $("$PYTHON" -V 2>&1); use --no-wheels here" >&2
    exit 2
  fi
  site=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-site.XXXXXX")
  trap 'rm -rf "$site"' EXIT
  started=$SECONDS
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$site" "$wheels"/*.whl >"$out/logs/00-install.log" 2>&1; then
    echo "gpu-kit: installing the wheels from $wheels failed: $(tail -n 1 "$out/logs/00-install.log")" >&2
    exit 2
  fi
  export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # report only: the image's own pins against the wheels' needs (they were installed without their dependencies)
  "$PYTHON" -m pip check --disable-pip-version-check >>"$out/logs/00-install.log" 2>&1 || true
  echo "gpu-kit: installed $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site in $((SECONDS - started)) s"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
"$PYTHON" "$ROOT/benchmarks/gpu/kit.py" "${args[@]}"
