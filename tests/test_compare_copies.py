"""compare's model copies: the float64 reference and the perturbed one hold no more weights
than they need (issue 19), and the noise never writes into the live model's weights."""

from __future__ import annotations

import copy

import torch

from qntz.compare.evaluate import float64_copy, sharing_copy
from qntz.compare.rounding_noise import relative_noise


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 4)
        self.head.weight = self.embed.weight
        self.register_buffer("offset", torch.full((4,), 0.5))

    def forward(self, x):
        return self.head(torch.relu(self.embed(x))) + self.offset


class WritesItsWeight(Tied):
    """A forward whose in-place kernel returns a parameter's storage as its result."""

    def forward(self, x):
        return x @ self.head.weight.mul_(1.0) + self.offset


def test_the_float64_copy_is_widened_tensor_by_tensor_and_keeps_its_ties():
    model, x = Tied().eval(), torch.rand(3, 4)
    wide = float64_copy(model)
    assert wide.embed.weight.dtype == wide.offset.dtype == torch.float64
    assert wide.head.weight is wide.embed.weight
    assert model.embed.weight.dtype == torch.float32  # the live model is untouched
    torch.testing.assert_close(wide(x.double()), copy.deepcopy(model).double()(x.double()))


def test_the_perturbed_copy_shares_the_weights_and_the_noise_leaves_them_alone():
    model = WritesItsWeight().eval()
    before = model.head.weight.detach().clone()
    copied, weights = sharing_copy(model)
    assert copied.head.weight is model.head.weight and copied.offset is not model.offset
    with torch.no_grad(), relative_noise(1e-2, 0, weights):
        copied(torch.rand(3, 4))
    assert torch.equal(model.head.weight, before)
