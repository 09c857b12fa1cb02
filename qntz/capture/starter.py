"""`qntz init`: a starter pipeline written from a model factory, checked by trial calls.

The hard part of a first pipeline is `inputs`. They are guessed from `forward`'s signature
and the model itself (a transformers config's vocabulary, positions, image size and
channels; the first Conv's channels, the first LSTM's features, ...) and every guess is
checked by calling the model at the smallest, usual and largest sizes it will see, before
a file is written. Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qntz.capture.starter_hints import companions, image_sizes, retyped, weights_dtype
from qntz.capture.starter_yaml import recipe_for, render, write_atomically
from qntz.core.errors import PipelineError, QntzError
from qntz.core.process import seeded_torch
from qntz.core.wording import did_you_mean, plural

BATCH = [1, 4, 8]
SEQ = [2, 16, 128]  # token or time steps: min, opt, max (the max bounded by the model)
LENGTHS = (64, 128, 256, 1024, 16000)  # Conv1d signals
AUDIO_SAMPLES = 16000  # one second at 16 kHz
REQUIRED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY)


class StarterFailed(QntzError):
    """Nothing tells the model's inputs: exit 1, nothing written."""


class StarterIncomplete(PipelineError):
    """The file is written, but an input's guess was refused: a `# TODO` there; exit 2."""


@dataclass
class Guess:
    """The `inputs` section (name -> settings), each with a comment saying where it came
    from, and what fixes it if the model refuses it."""

    inputs: dict[str, dict[str, Any]]
    notes: dict[str, str] = field(default_factory=dict)
    fix: str = "write the `inputs` section by hand"
    todo: dict[str, str] = field(default_factory=dict)  # input -> why its guess was refused


def write_starter(factory: str, output: str | Path, kwargs: dict[str, Any] | None = None,
                  force: bool = False) -> Path:
    """Write a pipeline for `factory` at `output` (atomically; an existing file only with
    `force`) that validates and runs as is. Returns the file's path."""
    path = Path(output).resolve()
    _check_target(path, force)
    model = build(factory, path.parent, kwargs or {})
    guess = checked_guess(model)
    text = render(factory, kwargs or {}, guess, recipe_for(model), _name(factory))
    write_atomically(path, text, force)
    if guess.todo:
        raise _incomplete(path, text, guess)
    return path


def _incomplete(path: Path, text: str, guess: Guess) -> StarterIncomplete:
    """The error naming the first input left to fill in, at its line of the written file."""
    name, why = next(iter(guess.todo.items()))
    lines = text.splitlines()
    line = next((i for i, ln in enumerate(lines, 1) if ln.startswith(f"  {name}:")), 1)
    others = f" (and {', '.join(list(guess.todo)[1:])})" if len(guess.todo) > 1 else ""
    return StarterIncomplete(
        f"could not infer input '{name}'{others}: {why}; wrote {path.name} with what it "
        "could infer and a `# TODO` on that input", where=f"{path}:{line}",
        hint=f"{guess.fix}: write the shape and dtype forward() takes for '{name}' at "
        f"{path.name}:{line}, then `qntz run {path.name}`")


