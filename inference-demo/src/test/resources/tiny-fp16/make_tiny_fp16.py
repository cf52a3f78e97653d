"""Builds the tiny test fixture model.onnx + expected.json in this folder (run with /usr/bin/python3
from the repository root: python3 inference-demo/src/test/resources/tiny-fp16/make_tiny_fp16.py).

A 2-layer random Llama (models/scripts/model.py) exported in the optimum layout, then edited so
that past_key_values.* inputs and present.* outputs are float16 (Cast nodes at the boundary) and
an extra `use_cache_branch` bool input exists, as in optimum's merged decoders. It exercises
DecoderModel's fp16 and use_cache_branch paths; expected.json holds PyTorch's fp32 logits.
"""
import json, os, sys
import torch
import onnx
from onnx import helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '../../../../../models/scripts'))
import model as M

torch.manual_seed(1234)
cfg = M.Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               head_dim=8, intermediate_size=64, max_position_embeddings=128)
net = M.LlamaTiny(cfg).eval()
for p in net.parameters():  # larger weights than the 0.02 init so logits are not all ~0
    p.data.mul_(10.0 if p.dim() > 1 else 1.0)
L = cfg.num_hidden_layers


class W(torch.nn.Module):
    def __init__(s, n):
        super().__init__()
        s.n = n

    def forward(s, input_ids, attention_mask, position_ids, *past):
        pk = [(past[2 * i], past[2 * i + 1]) for i in range(L)]
        logits, pres = s.n(input_ids, attention_mask, position_ids, pk)
        out = [logits]
        for k, v in pres:
            out += [k, v]
        return tuple(out)


ids = torch.randint(0, 64, (1, 3))
past = []
for i in range(L):
    past += [torch.randn(1, 2, 2, 8)] * 2
inames = ['input_ids', 'attention_mask', 'position_ids']
onames = ['logits']
dyn = {'input_ids': {1: 's'}, 'attention_mask': {1: 't'}, 'position_ids': {1: 's'}, 'logits': {1: 's'}}
for i in range(L):
    for kv in ('key', 'value'):
        inames.append(f'past_key_values.{i}.{kv}'); dyn[inames[-1]] = {2: 'p'}
        onames.append(f'present.{i}.{kv}'); dyn[onames[-1]] = {2: 't'}
path = os.path.join(HERE, 'model.onnx')
torch.onnx.export(W(net), (ids, torch.ones(1, 5, dtype=torch.long), torch.arange(2, 5).unsqueeze(0), *past), path,
                  input_names=inames, output_names=onames, dynamic_axes=dyn, opset_version=17)

m = onnx.load(path)
g = m.graph
casts = []
for inp in g.input:
    if inp.name.startswith('past_key_values'):
        inp.type.tensor_type.elem_type = TensorProto.FLOAT16
        for n in g.node:
            for j, x in enumerate(n.input):
                if x == inp.name:
                    n.input[j] = inp.name + '_f32'
        casts.append(helper.make_node('Cast', [inp.name], [inp.name + '_f32'], to=TensorProto.FLOAT))
for out in g.output:
    if out.name.startswith('present'):
        for n in g.node:
            for j, x in enumerate(n.output):
                if x == out.name:
                    n.output[j] = out.name + '_f32'
            for j, x in enumerate(n.input):
                if x == out.name:
                    n.input[j] = out.name + '_f32'
        out.type.tensor_type.elem_type = TensorProto.FLOAT16
        g.node.append(helper.make_node('Cast', [out.name + '_f32'], [out.name], to=TensorProto.FLOAT16))
for c in reversed(casts):
    g.node.insert(0, c)
g.input.append(helper.make_tensor_value_info('use_cache_branch', TensorProto.BOOL, [1]))
onnx.checker.check_model(m)
onnx.save(m, path)

seq = torch.tensor([[5, 17, 42, 8, 33, 61, 2, 29, 11]])
with torch.no_grad():
    lg, _ = net(seq)
json.dump({'input_ids': seq[0].tolist(), 'last_logits': [round(float(x), 6) for x in lg[0, -1]]},
          open(os.path.join(HERE, 'expected.json'), 'w'))
print('wrote', path, os.path.getsize(path), 'bytes')
