"""A small BERT-style sentence encoder: token ids and a padding mask in, a pooled embedding out.

Written the way Hugging Face encoders are (separate query/key/value projections,
`scaled_dot_product_attention` with an additive mask, GELU, post-norm residuals, mean pooling
over the mask), so that it exports to the same graph shapes real sentence-embedding models do.
"""

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


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.attention_norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.output_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, bias))
        return self.output_norm(x + self.down(F.gelu(self.up(x))))


class TinyEncoder(nn.Module):
    def __init__(self, vocab: int = 1000, dim: int = 64, heads: int = 4, layers: int = 2,
                 max_len: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.embed_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(Layer(dim, heads) for _ in range(layers))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        x = self.embed_norm(self.embed(tokens) + self.position(positions))
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        bias = bias.expand(-1, 1, tokens.shape[1], -1)
        for layer in self.layers:
            x = layer(x, bias)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def padded_batches(count: int = 16, batch: int = 4, seq: int = 32, vocab: int = 1000):
    """Token batches padded like tokenizer output: each row's length varies, the rest is 0."""
    import numpy as np

    rng = np.random.default_rng(7)
    for _ in range(count):
        lengths = rng.integers(seq // 4, seq + 1, size=batch)
        mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
        yield {"tokens": rng.integers(1, vocab, size=(batch, seq)) * mask, "mask": mask}
