"""Small models whose Score-CAM maps can be worked out by hand or checked quickly."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TwoChannelSum(nn.Module):
    """Layer: A_0 = x, A_1 = 1 - x (a 1x1 conv); logits: [sum(x), 0].

    On a 1x1x2x2 input the masks need no upsampling, so every number of
    Score-CAM can be computed by hand (see test_score_cam.py).
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.layer.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x: Tensor) -> Tensor:
        features = self.layer(x)
        total = x.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], dim=1) + 0 * features.sum()


class SmallCNN(nn.Module):
    """conv -> ReLU -> conv (``layer``, stride 2) -> ReLU (``act``) -> pool -> linear."""

    def __init__(self, channels: int = 6, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer = nn.Conv2d(8, channels, 3, stride=2, padding=1)
        self.stem_act = nn.ReLU()
        self.act = nn.ReLU()
        self.head = nn.Linear(channels, classes)
        for parameter in self.parameters():
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x: Tensor) -> Tensor:
        features = self.act(self.layer(self.stem_act(self.stem(x))))
        return self.head(features.mean(dim=(2, 3)))


class LinearHead(nn.Module):
    """Output linear in the input (so E[score] under zero-mean noise is exact).

    The layer (a conv) still runs, and gives the masks.
    """

    def __init__(self, size: int = 8, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.layer = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(3 * size * size, classes)
        for parameter in self.parameters():
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x: Tensor) -> Tensor:
        features = self.layer(x)
        return self.head(x.flatten(1)) + 0 * features.sum()


class SameResolution(nn.Module):
    """A layer at the input's resolution: no upsampling, so torchcam's normalise-
    then-upsample and the official upsample-then-normalise coincide exactly."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.layer = nn.Conv2d(3, 5, 3, padding=1)
        self.head = nn.Linear(5, 4)
        for parameter in self.parameters():
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.layer(x)).mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    """Two image inputs of different sizes and an extra non-spatial argument."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = SmallCNN()
        self.other = nn.Linear(3 * 4 * 4, 5)

    def forward(self, image: Tensor, other: Tensor, scale: Tensor | float = 1.0) -> Tensor:
        return self.cnn(image) * scale + self.other(other.flatten(1))
