#!/usr/bin/env python3
"""Writes decoders in the structure of ONNX Runtime GenAI's model builder (written from the
operator specifications and the builder's documented output, not from its code): fused
com.microsoft GroupQueryAttention with rotary embedding inside (cos_cache/sin_cache), RMSNorm as
SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization, seqlens_k and
total_sequence_length computed from attention_mask, past/present as past_key_values.i.* /
present.i.*, weights in external data.

  /usr/bin/python3 models/scripts/make_genai_fixture.py            # writes every fixture below
  /usr/bin/python3 models/scripts/make_genai_fixture.py genai-gemma2 genai-gptoss   # only these

Fixtures (inference-demo/src/test/resources/genai-*):
  genai-llama       the bundled Llama weights (models/kvq-llama/model.onnx). The weights are NOT
                    copied: the graph's external data points at the raw_data bytes inside the
                    bundled model.onnx, which the test links next to it as kvq-llama.onnx
                    (source.sha256 records which file the offsets belong to).
  genai-llama-fp16  the same from models/kvq-llama/fp16/model.onnx (kvq-llama-fp16.onnx).
  genai-qwen2       tiny random (2 layers, hidden 64): q/k/v projection biases; rotary_interleaved=1
                    to exercise that form.
  genai-phi3        tiny random: one fused q/k/v projection fed to GroupQueryAttention packed
                    (key and value inputs empty).
  genai-mistral     tiny random with local_window_size=4 (sliding window) on every layer.
  genai-gemma2      tiny random, Gemma-2's attention pattern: softcap on every layer, local
                    (local_window_size=5) and global layers alternating. The cap is 1.0, not
                    Gemma-2's 50: the tiny model's scaled scores are ~1, so only a small cap bites.
  genai-gptoss      tiny random, gpt-oss's attention pattern: attention sinks (head_sink, one
                    logit per query head, constant) on every layer, local (local_window_size=6)
                    and global layers alternating.
"""
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RES = os.path.join(ROOT, "inference-demo", "src", "test", "resources")


def rope_tables(max_pos, rot_dim, theta):
    inv = 1.0 / (theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim))
    f = np.arange(max_pos, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(f).astype(np.float32), np.sin(f).astype(np.float32)


class Builder:
    def __init__(self, dtype):
        self.nodes, self.inits = [], []
        self.dtype = dtype  # TensorProto.FLOAT or FLOAT16
        self.n = 0

    def name(self, p):
        self.n += 1
        return f"/{p}_{self.n}"

    def node(self, op, ins, outs=None, domain="", name=None, **attrs):
        name = name or self.name(op)
        outs = outs or [name + "/output_0"]
        self.nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr, name))
        return name


