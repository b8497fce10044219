"""Transformer layers: reshape transforms, ViT and Swin maps against the reference loop on the
reshaped activations, and a clear error instead of a meaningless map without a transform."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torchvision.models import SwinTransformer, VisionTransformer

from captum_sscam import (
    IntegratedScoreCAM,
    ScoreCAM,
    SmoothedScoreCAM,
    channels_last_reshape_transform,
    vit_reshape_transform,
)
from tests.reference import reference_score_cam, replayed_noise


def small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
        num_classes=5,
    ).eval()


def small_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=[2, 2],
        num_classes=5,
    ).eval()


def test_vit_reshape_transform_drops_prefix_tokens_and_lays_out_the_grid() -> None:
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)  # 1 class + 6 patches
    maps = vit_reshape_transform(tokens, grid=(2, 3))
    assert maps.shape == (2, 3, 2, 3)
    # patch token t (after the class token) sits at row t // 3, column t % 3
    assert torch.equal(maps[1, 2, 1, 0], tokens[1, 1 + 3, 2])
    square = vit_reshape_transform(torch.randn(1, 2 + 16, 4), prefix_tokens=2)
    assert square.shape == (1, 4, 4, 4)
    no_prefix = torch.randn(1, 9, 5)
    assert torch.equal(
        vit_reshape_transform(no_prefix, prefix_tokens=0)[0, :, 0, 1], no_prefix[0, 1]
    )


@pytest.mark.parametrize(
    ("tokens", "kwargs", "message"),
    [
        (torch.randn(1, 1 + 12, 4), {}, "do not form a square grid; pass grid"),
        (torch.randn(1, 1 + 12, 4), {"grid": (3, 3)}, "holds 9 patches but the layer gives 12"),
        (torch.randn(1, 4, 4, 4), {}, r"takes tokens shaped \(N, tokens, dim\)"),
        (torch.randn(1, 2, 4), {"prefix_tokens": 2}, "leaves no patch tokens"),
        (torch.randn(1, 5, 4), {"prefix_tokens": -1}, "prefix_tokens must be an integer >= 0"),
    ],
)
def test_vit_reshape_transform_errors_say_what_to_pass(tokens, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        vit_reshape_transform(tokens, **kwargs)


def test_channels_last_reshape_transform_moves_channels_first() -> None:
    activation = torch.randn(2, 3, 4, 6)
    assert torch.equal(channels_last_reshape_transform(activation), activation.permute(0, 3, 1, 2))


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_vit_maps_match_the_reference_on_reshaped_tokens(score_mode: str) -> None:
    model = small_vit()
    layer = model.encoder.layers[-1]
    x = torch.randn(2, 3, 32, 32)
    ours = ScoreCAM(model, layer, reshape_transform=vit_reshape_transform).attribute(
        x, target=[1, 4], score_mode=score_mode, perturbations_per_eval=5
    )
    expected = reference_score_cam(
        model, layer, x, [1, 4], score_mode=score_mode, reshape=vit_reshape_transform
    )
    assert ours.shape == (2, 1, 4, 4)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_vit_ss_cam_and_is_cam_match_the_reference() -> None:
    model = small_vit()
    layer = model.encoder.layers[-1]
    x = torch.randn(1, 3, 32, 32)
    transform = partial(vit_reshape_transform, grid=(4, 4))
    smoothed = SmoothedScoreCAM(model, layer, reshape_transform=transform).attribute(
        x, target=2, nt_samples=3, stdevs=0.5, generator=torch.Generator().manual_seed(3)
    )
    expected = reference_score_cam(
        model, layer, x, [2], samples=3, noise=replayed_noise(3, 0.5), reshape=transform
    )
    torch.testing.assert_close(smoothed, expected, rtol=1e-4, atol=1e-6)
    integrated = IntegratedScoreCAM(model, layer, reshape_transform=transform).attribute(
        x, target=2, n_steps=2
    )
    expected = reference_score_cam(
        model, layer, x, [2], samples=2, mask_scales=[0.5, 1.5], reshape=transform
    )
    torch.testing.assert_close(integrated, expected, rtol=1e-4, atol=1e-6)


def test_swin_maps_match_the_reference_on_permuted_activations() -> None:
    model = small_swin()
    layer = model.features[-1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.features(x).shape == (2, 4, 4, 16)  # (N, h, w, C): channels last
    ours = ScoreCAM(model, layer, reshape_transform=channels_last_reshape_transform).attribute(
        x, target=[0, 3]
    )
    expected = reference_score_cam(model, layer, x, [0, 3], reshape=channels_last_reshape_transform)
    assert ours.shape == (2, 1, 4, 4)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_tokens_without_a_transform_are_refused_naming_reshape_transform() -> None:
    model = small_vit()
    layer = model.encoder.layers[-1]
    with pytest.raises(ValueError, match="vit_reshape_transform") as error:
        ScoreCAM(model, layer).attribute(torch.randn(1, 3, 32, 32), target=0)
    assert "reshape_transform" in str(error.value)
    assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_a_transform_with_the_wrong_shape_or_type_is_refused() -> None:
    model = small_vit()
    layer = model.encoder.layers[-1]
    with pytest.raises(TypeError, match="reshape_transform must be a callable"):
        ScoreCAM(model, layer, reshape_transform="vit")
    with pytest.raises(ValueError, match="Pass reshape_transform"):
        ScoreCAM(model, layer, reshape_transform=lambda t: t.flatten(1)).attribute(
            torch.randn(1, 3, 32, 32), target=0
        )


def test_a_layer_with_four_spatial_dimensions_is_refused() -> None:
    # masks are resized (bi/tri)linearly: 1 to 3 spatial dimensions, as before the engine move
    class FourSpatial(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x).flatten(1)[:, :3]

    model = FourSpatial()
    with pytest.raises(ValueError, match="1 to 3 spatial dimensions"):
        ScoreCAM(model, model.layer).attribute(torch.rand(1, 2, 2, 2, 2, 3), target=0)
