"""Normalization over space after a conv (MONAI-like). Hazard: a constant input (the range
ends) gives the norm zero variance, so its output is rounding noise over sqrt(eps) and a
correct runtime differs from eager there; qntz must pass the correct conversion and say
which rule decided."""

import torch
from torch import nn


def _block(cin: int, cout: int, norm: str, stride: int = 1) -> nn.Sequential:
    layer = nn.InstanceNorm2d(cout, affine=True) if norm == "instance" \
        else nn.GroupNorm(2, cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), layer, nn.PReLU())


class NormUNet(nn.Module):
    """Down, down, up, with a skip: MONAI's UNet in miniature."""

    def __init__(self, norm: str = "instance"):
        super().__init__()
        self.down1 = _block(3, 8, norm, 2)
        self.down2 = _block(8, 16, norm, 2)
        self.mid = _block(16, 16, "group")
        self.up = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, 2), nn.InstanceNorm2d(8))
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.down1(x)
        b = self.up(self.mid(self.down2(a)))
        return self.out(torch.cat([a, b], 1))


def monai_unet() -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(8, 16, 32, 64),
                strides=(2, 2, 2), num_res_units=2, norm="instance")


def monai_unet_3d() -> nn.Module:
    """A 32³ volume: on a constant input ONNX Runtime's InstanceNormalization mean is
    hundreds of ulps off (a plain sum of 32768 values), torch's under one."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
                strides=(2, 2), num_res_units=1).eval()
