"""Loading the model, capturing it (trace, script, torch.export) and exporting ONNX."""
