"""Models that trace "successfully" and are wrong: qntz must catch each of them."""

import torch
from torch import nn


class DataDependentIf(nn.Module):
    """`if x.sum() > 0`: tracing freezes the branch taken by the example input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if x.sum() > 0:
            return y * 2
        return y - 1


class BakedBatch(nn.Module):
    """Reshapes with the batch size as a Python int: tracing freezes it into the graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.reshape(int(y.shape[0]), -1).sum(dim=1, keepdim=True).expand(int(x.shape[0]), 2)


class NoOnnxOperator(nn.Module):
    """`torch.linalg.inv` has no ONNX exporter (torchscript exporter, opset 17)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x @ x.transpose(-1, -2) + torch.eye(x.shape[-1])
        return torch.linalg.inv(square)
