package io.kvquant.demo.graph;

import io.kvquant.demo.graph.OnnxModel.Node;
import java.util.List;
import java.util.Set;

/**
 * Takes over a layer whose self-attention is one {@code com.microsoft::MultiHeadAttention} node
 * with past (the form ONNX Runtime's transformer optimizer fuses decoders into): kvquant does what
 * the operator does, and the cut is the GroupQueryAttention one with as many KV heads as query
 * heads and no rotary (positions are applied by the graph before the node).
 *
 * <p>Implemented: query/key/value [batch, tokens, heads·head_dim] (the decoder layout: key and
 * value of the new tokens, past_key/past_value the graph's {@code past_key_values.i.*} inputs,
 * present_key/present_value its {@code present.i.*} outputs, all [batch, heads, tokens, head_dim]),
 * {@code num_heads}, {@code scale} (0 or absent: 1/√head_dim), {@code unidirectional = 1} (key j
 * visible to new token i iff j ≤ past + i, which is kvquant's causal attention), {@code
 * mask_filter_value} ≤ -1e4 (the value ONNX Runtime adds to masked scores: exp of it underflows
 * to exactly 0 in fp32 for any scores below ~1e4 in size, so masking is exact), the {@code bias}
 * input as a constant [3·hidden] initializer (added to q, k and v by three Add nodes put into the
 * graph before the cut: the same float additions the operator makes), and {@code
 * key_padding_mask} when it is the graph's {@code attention_mask} (possibly through Cast), which
 * the decoder feeds all ones (batch 1, no padding), so it masks nothing.
 *
 * <p>Refused, naming the node and the attribute or input: {@code unidirectional = 0} (a decoder
 * prefill would then see later tokens; kvquant's attention is causal), {@code mask_filter_value}
 * above -1e4, {@code attention_bias}, {@code past_sequence_length}, {@code cache_indirection},
 * the {@code qk} output, a bias that is not a constant, a key_padding_mask computed otherwise,
 * any attribute it does not know.
 */
public final class MhaCut {

    private static final Set<String> ATTRIBUTES = Set.of("num_heads", "scale", "unidirectional", "mask_filter_value");
    private static final String[] INPUTS = {"query", "key", "value", "bias", "key_padding_mask", "attention_bias",
        "past_key", "past_value", "past_sequence_length", "cache_indirection"};

    private MhaCut() {
    }

    /** True for a com.microsoft::MultiHeadAttention node. */
    public static boolean is(Node n) {
        return n != null && n.op().equals("MultiHeadAttention") && n.domain().equals("com.microsoft");
    }

