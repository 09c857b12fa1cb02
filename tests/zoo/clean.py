"""Clean models: every capture method must give the same numbers as eager."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


class MobileBlock(nn.Module):
    """Stem, then expand, depthwise, project, as in MobileNet and EfficientNet-Lite (ReLU6)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.expand(nn.functional.relu6(self.stem(x))))
        x = nn.functional.relu6(self.depthwise(x))
        return self.head(self.project(x).mean(dim=(2, 3)))


class MLP(nn.Module):
    def __init__(self, features: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.GELU(), nn.Linear(64, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoOutputs(nn.Module):
    """Returns a dict of two tensors: outputs are flattened in order."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 4)
        self.b = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.a(x), "score": torch.sigmoid(self.b(x))}


def make_mlp(features: int = 32) -> nn.Module:
    return MLP(features)


class TinyTransformer(nn.Module):
    """One encoder layer over float features, dynamic batch and sequence."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, 4, dim * 2, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class PooledHead(nn.Module):
    """A Linear over a sequence (exported as MatMul) and one over its mean (as Gemm)."""

    def __init__(self, features: int = 32):
        super().__init__()
        self.mix = nn.Linear(features, features)
        self.head = nn.Linear(features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mix(x)).mean(dim=1))


class Subnormal(nn.Module):
    """Outputs below float32's normal range (~1e-42, as MobileViT's first output): zero."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) * 1e-42
