"""Preflight's `report.md`: verdicts first, then each finding with its place and fix."""

from __future__ import annotations

from typing import Any

from qntz.core.states import mark


def markdown(report: dict[str, Any], name: str) -> str:
    recommendation = report["recommendation"]
    lines = [
        f"# {name}: preflight",
        "",
        f"**Recommendation: `{recommendation}`**" if recommendation
        else "**No capture method gives a correct model**, but the ONNX export of the eager "
        "model agrees with eager on varied inputs: `capture: {uses: auto}` hands the eager "
        "model to the onnx step (no TorchScript or ExportedProgram artifact)."
        if report.get("eager_onnx")
        else "**No capture method gives a correct model.** Fix the errors below.",
        "",
        "| method | verdict |",
        "|---|---|",
        *[f"| {m} | {mark(v)} |" for m, v in report["verdicts"].items()],
        "",
        f"{report['counts']['error']} error(s), {report['counts']['warning']} warning(s); "
        f"ONNX checked at opset {report['opset']}.",
    ]
    if report["findings"]:
        lines += ["", "## Findings", "", "| rule | severity | methods | where | what | fix |",
                  "|---|---|---|---|---|---|"]
        for f in report["findings"]:
            where = f"`{f['file']}:{f['line']}`" if f["file"] else "—"
            lines.append(f"| {f['rule']} | {f['severity']} | {', '.join(f['methods'])} | "
                         f"{where} | {_cell(f['message'])} | {_cell(f['fix'])} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
