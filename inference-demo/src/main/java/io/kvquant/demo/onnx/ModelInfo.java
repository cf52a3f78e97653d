package io.kvquant.demo.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.TensorInfo;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The layout of an exported decoder, discovered from the graph's inputs and outputs
 * (Hugging Face / optimum names): layers, KV heads, head dim, dtype and optional inputs.
 */
public record ModelInfo(int layers, int kvHeads, int headDim, boolean fp16, boolean hasPositionIds,
                        boolean hasAttentionMask, boolean hasUseCacheBranch, int vocab) {

    /** Reads the layout, or explains in one sentence what the graph lacks. */
    public static ModelInfo discover(Map<String, NodeInfo> inputs, Map<String, NodeInfo> outputs) {
        List<String> problems = new ArrayList<>();
        if (!inputs.containsKey("input_ids")) {
            problems.add("no 'input_ids' input");
        }
        if (!outputs.containsKey("logits")) {
            problems.add("no 'logits' output");
        }
        TreeSet<Integer> layerIds = new TreeSet<>();
        for (String n : inputs.keySet()) {
            if (n.startsWith("past_key_values.") && n.endsWith(".key")) {
                try {
                    layerIds.add(Integer.parseInt(n.substring("past_key_values.".length(), n.length() - 4)));
                } catch (NumberFormatException e) {
                    problems.add("unreadable past input name '" + n + "'");
                }
            }
        }
        if (layerIds.isEmpty()) {
            problems.add("no 'past_key_values.{i}.key/value' inputs (export the model 'with past', e.g. optimum's "
                    + "text-generation-with-past task)");
        }
        int layers = layerIds.size();
        int kvHeads = -1;
        int headDim = -1;
        Boolean half = null;
        for (int i = 0; i < layers; i++) {
            if (!layerIds.contains(i)) {
                problems.add("past_key_values." + i + " is missing (layers must be numbered 0.." + (layers - 1) + ")");
                break;
            }
            for (String kv : new String[]{"key", "value"}) {
                String in = "past_key_values." + i + "." + kv;
                String out = "present." + i + "." + kv;
                if (!inputs.containsKey(in)) {
                    problems.add("no '" + in + "' input");
                    continue;
                }
                if (!outputs.containsKey(out)) {
                    problems.add("no '" + out + "' output");
                    continue;
                }
                if (!(inputs.get(in).getInfo() instanceof TensorInfo ti) || ti.getShape().length != 4) {
                    problems.add("'" + in + "' is not a 4-D tensor [batch, kv_heads, past, head_dim]");
                    continue;
                }
                long[] shape = ti.getShape();
                if (shape[1] <= 0 || shape[3] <= 0) {
                    problems.add("'" + in + "' has no fixed kv_heads/head_dim in its shape");
                    continue;
                }
                kvHeads = (int) shape[1];
                headDim = (int) shape[3];
                boolean h = ti.type == OnnxJavaType.FLOAT16;
                if (!h && ti.type != OnnxJavaType.FLOAT) {
                    problems.add("'" + in + "' has element type " + ti.type + " (supported: float32, float16)");
                }
                half = half == null ? h : half;
            }
        }
        int vocab = -1;
        if (outputs.containsKey("logits") && outputs.get("logits").getInfo() instanceof TensorInfo li) {
            long[] s = li.getShape();
            vocab = s.length == 3 ? (int) s[2] : -1;
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException("not a decoder kvquant can run: " + String.join("; ", problems));
        }
        return new ModelInfo(layers, kvHeads, headDim, half != null && half, inputs.containsKey("position_ids"),
                inputs.containsKey("attention_mask"), inputs.containsKey("use_cache_branch"), vocab);
    }
}
