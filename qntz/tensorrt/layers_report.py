"""The engine's `layers.md`: what was built, in which precision, for which shapes."""

from __future__ import annotations

from collections import Counter
from typing import Any


def markdown(summary: dict[str, Any], step_id: str) -> str:
    compute = summary["compute_layers"]
    by_precision = Counter(c["precision"] for c in compute)
    coverage = summary["precision_coverage"]
    lines = [
        f"# {step_id}: TensorRT engine",
        "",
        f"- runtime: {summary['runtime']} {summary['runtime_version']}, targets: "
        f"{', '.join(summary['targets']) or 'this GPU'}",
        f"- asked precision: **{summary['precision']}**, compute layers in it: "
        + ("not checked (builder flags)" if coverage is None else f"{coverage:.0%}"),
        f"- engine: {summary['engine_bytes'] / 1024:.0f} KiB, built from "
        f"`{summary['source']}` (build time in timing.json)",
        f"- network layers: {summary['layers']}; by output type: "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["layers_by_output_type"].items())),
        "- engine inspector: " + (summary["engine_inspection"]
                                  if isinstance(summary["engine_inspection"], str)
                                  else "per-layer report in layers.json"),
        "",
        "## Compute layers by precision",
        "",
        "| precision | layers |",
        "|---|---|",
        *[f"| {p} | {n} |" for p, n in by_precision.most_common()],
        "",
        "## Inputs and outputs",
        "",
        "| tensor | dtype | shape | profiles (min / opt / max) |",
        "|---|---|---|---|",
    ]
    for tensor in summary["inputs"]:
        ranges = "; ".join(f"{p[tensor['name']]['min']} / {p[tensor['name']]['opt']} / "
                           f"{p[tensor['name']]['max']}" for p in summary["profiles"]
                           if tensor["name"] in p)
        lines.append(f"| {tensor['name']} (in) | {tensor['dtype']} | {tensor['shape']} | "
                     f"{ranges} |")
    lines += [f"| {t['name']} (out) | {t['dtype']} | {t['shape']} | |"
              for t in summary["outputs"]]
    return "\n".join(lines) + "\n"