def build(cfg, weights, dtype, attn_attrs, bias=False, packed=False, name="genai", sink=lambda i: None):
    """weights(key) -> initializer name already added; cfg: dict of dims."""
    b = Builder(dtype)
    L, H, N, KV, D = cfg["layers"], cfg["hidden"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    eps = cfg["eps"]
    # seqlens_k = sum(attention_mask) - 1, total_sequence_length = attention_mask's length (int32)
    s = b.node("ReduceSum", ["attention_mask", b.const("one_axis", np.array([1], np.int64))], name="/model/attn_mask_reformat/ReduceSum")
    s = b.node("Sub", [s, b.const("one_i64", np.array(1, np.int64))], name="/model/attn_mask_reformat/Sub")
    seqlens = b.node("Cast", [s], name="/model/attn_mask_reformat/seqlens_k", to=TensorProto.INT32)
    shp = b.node("Shape", ["attention_mask"], name="/model/attn_mask_reformat/Shape")
    tot = b.node("Gather", [shp, b.const("idx1", np.array(1, np.int64))], name="/model/attn_mask_reformat/Gather", axis=0)
    total = b.node("Cast", [tot], name="/model/attn_mask_reformat/total_seq_len", to=TensorProto.INT32)
    x = b.node("Gather", [weights("embed"), "input_ids"], name="/model/embed_tokens/Gather")
    residual = None
    normed = None
    for i in range(L):
        p = f"/model/layers.{i}"
        if residual is None:
            normed = b.node("SimplifiedLayerNormalization", [x, weights(f"{i}.in_norm")],
                            name=f"{p}/input_layernorm/LayerNorm", axis=-1, epsilon=eps, stash_type=1)
            residual = x
        else:
            outs = [f"{p}/input_layernorm/output_0", "", "", f"{p}/input_layernorm/output_3"]
            b.node("SkipSimplifiedLayerNormalization", [x, residual, weights(f"{i}.in_norm")], outs, domain="com.microsoft",
                   name=f"{p}/input_layernorm/SkipLayerNorm", epsilon=eps)
            normed, residual = outs[0], outs[3]
        if packed:
            qkv = b.node("MatMul", [normed, weights(f"{i}.qkv")], name=f"{p}/attn/qkv_proj/MatMul")
            q, k, v = qkv, "", ""
        else:
            q = b.node("MatMul", [normed, weights(f"{i}.q")], name=f"{p}/attn/q_proj/MatMul")
            k = b.node("MatMul", [normed, weights(f"{i}.k")], name=f"{p}/attn/k_proj/MatMul")
            v = b.node("MatMul", [normed, weights(f"{i}.v")], name=f"{p}/attn/v_proj/MatMul")
            if bias:
                q = b.node("Add", [q, weights(f"{i}.q_bias")], name=f"{p}/attn/q_proj/Add")
                k = b.node("Add", [k, weights(f"{i}.k_bias")], name=f"{p}/attn/k_proj/Add")
                v = b.node("Add", [v, weights(f"{i}.v_bias")], name=f"{p}/attn/v_proj/Add")
        attrs = dict(num_heads=N, kv_num_heads=KV, do_rotary=1, rotary_interleaved=0)
        attrs.update(attn_attrs(i))
        outs = [f"{p}/attn/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"]
        gqa_in = [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total,
                  weights("cos_cache"), weights("sin_cache")]
        if sink(i) is not None:  # inputs 9 (position_ids) and 10 (attention_bias) empty, 11 head_sink
            gqa_in += ["", "", sink(i)]
        b.node("GroupQueryAttention", gqa_in, outs, domain="com.microsoft", name=f"{p}/attn/GroupQueryAttention", **attrs)
        o = b.node("MatMul", [outs[0], weights(f"{i}.o")], name=f"{p}/attn/o_proj/MatMul")
        outs = [f"{p}/post_attention_layernorm/output_0", "", "", f"{p}/post_attention_layernorm/output_3"]
        b.node("SkipSimplifiedLayerNormalization", [o, residual, weights(f"{i}.post_norm")], outs, domain="com.microsoft",
               name=f"{p}/post_attention_layernorm/SkipLayerNorm", epsilon=eps)
        h, residual = outs[0], outs[3]
        g = b.node("MatMul", [h, weights(f"{i}.gate")], name=f"{p}/mlp/gate_proj/MatMul")
        u = b.node("MatMul", [h, weights(f"{i}.up")], name=f"{p}/mlp/up_proj/MatMul")
        sg = b.node("Sigmoid", [g], name=f"{p}/mlp/act_fn/Sigmoid")
        act = b.node("Mul", [g, sg], name=f"{p}/mlp/act_fn/Mul")
        m = b.node("Mul", [act, u], name=f"{p}/mlp/Mul")
        x = b.node("MatMul", [m, weights(f"{i}.down")], name=f"{p}/mlp/down_proj/MatMul")
    outs = ["/model/norm/output_0", "", "", "/model/norm/output_3"]
    b.node("SkipSimplifiedLayerNormalization", [x, residual, weights("norm")], outs, domain="com.microsoft",
           name="/model/norm/SkipLayerNorm", epsilon=eps)
    b.node("MatMul", [outs[0], weights("lm_head")], ["logits"], name="/lm_head/MatMul")
    dt = dtype
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])]
    outs = [helper.make_tensor_value_info("logits", dt, ["batch_size", "sequence_length", cfg["vocab"]])]
    for i in range(L):
        for kv in ("key", "value"):
            ins.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", dt,
                                                     ["batch_size", KV, "past_sequence_length", D]))
            outs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", dt,
                                                      ["batch_size", KV, "total_sequence_length", D]))
    g = helper.make_graph(b.nodes, name, ins, outs, b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                          producer_name="kvquant make_genai_fixture.py")
    m.ir_version = 8
    return m, b