def _check_target(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise PipelineError(f"{path} already exists", hint="pass --force to overwrite it, "
                            "or -o another file")
    if not path.parent.is_dir():
        raise PipelineError(f"folder {path.parent} does not exist",
                            hint="create it, or -o a file in an existing folder")
    if path.exists() and not path.is_file():
        raise PipelineError(f"{path} is not a regular file", hint="-o a file name")


def _name(factory: str) -> str:
    last = factory.partition(":")[2].split(".")[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", last).strip(".-").lower()
    return (name or "model")[:64]


# --- the model -----------------------------------------------------------------------------

def build(factory: str, root: Path, kwargs: dict[str, Any]) -> Any:
    """The model as `load` builds it: imported next to the pipeline first, seeded, eval."""
    import torch

    from qntz.core.model_source import import_factory
    from qntz.core.schema import FACTORY_PATTERN

    if not re.match(FACTORY_PATTERN, factory):
        raise PipelineError(f"factory '{factory}' is not module.path:attr",
                            hint="e.g. models.tiny:TinyCNN (the module next to the pipeline "
                            "file, or installed)")
    make = import_factory(factory, root, "")
    _check_kwargs(factory, make, kwargs)
    try:
        with seeded_torch(0):
            model = make(**kwargs)
    except Exception as exc:
        raise QntzError(f"factory {factory} raised {type(exc).__name__}: {exc}",
                        hint="check --kwargs against the factory's signature") from exc
    if not isinstance(model, torch.nn.Module):
        raise PipelineError(f"factory {factory} returned {type(model).__name__}, not a "
                            "torch.nn.Module", hint="name an nn.Module class or a function "
                            "returning one")
    return model.eval()


def _check_kwargs(factory: str, make: Any, kwargs: dict[str, Any]) -> None:
    """An argument the factory does not take is a usage error, named before it is called."""
    try:
        params = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will say
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in names:
            raise PipelineError(f"--kwargs: {factory} takes no argument '{key}'"
                                f"{did_you_mean(key, names)}",
                                hint="its arguments: " + (", ".join(names) or "none"))


def forward_parameters(model: Any) -> tuple[list[str], list[str]]:
    """forward's required parameters and all its named ones, as forward names them."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return [], []
    named = [p.name for p in params if p.kind in REQUIRED]
    required = [p.name for p in params if p.kind in REQUIRED and p.default is p.empty]
    return required, named


# --- guesses -------------------------------------------------------------------------------

def guesses(model: Any) -> list[Guess]:
    """Candidate `inputs` sections, most likely first."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "main_input_name"):
        found = _transformers(model, config)
        if found is not None:
            return [found]
    required, _ = forward_parameters(model)
    if not required:
        raise StarterFailed("forward() takes no required argument, and the model carries no "
                            "transformers config to tell its inputs",
                            hint="write the `inputs` section by hand (see `qntz steps`)")
    dtype = weights_dtype(model)
    return [Guess(*companions({n: retyped(spec, dtype) for n in required},
                              {n: note + (f"; weights are {dtype}" if dtype else "")
                               for n in required}), fix)
            for spec, note, fix in _layer_guesses(model)]


def _transformers(model: Any, config: Any) -> Guess | None:
    _, named = forward_parameters(model)
    main = model.main_input_name
    if main not in named:
        return None
    if main == "input_ids" and getattr(config, "vocab_size", None):
        return _text(config, named)
    if main == "pixel_values":
        size = _pair(getattr(config, "image_size", 224))
        channels = getattr(config, "num_channels", 3)
        return Guess({main: {"shape": ["batch", channels, *size], "dtype": "float32",
                             "dynamic": {"batch": BATCH}, "range": [0.0, 1.0]}},
                     {main: f"config.num_channels {channels}, config.image_size "
                      f"{getattr(config, 'image_size', 224)}"},
                     "check config.image_size / num_channels")
    if main == "input_values":
        return Guess({main: {"shape": ["batch", AUDIO_SAMPLES], "dtype": "float32",
                             "dynamic": {"batch": BATCH}, "range": [-1.0, 1.0]}},
                     {main: "raw audio: one second at 16 kHz, values in [-1, 1]"},
                     "set the number of samples your audio has")
    return None


def _text(config: Any, named: list[str]) -> Guess:
    vocab = config.vocab_size
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None) or SEQ[2]
    high = min(SEQ[2], positions)
    seq = [min(SEQ[0], high), min(SEQ[1], high), high]
    dims = {"batch": BATCH, "seq": seq}
    masked = "attention_mask" in named
    ids: dict[str, Any] = {"shape": ["batch", "seq"], "dtype": "int64", "dynamic": dims,
                           "range": [0, vocab - 1]}
    if masked:
        ids["role"] = "tokens"
    inputs = {"input_ids": ids}
    notes = {"input_ids": f"ids 0..{vocab - 1} (config.vocab_size {vocab}); seq up to {high} "
             f"(max_position_embeddings {positions})" + ("; id 0 where the mask pads"
                                                          if masked else "")}
    if masked:
        inputs["attention_mask"] = {"shape": ["batch", "seq"], "dtype": "int64",
                                    "range": [0, 1], "role": "mask"}
        notes["attention_mask"] = "rows padded with trailing zeros, varied lengths"
    types = getattr(config, "type_vocab_size", None)
    if "token_type_ids" in named and types:
        inputs["token_type_ids"] = {"shape": ["batch", "seq"], "dtype": "int64",
                                    "range": [0, types - 1], **({"constant": True}
                                                                if types == 1 else {})}
        notes["token_type_ids"] = f"config.type_vocab_size {types}"
    return Guess(_forward_order(inputs, named), notes,
                 "check config.vocab_size / max_position_embeddings")


def _forward_order(inputs: dict[str, Any], named: list[str]) -> dict[str, Any]:
    return {n: inputs[n] for n in sorted(inputs, key=named.index)}


def _pair(size: Any) -> list[int]:
    return [int(size[0]), int(size[1])] if isinstance(size, (list, tuple)) else [int(size)] * 2


def _layer_guesses(model: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(input settings, note, fix) from the first layers that tell what they take."""
    out: list[tuple[dict[str, Any], str, str]] = []
    for module in list(_known_layers(model))[:3]:
        out += _from_layer(module, model)
    return out


def _known_layers(model: Any) -> Any:
    import torch.nn as nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LSTM, nn.GRU, nn.RNN, nn.Embedding,
             nn.Linear, nn.MultiheadAttention, nn.LayerNorm)
    return (m for m in model.modules() if isinstance(m, kinds))


def _from_layer(module: Any, model: Any) -> list[tuple[dict[str, Any], str, str]]:
    import torch.nn as nn

    name = type(module).__name__
    batch = {"batch": BATCH}
    if isinstance(module, nn.Conv2d):
        channels = module.in_channels
        sizes = image_sizes(model)
        return [({"shape": ["batch", channels, s, s], "dtype": "float32", "dynamic": batch,
                  "range": [0.0, 1.0]}, f"first Conv2d takes {plural(channels, 'channel')}; "
                 f"{s}x{s} works", "set the image size the model was trained on")
                for s in sizes]
    if isinstance(module, (nn.Conv1d, nn.Conv3d)):
        channels, rank = module.in_channels, 1 if isinstance(module, nn.Conv1d) else 3
        return [({"shape": ["batch", channels, *([n] if rank == 1 else [8, 32, 32])],
                  "dtype": "float32", "dynamic": batch, "range": [0.0, 1.0]},
                 f"first {name} takes {plural(channels, 'channel')}", "set the signal size")
                for n in (LENGTHS if rank == 1 else (0,))]
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        first = module.batch_first
        shape = ["batch", "seq", module.input_size] if first else \
            ["seq", "batch", module.input_size]
        return [({"shape": shape, "dtype": "float32", "dynamic": {"batch": BATCH, "seq": SEQ[:2]
                  + [64]}, "range": [-1.0, 1.0]}, f"first {name}: input_size "
                 f"{module.input_size}, batch_first {first}", "check the sequence layout")]
    if isinstance(module, nn.Embedding):
        count = module.num_embeddings
        return [({"shape": ["batch", "seq"], "dtype": "int64",
                  "dynamic": {"batch": BATCH, "seq": SEQ}, "range": [0, count - 1]},
                 f"first Embedding: ids 0..{count - 1}", "check the token range")]
    features = _features(module)
    dims = {"batch": BATCH, "seq": SEQ}
    return [({"shape": ["batch", features], "dtype": "float32", "dynamic": batch,
              "range": [-1.0, 1.0]}, f"first {name}: {features} features", "check features"),
            ({"shape": ["batch", "seq", features], "dtype": "float32", "dynamic": dims,
              "range": [-1.0, 1.0]}, f"first {name}: {features} features per step",
             "check features")]


def _features(module: Any) -> int:
    for attr in ("in_features", "embed_dim"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return int(module.normalized_shape[-1])


# --- trial calls ---------------------------------------------------------------------------

def checked_guess(model: Any) -> Guess:
    """The first guess the model accepts at its smallest, usual and largest sizes; a dynamic
    dim the model refuses at its ends is narrowed to the usual size."""
    candidates = guesses(model)
    failure: tuple[Guess, Exception] | None = None
    for guess in [*candidates, *_mixed(candidates)]:
        error = trial(model, guess.inputs, "opt")
        if error is None:
            return _settle_dims(model, guess)
        failure = failure or (guess, error)
    if failure is None:
        raise StarterFailed("no layer of the model tells the shapes forward() takes",
                            hint="write the pipeline's `inputs` section by hand (see README)")
    guess, error = failure
    tried = plural(len(candidates), "guess", "guesses")
    why = (f"forward() refused {{spec}} ({type(error).__name__}: "
           f"{' '.join(str(error).split())[:160]}; {tried} tried)")
    todo = {n: why.format(spec=f"{guess.inputs[n]['dtype']} "
                          f"[{', '.join(map(str, guess.inputs[n]['shape']))}]")
            for n in _blamed(guess, error)}
    return Guess(guess.inputs, guess.notes, guess.fix, todo)


def _mixed(candidates: list[Guess]) -> list[Guess]:
    """With several inputs, the first guess with one later input taken from another guess
    (`forward(feats, meta)`: `meta` may be what a later layer takes)."""
    if not candidates or len(candidates[0].inputs) < 2:
        return []
    first, names = candidates[0], list(candidates[0].inputs)
    mixed = []
    for name in names[1:]:
        for other in candidates[1:]:
            if other.inputs[name] != first.inputs[name]:
                mixed.append(Guess({**first.inputs, name: other.inputs[name]},
                                   {**first.notes, name: other.notes.get(name, "")}, first.fix))
    return mixed


def _blamed(guess: Guess, error: Exception) -> list[str]:
    """The inputs the error names (as words, longer than a letter); else those guessed
    without a layer of their own to go by: every input after the first (whose guess the
    model's first layer gave), or the only one."""
    named = [n for n in guess.inputs
             if len(n) > 1 and re.search(rf"\b{re.escape(n)}\b", str(error))]
    return named or list(guess.inputs)[1:] or list(guess.inputs)


def trial(model: Any, section: dict[str, Any], at: str) -> Exception | None:
    """Call the model on generated inputs at `at` sizes (min, opt or max); the error, if any."""
    import numpy as np
    import torch

    from qntz.core.inputs import all_dims, generate_feed, parse_inputs
    from qntz.runtime.torchio import to_torch

    try:
        inputs = parse_inputs(section, lambda *path: "inputs")
    except PipelineError as exc:
        return exc
    index = {"min": 0, "opt": 1, "max": 2}[at]
    sizes = {d: r[index] for d, r in all_dims(inputs).items()}
    feed = generate_feed(inputs, sizes, np.random.default_rng(0))
    args, kwargs = to_torch(feed, inputs, model)
    try:
        with torch.inference_mode():
            model(*args, **kwargs)
    except Exception as exc:  # any refusal is an answer: this guess does not fit
        return exc
    return None


def _settle_dims(model: Any, guess: Guess) -> Guess:
    """Keep the dynamic ranges the model takes at both ends; else only the batch dynamic,
    else fixed sizes (the usual ones)."""
    for keep in ({"*"}, {"batch"}, set()):
        narrowed = _narrowed(guess, keep)
        if all(trial(model, narrowed.inputs, at) is None for at in ("min", "max")):
            return narrowed
    return _narrowed(guess, set())


def _narrowed(guess: Guess, keep: set[str]) -> Guess:
    """A copy of `guess` whose named dims outside `keep` ("*": all) are fixed at opt."""
    if "*" in keep:
        return guess
    ranges = {d: r for s in guess.inputs.values() for d, r in s.get("dynamic", {}).items()}
    inputs: dict[str, dict[str, Any]] = {}
    for name, spec in guess.inputs.items():
        shape = [d if not isinstance(d, str) or d in keep else ranges[d][1]
                 for d in spec["shape"]]
        dynamic = {d: r for d, r in spec.get("dynamic", {}).items() if d in keep}
        inputs[name] = {**{k: v for k, v in spec.items() if k != "dynamic"}, "shape": shape,
                        **({"dynamic": dynamic} if dynamic else {})}
    notes = {n: f"{text}; sizes fixed where the model refused others"
             for n, text in guess.notes.items()}
    return Guess(inputs, notes, guess.fix)
