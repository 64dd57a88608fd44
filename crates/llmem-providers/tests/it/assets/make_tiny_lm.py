"""Builds a tiny random causal LM in the optimum ONNX layout (with past key values).

    python make_tiny_lm.py OUT.onnx VOCAB_SIZE [SEED]

Inputs:  input_ids [b,s], attention_mask [b,t], position_ids [b,s] (int64),
         past_key_values.N.key|value [b,heads,past,head_dim] (float32)
Outputs: logits [b,s,vocab], present.N.key|value [b,heads,t,head_dim]
Two layers of single-block attention (causal and padding masks, residual), tied-free LM head.
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out, vocab = sys.argv[1], int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rng = np.random.default_rng(seed)
H, HEADS, D, LAYERS, MAXPOS = 32, 2, 16, 2, 4096

inits, nodes = [], []


def init(name, arr):
    inits.append(numpy_helper.from_array(np.asarray(arr), name))
    return name


def node(op, ins, outs, **kw):
    nodes.append(helper.make_node(op, ins, outs, **kw))
    return outs[0]


init("wte", rng.normal(0, 1.0, (vocab, H)).astype(np.float32))
init("wpe", rng.normal(0, 0.3, (MAXPOS, H)).astype(np.float32))
init("lm_head", rng.normal(0, 1.0, (H, vocab)).astype(np.float32))
init("shape_heads", np.array([0, 0, HEADS, D], dtype=np.int64))
init("shape_hidden", np.array([0, 0, H], dtype=np.int64))
init("scale", np.array(1.0 / np.sqrt(D), dtype=np.float32))
init("neg", np.array(-1e9, dtype=np.float32))
init("zero_f", np.array(0.0, dtype=np.float32))
init("one_i", np.array(1, dtype=np.int64))
init("zero_i", np.array(0, dtype=np.int64))
init("axes_12", np.array([1, 2], dtype=np.int64))
init("axes_13", np.array([1, 3], dtype=np.int64))
init("axes_01", np.array([0, 1], dtype=np.int64))
init("axes_1", np.array([1], dtype=np.int64))

x = node("Add", [node("Gather", ["wte", "input_ids"], ["tok"]), node("Gather", ["wpe", "position_ids"], ["pos"])], ["h0"])

# Masks, shared by the layers: [b,1,s,t] additive.
t_len = node("Gather", [node("Shape", ["attention_mask"], ["am_shape"]), "one_i"], ["t_len"])
cols = node("Range", ["zero_i", t_len, "one_i"], ["cols"])  # [t]
cols4 = node("Unsqueeze", [cols, "axes_01"], ["cols_u"])  # [1,1,t]
cols4 = node("Unsqueeze", [cols4, "axes_1"], ["cols4"])  # [1,1,1,t]
rows4 = node("Unsqueeze", ["position_ids", "axes_13"], ["rows4"])  # [b,1,s,1]
causal = node("Where", [node("Greater", [cols4, rows4], ["future"]), "neg", "zero_f"], ["causal"])
pad = node("Where", [node("Equal", ["attention_mask", "zero_i"], ["is_pad"]), "neg", "zero_f"], ["pad2"])
pad4 = node("Unsqueeze", [pad, "axes_12"], ["pad4"])  # [b,1,1,t]
mask = node("Add", [causal, pad4], ["mask"])

inputs = [
    helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
    helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
]
outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
for l in range(LAYERS):
    for w in "qkvo":
        init(f"w{w}{l}", rng.normal(0, 0.3, (H, H)).astype(np.float32))

    def heads(t, name):
        r = node("Reshape", [t, "shape_heads"], [f"{name}_r"])
        return node("Transpose", [r], [f"{name}_t"], perm=[0, 2, 1, 3])

    q = heads(node("MatMul", [x, f"wq{l}"], [f"q{l}"]), f"q{l}")
    k = heads(node("MatMul", [x, f"wk{l}"], [f"k{l}"]), f"k{l}")
    v = heads(node("MatMul", [x, f"wv{l}"], [f"v{l}"]), f"v{l}")
    pk, pv = f"past_key_values.{l}.key", f"past_key_values.{l}.value"
    for n in (pk, pv):
        inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", HEADS, "past", D]))
    k_all = node("Concat", [pk, k], [f"present.{l}.key"], axis=2)
    v_all = node("Concat", [pv, v], [f"present.{l}.value"], axis=2)
    for n in (k_all, v_all):
        outputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", HEADS, "total", D]))
    kt = node("Transpose", [k_all], [f"kt{l}"], perm=[0, 1, 3, 2])
    scores = node("Mul", [node("MatMul", [q, kt], [f"qk{l}"]), "scale"], [f"scores{l}"])
    probs = node("Softmax", [node("Add", [scores, mask], [f"masked{l}"])], [f"probs{l}"], axis=-1)
    ctx = node("Transpose", [node("MatMul", [probs, v_all], [f"ctx{l}"])], [f"ctx_t{l}"], perm=[0, 2, 1, 3])
    ctx = node("Reshape", [ctx, "shape_hidden"], [f"ctx_h{l}"])
    x = node("Add", [x, node("MatMul", [ctx, f"wo{l}"], [f"attn{l}"])], [f"h{l + 1}"])

node("MatMul", [x, "lm_head"], ["logits"])
graph = helper.make_graph(nodes, "tiny_causal_lm", inputs, outputs, inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="llmem-tests")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, out)
print(out)