    /** Layer i's boundary; may add the bias Add nodes (and their initializers) to {@code model}. */
    public static AttentionSplit.Layer locate(OnnxModel model, int i, Node n) {
        String node = "node '" + n.name() + "' (com.microsoft::MultiHeadAttention) of layer " + i;
        for (Pb.Field f : n.raw().all(5)) {
            Pb a = f.message();
            String name = a.string(1, "");
            if (!ATTRIBUTES.contains(name)) {
                throw new IllegalArgumentException(node + ": attribute " + name + ": kvquant does not implement it");
            }
        }
        if (intAttr(n, "unidirectional", 0) != 1) {
            throw new IllegalArgumentException(node + ": attribute unidirectional = " + intAttr(n, "unidirectional", 0)
                    + ": bidirectional attention over past and new tokens (a prefill would see later tokens); kvquant's "
                    + "attention is causal: export with unidirectional = 1");
        }
        float filter = floatAttr(n, "mask_filter_value", -10000f);
        if (!(filter <= -1e4f)) {
            throw new IllegalArgumentException(node + ": attribute mask_filter_value = " + filter + ": masked scores would "
                    + "keep some weight; kvquant masks exactly (values <= -10000 are supported)");
        }
        List<String> in = n.inputs();
        for (int k : new int[] {5, 8, 9}) {
            if (k < in.size() && !in.get(k).isEmpty()) {
                throw new IllegalArgumentException(node + ": input " + INPUTS[k] + " (" + in.get(k) + ") is not supported");
            }
        }
        if (in.size() > 10) {
            throw new IllegalArgumentException(node + ": input #" + in.size() + " is not supported");
        }
        for (int k = 3; k < n.outputs().size(); k++) {
            if (!n.outputs().get(k).isEmpty()) {
                throw new IllegalArgumentException(node + ": output #" + k + " (" + n.outputs().get(k) + ", the attention "
                        + "scores) is not supported");
            }
        }
        String pastKey = "past_key_values." + i + ".key";
        String pastValue = "past_key_values." + i + ".value";
        if (in.size() < 8 || in.get(1).isEmpty() || in.get(2).isEmpty() || !in.get(6).equals(pastKey)
                || !in.get(7).equals(pastValue) || n.outputs().size() < 3
                || !n.outputs().get(1).equals("present." + i + ".key") || !n.outputs().get(2).equals("present." + i + ".value")) {
            throw new IllegalArgumentException(node + ": expected query, key and value of the new tokens, past_key/past_value "
                    + "the graph inputs " + pastKey + "/" + pastValue + " and present_key/present_value the outputs present."
                    + i + ".key/value (the self-attention of a decoder with past)");
        }
        int heads = (int) intAttr(n, "num_heads", 0);
        long[] past = model.inputShape(pastKey);
        int headDim = past.length == 4 ? (int) past[3] : -1;
        if (heads <= 0 || headDim <= 0 || past[1] > 0 && past[1] != heads) {
            throw new IllegalArgumentException(node + ": num_heads " + heads + " and " + pastKey + " declared "
                    + java.util.Arrays.toString(past) + ": expected [batch, num_heads, past, head_dim] with a fixed head_dim");
        }
        if (in.size() > 4 && !in.get(4).isEmpty()) {
            String m = in.get(4);
            Node p = model.producer.get(m);
            while (p != null && (p.op().equals("Cast") || p.op().equals("Identity"))) {
                m = p.inputs().get(0);
                p = model.producer.get(m);
            }
            if (!m.equals("attention_mask") || !model.inputs.containsKey("attention_mask")) {
                throw new IllegalArgumentException(node + ": input key_padding_mask (" + in.get(4) + ") is not the graph's "
                        + "attention_mask; not supported");
            }
        }
        float sc = floatAttr(n, "scale", 0f);
        double scale = sc == 0f ? 1 / Math.sqrt(headDim) : sc;
        String q = in.get(0);
        String k = in.get(1);
        String v = in.get(2);
        if (in.size() > 3 && !in.get(3).isEmpty()) {
            String bias = in.get(3);
            if (!model.initializers.containsKey(bias)) {
                throw new IllegalArgumentException(node + ": input bias (" + bias + ") is not a constant initializer; "
                        + "not supported");
            }
            float[] b;
            try {
                b = model.floats(bias);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
            int hidden = heads * headDim;
            if (b.length != 3 * hidden) {
                throw new IllegalArgumentException(node + ": input bias has " + b.length + " values, not 3 x " + hidden);
            }
            q = addBias(model, n, q, java.util.Arrays.copyOfRange(b, 0, hidden), "q");
            k = addBias(model, n, k, java.util.Arrays.copyOfRange(b, hidden, 2 * hidden), "k");
            v = addBias(model, n, v, java.util.Arrays.copyOfRange(b, 2 * hidden, 3 * hidden), "v");
        }
        return new AttentionSplit.Layer(i, q, k, v, n.outputs().get(0), scale, null, null, null, null,
                new AttentionSplit.Fused(heads, heads, false, false, 0, null, null));
    }

    /**
     * {@code x + bias} as a new Add node in {@code model} (ordered where the attention node was, after
     * x's producer), its constant a new initializer; returns the sum's name.
     */
    private static String addBias(OnnxModel model, Node at, String x, float[] bias, String part) {
        String base = at.name() + "/kvq_bias_" + part;
        java.nio.ByteBuffer raw = java.nio.ByteBuffer.allocate(bias.length * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (float f : bias) {
            raw.putFloat(f);
        }
        Pb t = new Pb().addVarint(1, bias.length).addVarint(2, OnnxModel.FLOAT).add(8, base).add(9, raw.array());
        model.initializers.put(base, t.toBytes());
        String out = base + "/output_0";
        Pb raw2 = new Pb().add(1, x).add(1, base).add(2, out).add(3, base).add(4, "Add");
        Node add = new Node(at.index(), raw2, List.of(x, base), List.of(out), "Add", "", base);
        model.nodes.add(add);
        model.producer.put(out, add);
        model.consumers.computeIfAbsent(x, key -> new java.util.ArrayList<>()).add(add);
        model.consumers.computeIfAbsent(base, key -> new java.util.ArrayList<>()).add(add);
        return out;
    }

    private static long intAttr(Node n, String name, long dflt) {
        Pb.Field a = n.attribute(name);
        return a == null ? dflt : a.message().varint(3, dflt);
    }

    private static float floatAttr(Node n, String name, float dflt) {
        Pb.Field a = n.attribute(name);
        return a == null || a.message().one(2) == null ? dflt : Float.intBitsToFloat((int) a.message().one(2).bits());
    }
}
