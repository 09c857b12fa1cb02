"""`--help`, `validate`, `status` and a fully cached `run` never import torch; a fully
cached run imports neither numpy nor jsonschema (the pipeline was validated before)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO

PROBE = (
    "import sys\n"
    "from qntz.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt_rtx', 'numpy', "
    "'jsonschema') "
    "if m in sys.modules)\n"
    "print('HEAVY', ','.join(heavy))\n"
    "sys.exit(code)\n"
)


def imported(ws, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ws.root, capture_output=True,
                          text=True)
    heavy = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY"))
    return proc.returncode, heavy.removeprefix("HEAVY").strip()


def test_light_commands_do_not_import_torch(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    quickstart = "pipelines/quickstart.yaml"
    assert imported(ws, "validate", quickstart) == (0, "jsonschema")
    assert imported(ws, "status", quickstart) == (0, "jsonschema")
    assert imported(ws, "steps") == (0, "")
    code, heavy = imported(ws, "run", quickstart)
    assert code == 0 and "torch" in heavy  # the first run does the work
    assert imported(ws, "run", quickstart) == (0, "")
    assert imported(ws, "status", quickstart, "--json") == (0, "")
    assert imported(ws, "validate", quickstart) == (0, "")


def test_remembered_validation_never_accepts_a_changed_pipeline(ws):
    shutil.copytree(REPO / "pipelines", ws.root / "pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    quickstart = ws.root / "pipelines" / "quickstart.yaml"
    (ws.root / ".qntz" / "cache").mkdir()
    assert imported(ws, "validate", str(quickstart)) == (0, "jsonschema")
    assert (ws.root / ".qntz" / "cache" / "validated.json").is_file()
    quickstart.write_text(quickstart.read_text().replace("opset: 17", "opset: seventeen"))
    proc = subprocess.run([sys.executable, "-m", "qntz", "validate", str(quickstart)],
                          cwd=ws.root, capture_output=True, text=True)
    assert proc.returncode == 2 and "opset" in proc.stderr


def test_help_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "qntz", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "run" in proc.stdout
    assert "| torch" not in proc.stderr
