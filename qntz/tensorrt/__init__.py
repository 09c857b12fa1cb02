"""TensorRT and TensorRT-RTX engines: plan, build, layer report, and running them."""
