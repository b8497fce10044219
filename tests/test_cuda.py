"""The correctness checks on a CUDA device (skipped without one, see conftest.py).

Each GPU result is compared with the plain CPU reference loop of tests/reference.py
or with the CPU result of the same call.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM, vit_reshape_transform
from captum_sscam._core.batch_size import MAX_AUTO_BATCH, default_batch_size, free_cuda_bytes
from tests.reference import reference_score_cam, replayed_noise
from tests.tiny_models import LinearHead, SmallCNN

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _ieee_fp32_convolutions() -> Iterator[None]:
    """cuDNN runs fp32 convolutions in TF32 by default on Ampere and later GPUs (a 10-bit
    mantissa, about 1e-3 relative): these tests compare the math with the CPU's, so they
    run in full fp32, with cuDNN's deterministic algorithms."""
    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled, deterministic=True, allow_tf32=False
    ):
        yield


def on_cuda(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to(CUDA)


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_matches_cpu_reference_loop(score_mode: str, with_baseline: bool) -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    baseline = torch.rand(3, 3, 16, 16) if with_baseline else None
    expected = reference_score_cam(model, model.layer, x, [0, 3, 4], score_mode, baseline)
    gpu_model = on_cuda(model)
    cam = ScoreCAM(gpu_model, gpu_model.layer).attribute(
        x.to(CUDA),
        target=[0, 3, 4],
        baselines=None if baseline is None else baseline.to(CUDA),
        score_mode=score_mode,
        perturbations_per_eval=5,
    )
    assert cam.device.type == "cuda"
    torch.testing.assert_close(cam.cpu(), expected, rtol=1e-3, atol=1e-5)


def test_sscam_without_noise_equals_score_cam_on_gpu() -> None:
    model = on_cuda(SmallCNN().eval())
    x = torch.randn(2, 3, 16, 16, device=CUDA)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[1, 2])
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=[1, 2], nt_samples=3, stdevs=0.0
    )
    torch.testing.assert_close(smoothed, exact)


def test_gpu_generator_makes_noise_reproducible() -> None:
    model = on_cuda(SmallCNN().eval())
    x = torch.randn(1, 3, 16, 16, device=CUDA)
    method = SmoothedScoreCAM(model, model.layer)

    def run() -> torch.Tensor:
        return method.attribute(
            x, target=0, nt_samples=4, generator=torch.Generator(CUDA).manual_seed(3)
        )

    torch.testing.assert_close(run(), run())


def test_antithetic_cancels_for_a_linear_score_on_gpu() -> None:
    model = on_cuda(LinearHead().eval())
    x = torch.randn(2, 3, 8, 8, device=CUDA)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[0, 2], score_mode="channel_softmax")
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=[0, 2], score_mode="channel_softmax", nt_samples=4, noise_sampling="antithetic"
    )
    torch.testing.assert_close(smoothed, exact, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_stays_close_to_fp32(dtype: torch.dtype) -> None:
    model = on_cuda(SmallCNN().eval())
    x = torch.randn(2, 3, 16, 16, device=CUDA)
    method = ScoreCAM(model, model.layer)
    fp32 = method.attribute(x, target=[1, 3])
    mixed = method.attribute(x, target=[1, 3], autocast_dtype=dtype, channels_last=True)
    correlation = torch.corrcoef(torch.stack([mixed.flatten(), fp32.flatten()]))[0, 1]
    assert mixed.dtype == torch.float32 and correlation > 0.99


def test_several_targets_and_top_k_match_cpu() -> None:
    model = SmallCNN(channels=8).eval()
    x = torch.randn(2, 3, 16, 16)
    targets = torch.tensor([[0, 1], [4, 2]])
    cpu = ScoreCAM(model, model.act).attribute(x, target=targets, top_k_channels=3)
    gpu_model = on_cuda(model)
    gpu = ScoreCAM(gpu_model, gpu_model.act).attribute(
        x.to(CUDA), target=targets.to(CUDA), top_k_channels=3
    )
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-5)


