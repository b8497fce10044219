"""ScoreCAM: hand-computed values, the plain reference loop, targets, batching."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, NoiseTunnel

from captum_sscam import ScoreCAM
from tests.reference import layer_output, reference_score_cam
from tests.tiny_models import SmallCNN, TwoChannelSum, TwoInputs

SIGMOID_1 = 1 / (1 + math.exp(-1))


def hand_input() -> torch.Tensor:
    return torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])


def test_hand_computed_probability_mode() -> None:
    # H_0 = x, M_0 = x -> softmax([1, 0])_0 = sigmoid(1); H_1 = 1 - x, M_1 = 0 -> 0.5.
    # L = sigmoid(1) * x + 0.5 * (1 - x).
    model = TwoChannelSum()
    cam = ScoreCAM(model, model.layer).attribute(hand_input(), target=0)
    expected = torch.tensor([[[[SIGMOID_1, 0.5], [0.5, 0.5]]]])
    torch.testing.assert_close(cam, expected)


def test_hand_computed_channel_softmax_mode() -> None:
    # logits 1 and 0 -> weights softmax([1, 0]) = [sigmoid(1), 1 - sigmoid(1)].
    model = TwoChannelSum()
    cam = ScoreCAM(model, model.layer).attribute(
        hand_input(), target=0, score_mode="channel_softmax"
    )
    low = 1 - SIGMOID_1
    torch.testing.assert_close(cam, torch.tensor([[[[SIGMOID_1, low], [low, low]]]]))


def test_hand_computed_with_baseline() -> None:
    # baseline 0: score(b) = 0.5, so a_0 = sigmoid(1) - 0.5 and a_1 = 0.5 - 0.5 = 0.
    model = TwoChannelSum()
    cam = ScoreCAM(model, model.layer).attribute(hand_input(), target=0, baselines=0.0)
    torch.testing.assert_close(cam, (SIGMOID_1 - 0.5) * hand_input())


def test_relu_attributions_false_keeps_sign() -> None:
    # Class 1 has probability 1 - sigmoid(s): a_0 = 1 - sigmoid(1), a_1 = 0.5, baseline 0
    # subtracts 0.5: a_0 < 0, so without ReLU the map is negative where x = 1.
    model = TwoChannelSum()
    cam = ScoreCAM(model, model.layer).attribute(
        hand_input(), target=1, baselines=0.0, relu_attributions=False
    )
    expected = (1 - SIGMOID_1 - 0.5) * hand_input()
    torch.testing.assert_close(cam, expected)
    relu_cam = ScoreCAM(model, model.layer).attribute(hand_input(), target=1, baselines=0.0)
    torch.testing.assert_close(relu_cam, torch.zeros_like(expected))


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_matches_reference_loop(score_mode: str, with_baseline: bool) -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    baseline = torch.rand(3, 3, 16, 16) if with_baseline else None
    classes = [0, 3, 4]
    cam = ScoreCAM(model, model.layer).attribute(
        x, target=classes, baselines=baseline, score_mode=score_mode, perturbations_per_eval=5
    )
    expected = reference_score_cam(model, model.layer, x, classes, score_mode, baseline)
    assert cam.shape == (3, 1, 8, 8)
    assert expected.abs().max() > 0
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_constant_channels_are_skipped_exactly(score_mode: str) -> None:
    # Two channels with a large negative bias are all zero after the ReLU: constant.
    model = SmallCNN(channels=6).eval()
    with torch.no_grad():
        model.layer.bias[[1, 4]] = -1e3
    x = torch.randn(2, 3, 16, 16)
    flat = layer_output(model, model.act, x).flatten(2)
    constant = flat.amax(2) == flat.amin(2)
    assert constant[:, [1, 4]].all() and constant.sum() == 4
    cam = ScoreCAM(model, model.act).attribute(x, target=1, score_mode=score_mode)
    expected = reference_score_cam(model, model.act, x, [1, 1], score_mode)
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)


def test_constant_channels_do_not_cost_forwards() -> None:
    model = TwoChannelSum()
    calls = []
    model.register_forward_pre_hook(lambda _m, inputs: calls.append(inputs[0].shape[0]))
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    x = torch.cat([x, torch.zeros(1, 1, 2, 2)])  # example 2: both channels constant
    with pytest.warns(UserWarning, match="constant"):
        cam = ScoreCAM(model, model.layer).attribute(x, target=0)
    # one capture forward of 2 examples + 2 masked inputs (only example 1 has masks)
    assert calls == [2, 2]
    torch.testing.assert_close(cam[1], torch.zeros(1, 2, 2))


def test_batch_invariance() -> None:
    model = SmallCNN().eval()
    x = torch.randn(4, 3, 16, 16)
    classes = [2, 0, 1, 4]
    batched = ScoreCAM(model, model.layer).attribute(x, target=classes, perturbations_per_eval=7)
    for i in range(4):
        single = ScoreCAM(model, model.layer).attribute(
            x[i : i + 1], target=classes[i], perturbations_per_eval=3
        )
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-6)


def test_every_captum_target_form_agrees() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    by_list = method.attribute(x, target=[3, 3])
    for target in (3, torch.tensor(3), torch.tensor([3, 3]), (3,), [(3,), (3,)]):
        torch.testing.assert_close(method.attribute(x, target=target), by_list)
    per_example = method.attribute(x, target=[1, 4])
    torch.testing.assert_close(per_example[1:], method.attribute(x[1:], target=4))
    torch.testing.assert_close(per_example[:1], method.attribute(x[:1], target=1))


def test_multidimensional_output_tuple_targets() -> None:
    base = SmallCNN().eval()

    def grid_output(x: torch.Tensor) -> torch.Tensor:  # (N, 5) -> (N, 1, 5)
        return base(x).unsqueeze(1)

    x = torch.randn(2, 3, 16, 16)
    # probability mode: softmax over dim 1 of a (N, 1, 5) output is 1 everywhere;
    # use logits so the tuple target is what is checked.
    tupled = ScoreCAM(grid_output, base.layer).attribute(
        x, target=[(0, 2), (0, 4)], score_mode="channel_softmax"
    )
    flat = ScoreCAM(base, base.layer).attribute(x, target=[2, 4], score_mode="channel_softmax")
    torch.testing.assert_close(tupled, flat)


def test_tuple_inputs_mask_every_input_at_its_own_size() -> None:
    model = TwoInputs().eval()
    image, other = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 4, 4)
    scale = torch.tensor([[1.0], [2.0]])
    cam = ScoreCAM(model, model.cnn.layer).attribute(
        (image, other), target=1, additional_forward_args=(scale,)
    )
    activations = layer_output(model.cnn, model.cnn.layer, image)
    expected = torch.zeros(2, 1, 8, 8)
    for n in range(2):
        for k in range(activations.shape[1]):
            a_k = activations[n, k]
            if a_k.max() == a_k.min():
                continue
            masks = []
            for size in ((16, 16), (4, 4)):
                up = F.interpolate(a_k[None, None], size=size, mode="bilinear")
                masks.append((up - up.min()) / (up.max() - up.min()))
            with torch.no_grad():
                out = model(image[n : n + 1] * masks[0], other[n : n + 1] * masks[1], scale[n])
            expected[n, 0] += out.softmax(1)[0, 1] * a_k
    torch.testing.assert_close(cam, F.relu(expected), rtol=1e-4, atol=1e-6)


def test_output_is_detached_and_layer_sized() -> None:
    model = SmallCNN()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    cam = ScoreCAM(model, model.layer).attribute(x, target=0)
    assert cam.shape == (1, 1, 8, 8) and not cam.requires_grad
    assert LayerAttribution.interpolate(cam, (16, 16)).shape == (1, 1, 16, 16)


def test_attribute_to_layer_input() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    cam = ScoreCAM(model, model.layer).attribute(x, target=0, attribute_to_layer_input=True)
    # the layer's input is the stem's output: 8 channels at 16 x 16, no upsampling
    assert cam.shape == (1, 1, 16, 16)
    stem_out = model.stem_act(model.stem(x))
    manual = torch.zeros(1, 1, 16, 16)
    for k in range(8):
        a_k = stem_out[0, k]
        if a_k.max() == a_k.min():
            continue
        h_k = (a_k - a_k.min()) / (a_k.max() - a_k.min())
        with torch.no_grad():
            manual[0, 0] += model(x * h_k).softmax(1)[0, 0] * a_k.detach()
    torch.testing.assert_close(cam, F.relu(manual), rtol=1e-4, atol=1e-6)


def test_layer_with_several_output_tensors_returns_a_tuple() -> None:
    class Split(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :3], x[:, 3:]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = SmallCNN(channels=6)
            self.split = Split()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.cnn.act(self.cnn.layer(self.cnn.stem_act(self.cnn.stem(x))))
            first, second = self.split(features)
            return self.cnn.head(torch.cat([first, second], 1).mean(dim=(2, 3)))

    model = Model().eval()
    x = torch.randn(2, 3, 16, 16)
    maps = ScoreCAM(model, model.split).attribute(x, target=0)
    assert isinstance(maps, tuple) and len(maps) == 2
    assert maps[0].shape == maps[1].shape == (2, 1, 8, 8)
    # each part's channels are scored exactly as the same channels of the whole
    # layer (the ReLU'd conv output), so without ReLU the two parts add up to it
    first, second = ScoreCAM(model, model.split).attribute(x, target=0, relu_attributions=False)
    whole = ScoreCAM(model, model.cnn.act).attribute(x, target=0, relu_attributions=False)
    torch.testing.assert_close(first + second, whole, rtol=1e-4, atol=1e-6)


def test_noise_tunnel_wraps_score_cam() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    tunnel = NoiseTunnel(method)
    smoothed = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=[1, 2])
    torch.testing.assert_close(smoothed, method.attribute(x, target=[1, 2]))
    noisy = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.5, target=[1, 2])
    assert noisy.shape == (2, 1, 8, 8) and torch.isfinite(noisy).all()


def test_get_name() -> None:
    assert ScoreCAM.get_name() == "Score-CAM"
