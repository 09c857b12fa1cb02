"""Recurrent models: LSTM and GRU layers that ONNX Runtime quantizes (or not) as whole ops.

Hazard: a quantized LSTM becomes one `DynamicQuantizeLSTM` node, not integer MatMuls, and
ONNX Runtime has no quantized GRU; qntz must count what it wrote and say what stayed float.
"""

import torch
from torch import nn


class SmallLSTM(nn.Module):
    """Two stacked LSTM layers (two LSTM nodes in ONNX) and a linear head."""

    def __init__(self, features: int = 32, hidden: int = 128, classes: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class SmallGRU(nn.Module):
    """A GRU layer and a linear head: ONNX Runtime cannot quantize the GRU."""

    def __init__(self, features: int = 32, hidden: int = 128, classes: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])
