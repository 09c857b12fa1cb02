"""Models that trace "successfully" and are wrong: qntz must catch each of them."""

import math

import numpy as np
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


class NumpyCall(nn.Module):
    """A NumPy call inside forward: tracing bakes its result in as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squashed = np.tanh(x.detach().numpy())
        return torch.from_numpy(squashed) * 2


class ItemScale(nn.Module):
    """`.item()` turns a tensor value into a Python float that tracing freezes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x.abs().max().item()
        return x / (peak + 1.0)


class MathOnTensor(nn.Module):
    """`math.exp` on a tensor value: computed outside the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * math.exp(x.mean())


class DeviceLiteral(nn.Module):
    """A tensor created on a literal device: tracing pins the graph to it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ones(x.shape[-1], device="cpu")


class NumpyOutput(nn.Module):
    """Returns a NumPy array: not a tensor, so no exporter can carry it."""

    def forward(self, x: torch.Tensor):
        return (x * 2).detach().numpy()


class TwoDevices(nn.Module):
    """A buffer on another device than the parameters (meta stands in for a second GPU)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 4)
        self.register_buffer("table", torch.ones(4, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class GeneratorSum(nn.Module):
    """A generator expression: TorchScript refuses it; trace and export are fine."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16, 16) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(layer(x) for layer in self.layers)


class TolistLoop(nn.Module):
    """`.tolist()` turns a tensor into Python numbers that a loop then uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = x.mean(dim=0).tolist()
        return x * sum(weights)


class MissingTypeHint(nn.Module):
    """An unannotated int argument: TorchScript assumes Tensor and refuses the default."""

    def forward(self, x, factor=2):
        return x * factor


LOOKUP = {"scale": 3.0}


class UsesGlobal(nn.Module):
    """Reads a module-level dict: TorchScript cannot use arbitrary Python globals."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * LOOKUP["scale"]


class ConstantGate(nn.Module):
    """A branch on a constructor constant, not on data: every capture method is right."""

    def __init__(self, sigma: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("sigma", torch.full((4,), sigma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if bool((self.sigma > 0).all()):
            return y * self.sigma.view(1, -1, 1, 1)
        return y



class NestedBranch(nn.Module):
    """The hazard of DataDependentIf inside `blocks.1`: localization must name that block."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.ReLU(), DataDependentIf(), nn.Conv2d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
