"""A small image classifier: the quickstart's model (about 1.2 M parameters, 8 convolutions)."""

import torch
from torch import nn


def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.features = nn.Sequential(
            stage(3, widths[0], 1), stage(widths[0], widths[1], 2),
            stage(widths[1], widths[2], 2), stage(widths[2], widths[3], 2),
        )
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
