"""benchmarks/gpu_benchmark.py, dry-run on the CPU with a small model: the script a GPU machine
runs (`make gpu-check`) must not spend that machine's time on its own bugs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.snippets import ROOT, environment


def test_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    table = tmp_path / "gpu-check.md"
    command = [
        sys.executable,
        "benchmarks/gpu_benchmark.py",
        *("--device", "cpu", "--model", "resnet18", "--size", "64", "--samples", "1"),
        *("--configs", "default", "auto", "compiled-auto"),
        *("--approx-samples", "2", "--top-k", "8"),
        *("--batch", "64", "--lite0-channels", "4", "--out", str(table)),
    ]
    env = environment(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    text = table.read_text()
    k_prime = int(re.search(r"layer4 K' = (\d+), N = 1", text).group(1))
    assert 0 < k_prime <= 512  # resnet18's layer4 has 512 channels
    rows = re.findall(
        r"^\| (.+?) \| 64 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", text, re.M
    )
    # the rows with the automatic memory format name the format it chose
    assert [row[0] for row in rows] in [
        [
            f"default call (fp32, automatic memory format): {fp32_format}",
            f'autocast_dtype="auto": {auto_format}',
            'autocast_dtype="auto", compile_forward=True',
        ]
        for fp32_format in ("channels-last", "contiguous")
        for auto_format in ("channels-last", "contiguous")
    ]
    for _, bare, seconds, ratio, per_second in rows:
        assert float(bare) > 0 and float(seconds) > 0
        assert abs(float(ratio) - float(seconds) / float(bare)) < 0.02 * float(ratio)
        # seconds are printed to 0.01 s: compare within that rounding
        assert abs(int(per_second) * float(seconds) / k_prime - 1) < 0.01 + 0.005 / float(seconds)
    assert re.search(r"Fast path \(autocast auto, adaptive N=3, .*\): [\d.]+ s per 64 px", text)
    assert re.search(r"Fast path with compile_forward=True \(compiled above\): [\d.]+ s per", text)
    assert re.search(r"Fastest approximate mode \(top-8 channels, antithetic N=2", text)
    # the Lite0 table: exact N = 2 (the least with a standard error) against adaptive N = 3
    assert "exact SS-CAM (default call, N = 2, uniform, fp32)" in text
    assert 'the fast path (autocast_dtype="auto", adaptive N = 3)' in text
    lite0 = re.findall(
        r"^\| (\w+) \| 4 \| 64 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) "
        r"\| ([\d.]+) \| ([\d.]+) \|$",
        text,
        re.M,
    )
    assert [row[0] for row in lite0] == ["coffee", "chelsea", "astronaut"]
    fastest = []
    for _, exact, exact_error, fast, fast_error, compiled, ratio in lite0:
        assert 0 < float(exact_error) < 1 and 0 < float(fast_error) < 1
        fastest.append(min(float(fast), float(compiled)))
        # seconds are printed to 0.001 s and the ratio to 0.1
        assert abs(float(ratio) - float(exact) / fastest[-1]) <= 0.05 + 0.01 * float(ratio)
    mean = re.search(r"Fastest equal-error mode on Lite0: ([\d.]+) s per 224 px image", text)
    assert abs(float(mean.group(1)) - sum(fastest) / 3) < 0.002
    assert re.search(r"fast / exact rel\. SE [\d.]+-[\d.]+$", text, re.M)
