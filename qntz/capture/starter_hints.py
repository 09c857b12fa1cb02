"""What `qntz init` reads from a model beyond its layers: the image size it declares or
is deployed at, the dtype of its weights, and the inputs that go beside token ids."""

from __future__ import annotations

from typing import Any

IMAGE_SIZES = (32, 64, 96, 128, 224, 256, 299, 16, 28)


def pair(size: Any) -> list[int]:
    return [int(size[0]), int(size[1])] if isinstance(size, (list, tuple)) else [int(size)] * 2


MASKS = ("attention_mask", "mask", "padding_mask", "key_padding_mask")
TYPE_IDS = ("token_type_ids", "segment_ids")


def _is_mask(name: str) -> bool:
    return name in MASKS or name.endswith("_mask")


def companions(inputs: dict[str, dict[str, Any]], notes: dict[str, str]
               ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Inputs that go beside token ids whatever the embedding says: a mask is 0/1 (rows
    padded with trailing zeros), token type ids are 0/1; their shape is the ids'."""
    ids = next((spec for name, spec in inputs.items() if spec["dtype"] == "int64"
                and not _is_mask(name) and name not in TYPE_IDS), None)
    if ids is None:
        return inputs, notes
    inputs, notes = dict(inputs), dict(notes)
    for name in inputs:
        if _is_mask(name):
            inputs[name] = {"shape": list(ids["shape"]), "dtype": "int64", "range": [0, 1],
                            "role": "mask"}
            notes[name] = "a mask: 0/1, rows padded with trailing zeros, varied lengths"
        elif name in TYPE_IDS:
            inputs[name] = {"shape": list(ids["shape"]), "dtype": "int64", "range": [0, 1]}
            notes[name] = "token type ids 0/1"
    if any(s.get("role") == "mask" for s in inputs.values()):
        for name, spec in inputs.items():
            if spec is ids:
                inputs[name] = {**spec, "role": "tokens"}
    return inputs, notes


def weights_dtype(model: Any) -> str | None:
    """float16 or bfloat16 when every floating weight of the model is: its float inputs
    must be too. None for float32 (or mixed) weights."""
    import torch

    kinds = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    names = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
    return names[next(iter(kinds))] if len(kinds) == 1 and next(iter(kinds)) in names else None


def retyped(spec: dict[str, Any], dtype: str | None) -> dict[str, Any]:
    return {**spec, "dtype": dtype} if dtype and spec["dtype"] == "float32" else dict(spec)


YOLO_SIZE, CLASSIFIER_SIZE = 640, 224  # what deployments run when the model says nothing
YOLO_HEADS = ("Detect", "Segment", "Pose", "OBB", "v10Detect", "YOLOEDetect")


def image_sizes(model: Any) -> list[int]:
    """The size the model declares first (transformers' config.image_size, timm's
    pretrained_cfg / default_cfg input_size, Ultralytics' args.imgsz, torchvision's weights
    meta), else the size its kind is deployed at (640 for YOLO, 224 for a classifier), then
    the small sizes that make any conv net run."""
    declared = _declared_size(model)
    first = [declared] if declared else [_usual_size(model)]
    return [s for s in first if s] + [s for s in IMAGE_SIZES if s not in first]


def _declared_size(model: Any) -> int | None:
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size:
        return pair(size)[0]
    for attr in ("pretrained_cfg", "default_cfg"):  # timm: input_size (3, H, W)
        cfg = getattr(model, attr, None)
        shape = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(shape, (list, tuple)) and len(shape) == 3:
            return int(shape[-1])
    args = getattr(model, "args", None)  # Ultralytics keeps its training arguments
    imgsz = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(imgsz, (int, list, tuple)) and imgsz:
        return pair(imgsz)[0]
    # torchvision's Weights, when a factory keeps them on the model: their preprocessing
    # crops (classifiers) or resizes (detectors) to the size the weights were trained at
    preset = getattr(getattr(model, "weights", None), "transforms", None)
    keywords = getattr(preset, "keywords", None) or {}
    size = keywords.get("crop_size") or keywords.get("resize_size")
    return pair(size)[0] if isinstance(size, (int, list, tuple)) and size else None


def _usual_size(model: Any) -> int | None:
    import torch.nn as nn

    classes = {type(m).__name__ for m in model.modules()}
    if "yolo" in type(model).__name__.lower() or classes & set(YOLO_HEADS):
        return YOLO_SIZE
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear)
    if any(isinstance(m, pools) for m in model.modules()):
        return CLASSIFIER_SIZE
    return None
