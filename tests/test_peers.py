"""Agreement with the peers, run in the same test: torchcam 0.5.0's ScoreCAM/SSCAM.

torchcam weighs channels by a softmax over logits (our ``score_mode="channel_softmax"``)
but rescales each map to [0, 1] *before* upsampling (and adds eps=1e-8), while the
official code, and so this package, upsample first. At the layer's own resolution the
two orders coincide, so there the maps must match exactly; after upsampling they
differ slightly and must still agree closely.
"""

from __future__ import annotations

import torch
from torchcam import methods as torchcam_methods

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from tests.reference import replayed_noise
from tests.tiny_models import SameResolution, SmallCNN


def torchcam_maps(
    extractor_cls: type,
    model: torch.nn.Module,
    layer: torch.nn.Module,
    x: torch.Tensor,
    classes: list[int],
    **kwargs: object,
) -> torch.Tensor:
    with extractor_cls(
        model, target_layer=layer, input_shape=tuple(x.shape[1:]), **kwargs
    ) as extractor:
        with torch.no_grad():
            model(x)
        cams = extractor(class_idx=classes, normalized=False)
    return cams[0].unsqueeze(1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_channel_softmax_equals_torchcam_score_cam_without_upsampling() -> None:
    model = SameResolution().eval()
    x = torch.randn(3, 3, 6, 6)
    classes = [0, 2, 3]
    ours = ScoreCAM(model, model.layer).attribute(x, target=classes, score_mode="channel_softmax")
    theirs = torchcam_maps(torchcam_methods.ScoreCAM, model, model.layer, x, classes, batch_size=7)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_channel_softmax_agrees_with_torchcam_after_upsampling() -> None:
    model = SmallCNN(channels=8).eval()
    x = torch.randn(2, 3, 16, 16)
    classes = [3, 1]
    ours = ScoreCAM(model, model.layer).attribute(x, target=classes, score_mode="channel_softmax")
    theirs = torchcam_maps(torchcam_methods.ScoreCAM, model, model.layer, x, classes)
    assert ours.shape == theirs.shape == (2, 1, 8, 8)
    # upsampling 8 -> 16 px, the two normalisation orders differ by about 11 % (L2)
    for i in range(2):
        assert correlation(ours[i], theirs[i]) > 0.99
        assert float((ours[i] - theirs[i]).norm() / theirs[i].norm()) < 0.15


class ReplayedNoise:
    """Stands in for torchcam's noise distribution: returns prepared draws in turn."""

    def __init__(self, draws: torch.Tensor) -> None:
        self.draws = iter(draws)

    def sample(self, size: torch.Size) -> torch.Tensor:
        draw = next(self.draws)
        assert draw.shape == size
        return draw


def test_sscam_equals_torchcam_sscam_with_the_same_noise() -> None:
    # torchcam draws the noise of all (example, channel) masks per sample; this
    # package seeds each (example, channel, sample) from the call's seed. Replay
    # this package's draws and hand them to torchcam in its order: the two SS-CAMs
    # must then agree exactly.
    model = SameResolution().eval()
    x = torch.randn(2, 3, 6, 6)
    classes, samples, sigma, channels = [1, 3], 6, 2.0, 5
    ours = SmoothedScoreCAM(model, model.layer).attribute(
        x,
        target=classes,
        score_mode="channel_softmax",
        nt_samples=samples,
        stdevs=sigma,
        generator=torch.Generator().manual_seed(5),
    )
    noise = replayed_noise(5, sigma)
    draws = torch.zeros(samples, 2, channels, 6, 6)
    for n in range(2):
        for k in range(channels):
            for s in range(samples):
                draws[s, n, k] = noise((6, 6), n, k, s)
    with torchcam_methods.SSCAM(
        model, target_layer=model.layer, input_shape=(3, 6, 6), num_samples=samples, std=sigma
    ) as extractor:
        extractor._distrib = ReplayedNoise(draws)
        with torch.no_grad():
            model(x)
        theirs = extractor(class_idx=classes, normalized=False)[0].unsqueeze(1)
    exact = ScoreCAM(model, model.layer).attribute(x, target=classes, score_mode="channel_softmax")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert (ours - exact).abs().max() > 1e-3  # the noise changed the maps


def test_equals_torchcam_iscam_without_upsampling() -> None:
    # torchcam's ISCAM uses logits and a softmax over channels (channel_softmax mode) and
    # normalises before upsampling; at the layer's own resolution both orders coincide.
    model = SameResolution().eval()
    x = torch.randn(2, 3, 6, 6)
    classes, steps = [1, 3], 6
    ours = IntegratedScoreCAM(model, model.layer).attribute(
        x, target=classes, score_mode="channel_softmax", n_steps=steps
    )
    with torchcam_methods.ISCAM(
        model, target_layer=model.layer, input_shape=(3, 6, 6), num_samples=steps
    ) as extractor:
        with torch.no_grad():
            model(x)
        theirs = extractor(class_idx=classes, normalized=False)[0].unsqueeze(1)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
