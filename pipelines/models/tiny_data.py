"""Calibration and hold-out images for the quickstart: smooth random textures, not noise.

Real pipelines point `data:` at .npz files or an image folder; a callable like these is the
way to feed anything else (a DataLoader, a database, a generator).
"""

import numpy as np


def _images(seed: int, batches: int, batch: int = 4):
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        coarse = rng.uniform(0.0, 1.0, size=(batch, 3, 8, 8)).astype(np.float32)
        image = coarse.repeat(8, axis=2).repeat(8, axis=3)
        noise = rng.normal(0.0, 0.05, size=image.shape).astype(np.float32)
        yield np.clip(image + noise, 0.0, 1.0)


def calibration():
    """16 batches of 4 images."""
    yield from _images(seed=11, batches=16)


def holdout():
    """64 batches of 4 images, never seen by calibration."""
    yield from _images(seed=12, batches=64)
