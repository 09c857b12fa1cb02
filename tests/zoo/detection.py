"""Plain-torch reproductions of what detectors, YOLO heads and their factories do to a
pipeline (issue 20): each docstring says the hazard and what qntz must say about it."""

import numpy as np
import torch
from torch import nn


class CachesOnForward(nn.Module):
    """Caches a tensor on its first forward, as Ultralytics' `Detect` head caches anchors:
    run once under inference_mode, the cached tensor poisons torch.export and ONNX export
    of the same module. Preflight must test each method on a model as capture sees it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shape = None

    def forward(self, x):
        y = self.conv(x)
        if self.shape != y.shape:
            self.anchors = torch.arange(y.shape[-1], dtype=y.dtype) + 0.5
            self.shape = y.shape
        return y * self.anchors


class _NumpyTanh(torch.autograd.Function):
    """tanh through NumPy: no capture method keeps it, but its `symbolic` gives the
    TorchScript ONNX exporter a Tanh node (TabNet's Entmax15Function is of this kind)."""

    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(np.tanh(x.detach().numpy()))

    @staticmethod
    def symbolic(g, x):
        return g.op("Tanh", x)


class CustomFunction(nn.Module):
    """trace, script and export fail (or disagree); the ONNX export of eager works: `auto`
    must hand the eager model to `onnx`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return _NumpyTanh.apply(self.fc(x))


class NoneOutput(nn.Module):
    """Returns `(features, None)` as audio encoders do without their optional input: the
    None is dropped from comparisons and named in the report."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(x), None


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


class ListOfImages(nn.Module):
    """Takes `List[Tensor]` of CHW images as torchvision's detectors do: eager iterates a
    batch tensor as it does the list, a scripted forward takes only the list. Preflight must
    call the scripted model with one (it said the scripted model "froze a value")."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.conv(image.unsqueeze(0))[0] for image in images])


class LoopsOverImages(nn.Module):
    """Loops over the batch in Python, as torchvision's detectors loop over their images:
    the TorchScript exporter unrolls it at the capture's batch, dynamo cannot export it.
    The onnx step's fix must say to give batch one size, not "try another opset"."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images):
        scores = []
        for image in images:
            y = self.conv(image.unsqueeze(0)).flatten()
            kept = y[y > 0]  # a data-dependent count, as a detector's kept boxes
            scores.append(kept.sum() if kept.numel() > 0 else y.sum())
        return torch.stack(scores)


class ReturnsDetections(nn.Module):
    """Returns a list of dicts of tensors, one per image, as torchvision's detectors do:
    torch.jit.trace cannot return that nesting; the ONNX exporter flattens it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return [{"boxes": row.flatten(1), "scores": row.amax((1, 2))} for row in y]


def half_model():
    """float16 weights: INT8 calibration needs a float32 graph, and must say so."""
    return SmallConv().half()


def train_mode_model():
    """Returned in train() mode with BatchNorm and Dropout: qntz switches it to eval() and
    says so."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5)).train()


def reads_a_config(**kwargs):
    """Raises inside the factory with no kwargs given (Ultralytics reading the pipeline file
    as its own config): the hint must not be about kwargs."""
    config = {"head": []}
    return config["backbone"]


class DivisibleBy4(nn.Module):
    """Refuses spatial sizes not divisible by 4, with diffusers' message: the hint must name
    height and width, not batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"your input dimensions {x.shape[-2:]} need to be divisible by 4")
        return self.conv(x)


class Encoder(nn.Module):
    """A clean 2-layer nn.TransformerEncoder: the ONNX exported from its trace bakes a
    Reshape to the capture's size; the onnx step must run what it wrote at other sizes."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True,
                                           dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.enc(x)


# --- what `qntz init` guesses ---------------------------------------------------------------

class TinyClassifier(nn.Module):
    """Conv, global pool, Linear: an ImageNet-style classifier declaring no size (224)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class TimmClassifier(TinyClassifier):
    """Declares its size as timm does: pretrained_cfg['input_size']."""

    pretrained_cfg = {"input_size": (3, 96, 96), "num_classes": 10}


class Detect(nn.Module):
    """Named like Ultralytics' head: the model looks like YOLO (640)."""

    def __init__(self):
        super().__init__()
        self.cv = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        return self.cv(x).flatten(2)


class TinyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.head = Detect()

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)))


class WrappedEncoder(nn.Module):
    """A text tower in a user's own wrapper (no transformers config): ids from the
    Embedding's range, and a 0/1 attention mask, whatever the vocabulary."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
        return self.fc(h.sum(1))


def half_classifier():
    """Every weight float16: its input is float16 too."""
    return TinyClassifier().half()