def test_memory_the_allocator_caches_counts_as_free() -> None:
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=CUDA)
    del block  # PyTorch keeps the 256 MiB reserved for the next allocation
    free, _ = torch.cuda.mem_get_info(CUDA)
    cached = torch.cuda.memory_reserved(CUDA) - torch.cuda.memory_allocated(CUDA)
    assert cached >= 256 * 2**20
    assert abs(free_cuda_bytes(CUDA) - (free + cached)) < 64 * 2**20


def test_batch_size_follows_free_memory() -> None:
    free = free_cuda_bytes(CUDA)  # free memory, and what PyTorch's allocator caches unused
    per_example = free // 100  # half the free memory holds about 50 such examples
    chosen = default_batch_size(CUDA, per_example, num_examples=1)
    assert 40 <= chosen <= 50
    assert default_batch_size(CUDA, 0, num_examples=1) == MAX_AUTO_BATCH
    assert default_batch_size(CUDA, 4 * free, num_examples=1) == 1
    # and the methods run with it (no perturbations_per_eval given)
    model = on_cuda(SmallCNN().eval())
    x = torch.randn(2, 3, 16, 16, device=CUDA)
    auto = ScoreCAM(model, model.layer).attribute(x, target=[0, 1])
    fixed = ScoreCAM(model, model.layer).attribute(x, target=[0, 1], perturbations_per_eval=3)
    torch.testing.assert_close(auto, fixed)


def test_integrated_score_cam_matches_cpu_reference_loop() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    expected = reference_score_cam(
        model, model.layer, x, [1, 2], samples=3, mask_scales=[1 / 3, 1.0, 2.0]
    )
    gpu_model = on_cuda(model)
    cam = IntegratedScoreCAM(gpu_model, gpu_model.layer).attribute(
        x.to(CUDA), target=[1, 2], n_steps=3
    )
    torch.testing.assert_close(cam.cpu(), expected, rtol=1e-3, atol=1e-5)


def test_vit_on_gpu_matches_cpu() -> None:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=5,
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    layer = model.encoder.layers[-1]
    method = ScoreCAM(model, layer, reshape_transform=vit_reshape_transform)
    cpu = method.attribute(x, target=[0, 4])
    gpu_model = on_cuda(model)
    gpu = ScoreCAM(
        gpu_model, gpu_model.encoder.layers[-1], reshape_transform=vit_reshape_transform
    ).attribute(x.to(CUDA), target=[0, 4])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("allocation", ["uniform", "adaptive"])
def test_seeded_sscam_on_gpu_matches_the_reference_and_ignores_batching(allocation: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    gpu_model = on_cuda(model)
    method = SmoothedScoreCAM(gpu_model, gpu_model.layer)

    def run(batch: int | None) -> torch.Tensor:
        return method.attribute(
            x.to(CUDA), target=2, nt_samples=6, stdevs=0.0 if allocation == "adaptive" else 0.3,
            sample_allocation=allocation, perturbations_per_eval=batch,
            generator=torch.Generator().manual_seed(4),
        ).cpu()  # fmt: skip

    torch.testing.assert_close(run(1), run(None), rtol=1e-4, atol=1e-6)
    if allocation == "uniform":  # the draws are made on the model's device
        noise = replayed_noise(4, 0.3, device=CUDA)
        expected = reference_score_cam(model, model.layer, x, [2], samples=6, noise=noise)
    else:
        expected = ScoreCAM(model, model.layer).attribute(x, target=2)
    torch.testing.assert_close(run(3), expected, rtol=1e-3, atol=1e-5)


def test_compiled_forward_matches_the_cpu_reference_loop() -> None:
    torch._dynamo.reset()
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    expected = reference_score_cam(model, model.layer, x, [1, 4], "probability", None)
    gpu_model = on_cuda(model)
    # 12 items in batches of 5: the last batch is padded to 5 for the compiled forward
    cam = ScoreCAM(gpu_model, gpu_model.layer).attribute(
        x.to(CUDA), target=[1, 4], perturbations_per_eval=5, compile_forward=True
    )
    assert cam.device.type == "cuda"
    torch.testing.assert_close(cam.cpu(), expected, rtol=1e-3, atol=1e-5)
