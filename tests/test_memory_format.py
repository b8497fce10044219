"""channels_last=None (the default) times real batches in both memory formats, keeps the faster
for the attribution object, and gives the contiguous map up to rounding."""

from __future__ import annotations

import torch

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam._core.scorer import MemoryFormatCalibration
from tests.tiny_models import SmallCNN


def formats_seen(method: ScoreCAM, x: torch.Tensor, batch: int = 4, **kwargs: object) -> list[bool]:
    seen: list[bool] = []

    def record(_module: object, args: tuple[torch.Tensor, ...]) -> None:
        image = args[0]
        channels_last = image.is_contiguous(memory_format=torch.channels_last)
        seen.append(channels_last and not image.is_contiguous())

    handle = method.forward_func.register_forward_pre_hook(record)
    try:
        method.attribute(x, target=[1, 2], perturbations_per_eval=batch, **kwargs)
    finally:
        handle.remove()
    return seen[1:]  # seen[0]: the capture forward


def test_automatic_format_times_both_then_keeps_its_choice() -> None:
    model = SmallCNN(channels=16).eval()
    method = ScoreCAM(model, model.layer)
    x = torch.randn(2, 3, 16, 16)
    first = formats_seen(method, x)
    (choice,) = method._memory_formats.values()
    # channels-last then contiguous; a second round unless channels-last won the first
    timed = 2 if first[2:4] != [True, False] else 4
    assert first[:timed] == [True, False] * (timed // 2)
    assert set(first[timed:]) == {choice}
    second = formats_seen(method, x)
    assert set(second) == {choice}  # no new calibration for the same shapes
    other_batch = formats_seen(method, x, batch=3)
    assert len(method._memory_formats) == 2 and other_batch[:2] == [True, False]


def timed_choice(channels_last_times: list[float], contiguous_times: list[float]) -> tuple:
    """The batches a calibration times (True: channels-last) and its choice, given times."""
    calibration = MemoryFormatCalibration(choices={}, key="call")
    times = {True: iter(channels_last_times), False: iter(contiguous_times)}
    trials = []
    while calibration.decided is None:
        trial = calibration.next_trial()
        trials.append(trial)
        calibration.record(trial, next(times[trial]))
    return trials, calibration.decided


def test_calibration_stops_early_only_when_channels_last_wins_its_handicapped_first_round() -> None:
    # channels-last faster in round 1, though it ran first: chosen after two batches
    assert timed_choice([1.0], [1.2]) == ([True, False], True)
    # contiguous faster in round 1 (perhaps only because it ran second): a second round,
    # then each format's best time
    assert timed_choice([1.3, 0.9], [1.0, 1.0]) == ([True, False, True, False], True)
    assert timed_choice([1.3, 1.1], [1.0, 1.05]) == ([True, False, True, False], False)


def test_forced_formats_and_short_calls_do_not_calibrate() -> None:
    model = SmallCNN(channels=16).eval()
    x = torch.randn(2, 3, 16, 16)
    assert set(formats_seen(ScoreCAM(model, model.layer), x, channels_last=True)) == {True}
    assert set(formats_seen(ScoreCAM(model, model.layer), x, channels_last=False)) == {False}
    tiny = SmallCNN(channels=2).eval()
    short = ScoreCAM(tiny, tiny.layer)
    assert set(formats_seen(short, x)) == {False}  # 4 items: too few batches to time
    assert short._memory_formats == {}


def test_automatic_format_gives_the_contiguous_map_up_to_rounding() -> None:
    model = SmallCNN(channels=16).eval()
    x = torch.randn(2, 3, 20, 20)
    for method in (ScoreCAM, SmoothedScoreCAM):
        kwargs = {"nt_samples": 3, "generator": torch.Generator().manual_seed(1)}
        kwargs = kwargs if method is SmoothedScoreCAM else {}
        contiguous = method(model, model.layer).attribute(
            x, target=[0, 4], channels_last=False, perturbations_per_eval=4, **kwargs
        )
        if method is SmoothedScoreCAM:
            kwargs["generator"] = torch.Generator().manual_seed(1)
        automatic = method(model, model.layer).attribute(
            x, target=[0, 4], perturbations_per_eval=4, **kwargs
        )
        scale = float(contiguous.abs().max())
        torch.testing.assert_close(automatic, contiguous, rtol=1e-4, atol=1e-4 * scale)
