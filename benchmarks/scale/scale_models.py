"""Production-size models with random weights, built from transformers configs (no downloads).

GPT-2 at 124M / 354M / 642M parameters (`GPT2`, taking `input_ids` + `attention_mask`,
returning logits) and a ViT (`ViT`, taking `pixel_values`, returning last_hidden_state).
Weights come from a fixed seed, so every process that builds a model gets the same one.
"""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GPT2_SIZES = {"124m": (12, 768, 12), "354m": (24, 1024, 16), "642m": (36, 1280, 20)}


class GPT2(nn.Module):
    """GPT-2 language model (random weights), logits for every position."""

    def __init__(self, n_layer: int = 12, n_embd: int = 768, n_head: int = 12, seed: int = 0):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)
        self.model = GPT2LMHeadModel(config).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).logits


class ViT(nn.Module):
    """ViT encoder (random weights): last_hidden_state; hidden 1280 x 32 layers is ~630M."""

    def __init__(self, hidden: int = 1280, layers: int = 32, heads: int = 16,
                 image: int = 224, patch: int = 14, seed: int = 0):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(seed)
        config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * hidden,
                           image_size=image, patch_size=patch)
        self.model = ViTModel(config, add_pooling_layer=False).eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state
