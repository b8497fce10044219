"""One validated options object, carried from ``attribute`` to the engine under one name each.

The public ``attribute`` signatures stay flat, as Captum's are; each method
builds a ``ScoreCAMOptions`` from its arguments, which validates every
setting once, here, with an error that says what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from captum_sscam._core.caller_warnings import warn
from captum_sscam._core.checks import check_choice, check_flag, check_positive_int
from captum_sscam._core.hardware import (
    cpu_description,
    cpu_info,
    fastest_autocast_dtype,
    has_bf16_units,
)
from captum_sscam._core.scorer import SCORE_RULES

ScoreMode = Literal["probability", "sigmoid", "logit", "channel_softmax"]
SCORE_MODES: tuple[str, ...] = tuple(SCORE_RULES)
ChannelCriterion = Literal["variance", "energy"]
CHANNEL_CRITERIA: tuple[str, ...] = ("variance", "energy")
AUTOCAST_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
_NOTED_FP32: set[str] = set()  # device types told once that "auto" means fp32 there
_NOTED_SLOW: set[str] = set()  # device types told once that a forced bf16 is emulated there


@dataclass(frozen=True)
class ScoreCAMOptions:
    """The settings every Score-CAM variant shares (see ``attribute``)."""

    attribute_to_layer_input: bool = False
    relu_attributions: bool = True
    score_mode: str = "probability"
    perturbations_per_eval: int | None = None
    show_progress: bool | None = None
    autocast_dtype: torch.dtype | str | None = None
    channels_last: bool | None = None
    top_k_channels: int | None = None
    channel_criterion: str = "variance"
    compile_forward: bool = False

    def __post_init__(self) -> None:
        check_choice("score_mode", self.score_mode, SCORE_MODES)
        check_flag("relu_attributions", self.relu_attributions)
        check_flag("attribute_to_layer_input", self.attribute_to_layer_input)
        if self.perturbations_per_eval is not None:
            check_positive_int("perturbations_per_eval", self.perturbations_per_eval)
        check_flag("show_progress", self.show_progress, allow_none=True)
        if self.autocast_dtype is not None and not (
            self.autocast_dtype == "auto" or self.autocast_dtype in AUTOCAST_DTYPES
        ):
            raise ValueError(
                'autocast_dtype must be None, "auto", torch.bfloat16 or torch.float16, got '
                f"{self.autocast_dtype!r}."
            )
        check_flag("channels_last", self.channels_last, allow_none=True)
        if self.top_k_channels is not None:
            check_positive_int("top_k_channels", self.top_k_channels)
        check_choice("channel_criterion", self.channel_criterion, CHANNEL_CRITERIA)
        check_flag("compile_forward", self.compile_forward)

    def autocast_on(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype for ``device``: ``"auto"`` resolved to the hardware's fastest.

        A forced ``torch.bfloat16`` on a CPU without bf16 units (AMX or AVX512-BF16) is
        emulated there, and was measured more than 10x slower than fp32 (AMD EPYC with
        AVX2 only): that gets a one-time note naming ``"auto"``.
        """
        if self.autocast_dtype != "auto":
            if self.autocast_dtype == torch.bfloat16:
                _note_emulated_bf16(device)
            return self.autocast_dtype  # type: ignore[return-value]
        dtype = fastest_autocast_dtype(device)
        if dtype is None and device.type not in _NOTED_FP32:
            _NOTED_FP32.add(device.type)
            warn(
                f'autocast_dtype="auto": no reduced precision is faster than fp32 on this '
                f"{device.type} ({_describe(device)}), so the masked forwards run in fp32.",
            )
        return dtype

    @property
    def score_kind(self) -> str:
        """How an index target scores a masked input: ``"probability"``, ``"sigmoid"`` or
        ``"logit"`` (``_core.scorer.SCORE_RULES``)."""
        return SCORE_RULES[self.score_mode].score_kind

    @property
    def softmax_weights(self) -> bool:
        """Whether the channels' scores become weights by ``softmax_k`` (else ``w = a``)."""
        return SCORE_RULES[self.score_mode].softmax_weights


def _note_emulated_bf16(device: torch.device) -> None:
    """Tell once per device type where bf16 autocast has no hardware units to run on."""
    if device.type != "cpu" or device.type in _NOTED_SLOW:
        return
    if has_bf16_units(cpu_info().flags):
        return
    _NOTED_SLOW.add(device.type)
    warn(
        f"autocast_dtype=torch.bfloat16 on a CPU without bf16 units ({_describe(device)}): "
        "bf16 is emulated here, and masked forwards in it can be slower than in fp32 (more "
        'than 10x on an AMD EPYC with AVX2 only). autocast_dtype="auto" chooses the '
        "fastest precision of the hardware (fp32 on this CPU).",
    )


def _describe(device: torch.device) -> str:
    return cpu_description() if device.type == "cpu" else str(device)