def external(t, location, data, offset_of):
    """t: numpy array; returns a TensorProto whose data lies at its raw bytes inside `data`."""
    raw = np.ascontiguousarray(t).tobytes()
    off = offset_of(raw)
    tp = TensorProto()
    tp.dims.extend(t.shape)
    tp.data_type = helper.np_dtype_to_tensor_dtype(t.dtype) if hasattr(helper, "np_dtype_to_tensor_dtype") else \
        onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[t.dtype]
    tp.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(off)), ("length", str(len(raw)))):
        e = tp.external_data.add()
        e.key, e.value = k, v
    return tp


def from_bundled(src_dir, out_dir, data_name, dtype):
    """GenAI layout over the bundled model's own weights, referenced inside its model.onnx."""
    src = os.path.join(src_dir, "model.onnx")
    blob = open(src, "rb").read()
    sm = onnx.load(src)
    conf = json.load(open(os.path.join(src_dir, "config.json")))
    inits = {t.name: numpy_helper.to_array(t) for t in sm.graph.initializer}
    by_role = {}
    for n in sm.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits:
            parts = n.name.split("/")
            if "layers." in n.name:
                i = [p for p in parts if p.startswith("layers.")][0].split(".")[1]
                by_role[f"{i}.{ {'q_proj': 'q', 'k_proj': 'k', 'v_proj': 'v', 'o_proj': 'o', 'gate_proj': 'gate', 'up_proj': 'up', 'down_proj': 'down'}[parts[-2]] }"] = n.input[1]
            else:
                by_role["lm_head"] = n.input[1]
    L = conf["num_hidden_layers"]
    for i in range(L):
        by_role[f"{i}.in_norm"] = f"net.layers.{i}.input_layernorm.weight"
        by_role[f"{i}.post_norm"] = f"net.layers.{i}.post_attention_layernorm.weight"
    by_role["embed"] = "net.embed_tokens.weight"
    by_role["norm"] = "net.norm.weight"
    cfg = dict(layers=L, hidden=conf["hidden_size"], heads=conf["num_attention_heads"], kv_heads=conf["num_key_value_heads"],
               head_dim=conf["head_dim"], eps=conf["rms_norm_eps"], vocab=conf["vocab_size"])
    np_dt = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    cos, sin = rope_tables(conf["max_position_embeddings"], conf["head_dim"], conf["rope_theta"])
    added = {}
    out_inits = []

    def offset_of(raw):
        off = blob.find(raw)
        assert off >= 0, "weight bytes not found in the bundled model"
        return off

    def weights(role):
        if role in added:
            return added[role]
        if role in ("cos_cache", "sin_cache"):
            t = (cos if role == "cos_cache" else sin).astype(np_dt)
            out_inits.append(numpy_helper.from_array(t, role))
        else:
            src_name = by_role[role]
            t = inits[src_name]
            tp = external(t, data_name, blob, offset_of)
            tp.name = role.replace(".", "_") if not role[0].isdigit() else f"model.layers.{role}.weight"
            out_inits.append(tp)
            added[role] = tp.name
            return tp.name
        added[role] = role
        return role

    m, b = build(cfg, weights, dtype, lambda i: {}, name="genai-llama")
    m.graph.initializer.extend(out_inits)
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(m, os.path.join(out_dir, "model.onnx"))
    genai_conf = dict(conf, torch_dtype="float16" if dtype == TensorProto.FLOAT16 else "float32")
    genai_conf.pop("kvq_trained", None)
    json.dump(genai_conf, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    sha = hashlib.sha256(blob).hexdigest()
    open(os.path.join(out_dir, "source.sha256"), "w").write(f"{sha}  {data_name}\n")
    print(f"{out_dir}: model.onnx {os.path.getsize(os.path.join(out_dir, 'model.onnx'))} bytes, weights in {data_name} "
          f"(sha256 {sha})")


def tiny(out_dir, seed, attn_attrs=lambda i: {}, bias=False, packed=False, interleaved=False, sinks=False):
    rng = np.random.default_rng(seed)
    cfg = dict(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, eps=1e-5, vocab=256)
    L, H, N, KV, D = 2, 64, 4, 2, 16
    W = {}

    def r(*shape, scale=0.15):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    W["embed"] = r(256, H, scale=1.0)
    W["lm_head"] = r(H, 256)
    W["norm"] = (1 + r(H, scale=0.1))
    for i in range(L):
        W[f"{i}.in_norm"] = 1 + r(H, scale=0.1)
        W[f"{i}.post_norm"] = 1 + r(H, scale=0.1)
        q, k, v = r(H, N * D), r(H, KV * D), r(H, KV * D)
        if packed:
            W[f"{i}.qkv"] = np.concatenate([q, k, v], axis=1)
        else:
            W[f"{i}.q"], W[f"{i}.k"], W[f"{i}.v"] = q, k, v
        if bias:
            W[f"{i}.q_bias"], W[f"{i}.k_bias"], W[f"{i}.v_bias"] = r(N * D, scale=0.5), r(KV * D, scale=0.5), r(KV * D, scale=0.5)
        W[f"{i}.o"] = r(N * D, H)
        W[f"{i}.gate"], W[f"{i}.up"], W[f"{i}.down"] = r(H, 128), r(H, 128), r(128, H)
    cos, sin = rope_tables(256, D, 10000.0)
    W["cos_cache"], W["sin_cache"] = cos, sin
    if sinks:  # one logit per query head, from negligible to dominant against scores of ~1
        for i in range(L):
            W[f"{i}.sink"] = np.array([-1.0, 0.5, 2.0, 3.5], np.float32)[:N] + 0.25 * i
    names = {}
    data = bytearray()
    inits = []

    def weights(role):
        if role not in names:
            t = W[role]
            nm = role.replace(".", "_")
            tp = numpy_helper.from_array(t, nm)
            if t.nbytes >= 1024:  # external data, as the builder writes it
                off = len(data)
                data.extend(t.tobytes())
                while len(data) % 64:
                    data.append(0)
                tp = external(t, "model.onnx.data", None, lambda raw: off)
                tp.name = nm
            inits.append(tp)
            names[role] = nm
        return names[role]

    def attrs(i):
        a = dict(attn_attrs(i))
        if interleaved:
            a["rotary_interleaved"] = 1
        return a

    m, b = build(cfg, weights, TensorProto.FLOAT, attrs, bias=bias, packed=packed, name=os.path.basename(out_dir),
                 sink=lambda i: weights(f"{i}.sink") if sinks else None)
    m.graph.initializer.extend(inits)
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(m, os.path.join(out_dir, "model.onnx"))
    open(os.path.join(out_dir, "model.onnx.data"), "wb").write(bytes(data))
    json.dump({"model_type": "tiny-genai", "vocab_size": 256, "hidden_size": H, "num_hidden_layers": L,
               "num_attention_heads": N, "num_key_value_heads": KV, "head_dim": D, "max_position_embeddings": 256,
               "eos_token_id": 0}, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    print(f"{out_dir}: {os.path.getsize(os.path.join(out_dir, 'model.onnx'))} + {len(data)} bytes")


def main():
    fixtures = {
        "genai-llama": lambda: from_bundled(os.path.join(ROOT, "models", "kvq-llama"), os.path.join(RES, "genai-llama"),
                                            "kvq-llama.onnx", TensorProto.FLOAT),
        "genai-llama-fp16": lambda: from_bundled(os.path.join(ROOT, "models", "kvq-llama", "fp16"),
                                                 os.path.join(RES, "genai-llama-fp16"), "kvq-llama-fp16.onnx",
                                                 TensorProto.FLOAT16),
        "genai-qwen2": lambda: tiny(os.path.join(RES, "genai-qwen2"), 2, bias=True, interleaved=True),
        "genai-phi3": lambda: tiny(os.path.join(RES, "genai-phi3"), 3, packed=True),
        "genai-mistral": lambda: tiny(os.path.join(RES, "genai-mistral"), 4, attn_attrs=lambda i: {"local_window_size": 4}),
        # Gemma-2: softcap everywhere, local (even) and global (odd) layers alternating
        "genai-gemma2": lambda: tiny(os.path.join(RES, "genai-gemma2"), 5, attn_attrs=lambda i: dict(
            {"softcap": 1.0}, **({"local_window_size": 5} if i % 2 == 0 else {}))),
        # gpt-oss: sinks everywhere, local (even) and global (odd) layers alternating
        "genai-gptoss": lambda: tiny(os.path.join(RES, "genai-gptoss"), 6, sinks=True, attn_attrs=lambda i: (
            {"local_window_size": 6} if i % 2 == 0 else {})),
    }
    names = sys.argv[1:] or list(fixtures)
    for n in names:
        if n not in fixtures:
            sys.exit(f"unknown fixture {n}; known: {' '.join(fixtures)}")
        fixtures[n]()


if __name__ == "__main__":
    sys.exit(main())
