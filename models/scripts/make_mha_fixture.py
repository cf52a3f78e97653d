#!/usr/bin/env python3
"""Writes a tiny decoder whose self-attention is com.microsoft MultiHeadAttention with past, the
form ONNX Runtime's transformer optimizer produces when it fuses a decoder's attention (written from
the operator's specification in ONNX Runtime's ContribOperators.md, not from any exporter's code):
separate query/key/value inputs [batch, seq, heads*head_dim], past_key/past_value
[batch, heads, past, head_dim] graph inputs, present_key/present_value graph outputs,
unidirectional=1 (causal), learned absolute positions (GPT-2 style: no rotary), LayerNorm, a
SiLU MLP, random weights (seed 16).

  /usr/bin/python3 models/scripts/make_mha_fixture.py

writes inference-demo/src/test/resources/mha-gpt/{model.onnx,config.json} (about 0.4 MB, weights
inline). Layer 0 exercises the operator's `bias` input (q|k|v biases, [3*hidden]) and
`key_padding_mask` (attention_mask cast to int32); layer 1 sets `scale` and `mask_filter_value`.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "inference-demo", "src", "test", "resources", "mha-gpt")

LAYERS, HIDDEN, HEADS, MLP, VOCAB, POSITIONS = 2, 64, 4, 128, 256, 128
HEAD = HIDDEN // HEADS


def main():
    rng = np.random.default_rng(16)
    nodes, inits = [], []

    def w(name, *shape, scale=None):
        s = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name))
        return name

    def c(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, out, domain=None, **attrs):
        nodes.append(helper.make_node(op, ins, [out] if isinstance(out, str) else out, name="/" + (
            out if isinstance(out, str) else out[0]), domain=domain, **attrs))
        return out

    def layer_norm(x, p):
        c(p + ".weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        c(p + ".bias", (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        return node("LayerNormalization", [x, p + ".weight", p + ".bias"], p + "/out", axis=-1, epsilon=1e-5)

    tok = node("Gather", [w("wte", VOCAB, HIDDEN, scale=1.0), "input_ids"], "embed/tokens")
    pos = node("Gather", [w("wpe", POSITIONS, HIDDEN, scale=0.5), "position_ids"], "embed/positions")
    x = node("Add", [tok, pos], "embed/out")
    mask32 = node("Cast", ["attention_mask"], "attn_mask/int32", to=TensorProto.INT32)
    for i in range(LAYERS):
        p = f"layers.{i}"
        h = layer_norm(x, p + ".ln_1")
        q = node("MatMul", [h, w(p + ".q_proj", HIDDEN, HIDDEN)], p + "/q")
        k = node("MatMul", [h, w(p + ".k_proj", HIDDEN, HIDDEN)], p + "/k")
        v = node("MatMul", [h, w(p + ".v_proj", HIDDEN, HIDDEN)], p + "/v")
        if i == 0:
            c(p + ".qkv_bias", (0.2 * rng.standard_normal(3 * HIDDEN)).astype(np.float32))
            ins = [q, k, v, p + ".qkv_bias", mask32, "", f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            attrs = dict(num_heads=HEADS, unidirectional=1)
        else:
            ins = [q, k, v, "", "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            attrs = dict(num_heads=HEADS, unidirectional=1, scale=0.3, mask_filter_value=-1e9)
        attn = node("MultiHeadAttention", ins, [p + "/attn/MultiHeadAttention_output", f"present.{i}.key",
                                                 f"present.{i}.value"], domain="com.microsoft", **attrs)
        nodes[-1].name = f"/{p}/attn/MultiHeadAttention"
        o = node("MatMul", [attn[0], w(p + ".o_proj", HIDDEN, HIDDEN)], p + "/o")
        x = node("Add", [x, o], p + "/resid_attn")
        h2 = layer_norm(x, p + ".ln_2")
        up = node("MatMul", [h2, w(p + ".fc_in", HIDDEN, MLP)], p + "/mlp/up")
        sg = node("Sigmoid", [up], p + "/mlp/sigmoid")
        act = node("Mul", [up, sg], p + "/mlp/silu")
        down = node("MatMul", [act, w(p + ".fc_out", MLP, HIDDEN)], p + "/mlp/down")
        x = node("Add", [x, down], p + "/resid_mlp")
    hn = layer_norm(x, "ln_f")
    node("MatMul", [hn, w("lm_head", HIDDEN, VOCAB)], "logits")

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])]
    for i in range(LAYERS):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                                                        ["batch_size", HEADS, "past_sequence_length", HEAD]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT,
                                                         ["batch_size", HEADS, "total_sequence_length", HEAD]))
    graph = helper.make_graph(nodes, "mha-gpt", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="kvquant make_mha_fixture.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(OUT, exist_ok=True)
    onnx.save(model, os.path.join(OUT, "model.onnx"))
    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
           "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "head_dim": HEAD,
           "max_position_embeddings": POSITIONS, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32",
           "kvq_fixture": "models/scripts/make_mha_fixture.py: random weights, com.microsoft MultiHeadAttention"}
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    print("wrote", OUT, os.path.getsize(os.path.join(OUT, "model.onnx")), "bytes")


if __name__ == "__main__":
    main()
