"""Captum's own metrics (`captum.metrics.infidelity`, `captum.metrics.sensitivity_max`)
with layer methods.

Two pitfalls:

* `infidelity` takes attributions shaped like the inputs; a layer map
  ``(N, 1, h, w)`` must first be brought to the input's shape:
  [input_shaped][captum_sscam.metrics.input_shaped].
* `sensitivity_max` iterates over the explanation as a tuple; a method that
  returns a bare Tensor (Grad-CAM, Score-CAM) is iterated over its batch rows,
  which fails for batch > 1 and is silently wrong for batch 1.
  [tuple_explanation][captum_sscam.metrics.tuple_explanation] wraps `attribute`
  to always return a tuple.

Recipe:

```python
from captum.metrics import infidelity, sensitivity_max
from captum_sscam import ScoreCAM
from captum_sscam.metrics import input_shaped, tuple_explanation

method = ScoreCAM(model, layer)
maps = method.attribute(x, target=cls)
infid = infidelity(model, perturb_func, x, input_shaped(maps, x), target=cls)
sens = sensitivity_max(tuple_explanation(method.attribute), x, target=cls)
```
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from captum._utils.common import _format_tensor_into_tuples
from torch import Tensor

from captum_sscam._core.resize import resize


def input_shaped(
    attributions: Tensor | tuple[Tensor, ...], inputs: Tensor | tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """Layer maps brought to each input's shape, for `captum.metrics.infidelity`.

    Each ``(N, 1, h, w)`` map (one for all inputs, or one per input) is resized
    bilinearly to the input's spatial size with
    `captum.attr.LayerAttribution.interpolate` and repeated over the
    input's channels (every channel of a pixel gets the pixel's value).
    Attributions already shaped like the input pass through unchanged.
    """
    maps = _format_tensor_into_tuples(attributions)
    images = _format_tensor_into_tuples(inputs)
    if len(maps) not in (1, len(images)):
        raise ValueError(
            f"got {len(maps)} attribution tensors for {len(images)} inputs; give one map "
            "for all inputs or one per input."
        )
    shaped = []
    for index, image in enumerate(images):
        layer_map = maps[index if len(maps) > 1 else 0]
        if layer_map.shape == image.shape:
            shaped.append(layer_map)
            continue
        if layer_map.dim() != image.dim() or layer_map.shape[:2] != (image.shape[0], 1):
            raise ValueError(
                f"attributions of shape {tuple(layer_map.shape)} are neither shaped like "
                f"input {index} {tuple(image.shape)} nor a (N, 1, ...) layer map of its "
                f"{image.shape[0]} examples."
            )
        resized = resize(layer_map, image.shape[2:])
        shaped.append(resized.expand_as(image).contiguous())
    return tuple(shaped)


def tuple_explanation(attribute: Callable[..., Any]) -> Callable[..., tuple[Tensor, ...]]:
    """``attribute`` returning a tuple always: the ``explanation_func`` for
    `captum.metrics.sensitivity_max`."""

    @functools.wraps(attribute)
    def explanation(*args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
        return _format_tensor_into_tuples(attribute(*args, **kwargs))

    return explanation
