"""Writes the dynamically quantised copy of the MiniLM embedding model.

The shipped model stores its weights as int8 but multiplies in float: ONNX Runtime turns each
weight back into f32 when it loads the model. This script writes that f32 graph (the weights
folded once), then quantises its weight matrices to int8 per output channel, with the inputs
quantised at run time (`quantize_dynamic`), so that the matrix products run in int8.
Usage: quantize_minilm.py MODEL_IN MODEL_OUT
"""

import logging
import os
import sys
import tempfile

import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

# The quantiser advises pre-processing on every call; this graph needs none.
logging.getLogger().setLevel(logging.ERROR)
src, dst = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    folded = os.path.join(tmp, "folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded
    ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    partial = dst + ".partial"
    quantize_dynamic(
        folded,
        partial,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        # Only products with a constant weight: the attention's products of two activations
        # stay in float, where quantising them costs the most accuracy.
        extra_options={"MatMulConstBOnly": True},
    )
    os.replace(partial, dst)
