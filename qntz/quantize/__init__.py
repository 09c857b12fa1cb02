"""INT8 and FP16 quantization of ONNX models, and verification of what was quantized."""
