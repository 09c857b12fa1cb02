"""Running models and reading ONNX files: torch and ONNX Runtime calls, metrics."""
