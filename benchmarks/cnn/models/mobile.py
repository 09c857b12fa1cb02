"""A MobileNetV2-style CNN (inverted residuals, depthwise convolutions, ReLU6), and the
sklearn digits, real handwritten digits, upsampled to 64x64 to train it on."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS = "mobile_digits.pt"


def inverted_residual(cin: int, cout: int, stride: int, expand: int = 4) -> nn.Module:
    mid = cin * expand
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
        nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
        nn.ReLU6(), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MobileNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        blocks = []
        for cin, cout, stride in [(16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1),
                                  (32, 64, 2), (64, 64, 1), (64, 96, 1)]:
            block = inverted_residual(cin, cout, stride)
            blocks.append(Residual(block) if cin == cout and stride == 1 else block)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(96, 256, 1, bias=False), nn.BatchNorm2d(256),
                                  nn.ReLU6())
        self.fc = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


def trained() -> nn.Module:
    model = MobileNet()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=64, mode="bilinear").repeat(1, 3, 1, 1)
    return ((x - 0.5) / 0.25).numpy(), data.target


def train(epochs: int = 6, train_count: int = 1200) -> float:
    """Train on the first digits, save the weights and the calibration / holdout sets;
    returns holdout accuracy against the labels."""
    x, y = (torch.tensor(a) for a in digits())
    torch.manual_seed(0)
    model, best = MobileNet(), 0.0
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(train_count).split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x[train_count:]).argmax(1) == y[train_count:]).float().mean()
        if accuracy >= best:
            best = float(accuracy)
            torch.save(model.state_dict(), WEIGHTS)
    np.savez("calib.npz", x=x[:256].numpy())
    np.savez("holdout.npz", x=x[train_count:].numpy())
    return best
