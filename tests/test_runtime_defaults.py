"""The runtime defaults wired into every call: glibc keeps freed memory (unless the user opted
out) and autocast_dtype="auto" follows the hardware."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam._core import malloc as _allocator
from captum_sscam._core.hardware import fastest_autocast_dtype
from captum_sscam.attr import _options
from tests.tiny_models import SmallCNN

ON_GLIBC = _allocator._find_glibc()[0] is not None
CALL_THEN_REPORT = textwrap.dedent(
    """
    import torch
    from captum_sscam import ScoreCAM
    from captum_sscam._core.malloc import keep_freed_memory
    from tests.tiny_models import SmallCNN
    model = SmallCNN().eval()
    ScoreCAM(model, model.layer).attribute(torch.randn(1, 3, 8, 8), target=0)
    print(keep_freed_memory().applied)
    """
)


@pytest.mark.skipif(not ON_GLIBC, reason="keeping freed memory is a glibc setting")
@pytest.mark.parametrize(("opt_out", "applied"), [(None, "True"), ("default", "False")])
def test_an_attribute_call_keeps_freed_memory_unless_opted_out(opt_out, applied, monkeypatch):
    monkeypatch.delenv("CAPTUM_SSCAM_MALLOC", raising=False)
    if opt_out is not None:
        monkeypatch.setenv("CAPTUM_SSCAM_MALLOC", opt_out)
    result = subprocess.run(
        [sys.executable, "-c", CALL_THEN_REPORT], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == applied


def test_auto_autocast_uses_the_hardware_choice() -> None:
    model = SmallCNN(channels=8).eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    automatic = method.attribute(x, target=[0, 1], autocast_dtype="auto")
    explicit = method.attribute(x, target=[0, 1], autocast_dtype=fastest_autocast_dtype("cpu"))
    torch.testing.assert_close(automatic, explicit)


def test_auto_autocast_without_a_faster_precision_says_so_once_and_runs_fp32(monkeypatch):
    monkeypatch.setattr(_options, "fastest_autocast_dtype", lambda device: None)
    monkeypatch.setattr(_options, "_NOTED_FP32", set())
    model = SmallCNN(channels=8).eval()
    x = torch.randn(1, 3, 16, 16)
    method = SmoothedScoreCAM(model, model.layer)
    seeded = {"nt_samples": 2, "generator": torch.Generator().manual_seed(0)}
    with pytest.warns(UserWarning, match=r'"auto": no reduced precision is faster .* fp32'):
        automatic = method.attribute(x, target=1, autocast_dtype="auto", **seeded)
    seeded["generator"] = torch.Generator().manual_seed(0)
    fp32 = method.attribute(x, target=1, **seeded)
    torch.testing.assert_close(automatic, fp32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.attribute(x, target=1, autocast_dtype="auto", nt_samples=1)
    assert not [w for w in caught if "no reduced precision" in str(w.message)]
