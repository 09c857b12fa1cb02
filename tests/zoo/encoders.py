"""BERT-style encoders with a padding mask, written as Hugging Face writes them."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=bias)
        return self.out(attended.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim))


class MaskedEncoder(nn.Module):
    """`bias: block` masks padding out (what BERT does), `boolean` too, as a boolean mask
    (fully masked rows attend to nothing); `bias: bonus` only favours the unmasked tokens,
    which no padding mask can express. `pool: false` returns every token's state."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2, bias: str = "block",
                 pool: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.bias, self.pool = bias, pool
        self.embed = nn.Embedding(101, dim)  # token ids 0..100: `range: [0, 100]`, both ends
        self.attention = nn.ModuleList(SelfAttention(dim, heads) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        keep = mask[:, None, None, :].to(x.dtype)
        if self.bias == "block":
            bias = (1.0 - keep) * torch.finfo(x.dtype).min
        elif self.bias == "boolean":
            bias = keep > 0
        else:
            bias = keep * 3.0
        bias = bias.expand(-1, 1, tokens.shape[1], -1)
        for attention, norm in zip(self.attention, self.norms):
            x = norm(x + attention(x, bias))
        if not self.pool:
            return x
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def padded(count: int = 8, batch: int = 4, seq: int = 16):
    rng = np.random.default_rng(3)
    for _ in range(count):
        lengths = rng.integers(seq // 4, seq + 1, size=batch)
        mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
        yield {"tokens": rng.integers(1, 100, size=(batch, seq)) * mask, "mask": mask}


class TypedEncoder(MaskedEncoder):
    """A third input of token types with a single type, as RoBERTa has: 0 is its only
    valid value, although it looks like a 0/1 mask."""

    def __init__(self):
        super().__init__()
        self.types = nn.Embedding(1, 64)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
                ) -> torch.Tensor:
        return super().forward(tokens, mask) + self.types(types).mean(1)


def typed(count: int = 8):
    for feed in padded(count):
        yield {**feed, "types": np.zeros_like(feed["tokens"])}
