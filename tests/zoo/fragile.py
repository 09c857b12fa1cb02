"""A residual CNN with one fragile block for INT8.

Hazard: in block `blocks.2`, channel 0 of `conv1`'s activations is 1000x the others (the
next conv scales it back, so the float model computes the same function). Per-tensor int8
activation quantization then rounds the block's other channels away. INT8 compare must fail,
and the divergence localization must name `blocks.2` first.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels: int, fragile: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 1)
        if fragile:
            with torch.no_grad():
                self.conv1.weight[0] *= 1000
                self.conv1.bias[0] = self.conv1.bias[0].abs() * 1000
                self.conv2.weight[:, 0] /= 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FragileNet(nn.Module):
    def __init__(self, fragile: int | None = 2, blocks: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(8, i == fragile) for i in range(blocks)])
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.blocks(torch.relu(self.stem(x)))))
