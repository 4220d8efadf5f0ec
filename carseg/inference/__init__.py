"""Inference: full-resolution masks from a checkpoint or ONNX model, cut-outs and composites, export."""
