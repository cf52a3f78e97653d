package io.kvquant.demo.graph;

import io.kvquant.demo.graph.OnnxModel.Node;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * ONNX Runtime's own quantized KV cache, the baseline kvquant is compared with: a graph whose
 * attention is {@code com.microsoft::GroupQueryAttention} rewritten so that ONNX Runtime stores
 * the past in int8 ({@code --kv ort-int8}) or 4-bit ({@code --kv ort-int4}, two values a byte in
 * uint8, head dim halved). Every GroupQueryAttention node gets {@code k_quant_type =
 * v_quant_type = PER_CHANNEL} and {@code kv_cache_bit_width}, and inputs 12/13
 * ({@code k_scale}/{@code v_scale}, [1, kv_heads, 1, head_dim] per layer) as constant
 * initializers; the {@code past_key_values.i.*} inputs and {@code present.i.*} outputs change
 * element type. Weights are untouched (referenced where they lie, as {@link OnnxModel#read} makes them).
 *
 * <p>ONNX Runtime's scales are static: the exporter must calibrate them, and values beyond
 * {@code qmax · scale} clip. {@link #scales} derives them from sample keys and values (per channel
 * max |x| / qmax); kvquant's codecs need no calibration.
 */
public final class OrtQuantKv {

    /** The {@code --kv} settings that select plain ONNX Runtime: {@code ort} (unquantized), {@code ort-int8}, {@code ort-int4}. */
    public enum Setting {
        ORT("ort", 0), INT8("ort-int8", 8), INT4("ort-int4", 4);

        public final String cli;
        /** kv_cache_bit_width; 0 for the unquantized past. */
        public final int bits;

        Setting(String cli, int bits) {
            this.cli = cli;
            this.bits = bits;
        }

        /** The setting named by a {@code --kv} value, or null when it is not an ort setting. */
        public static Setting of(String kv) {
            if (kv == null) {
                return null;
            }
            String t = kv.trim().toLowerCase(Locale.ROOT);
            for (Setting s : values()) {
                if (s.cli.equals(t)) {
                    return s;
                }
            }
            if (t.startsWith("ort-") || t.startsWith("ort,")) {
                throw new IllegalArgumentException("unknown ONNX Runtime KV setting '" + kv.trim() + "' (known: ort, ort-int8, "
                        + "ort-int4; they take no options)");
            }
            return null;
        }

        /** The largest quantized magnitude: 127 for int8, 7 for int4 (symmetric, no zero point). */
        public int qmax() {
            return bits == 8 ? 127 : bits == 4 ? 7 : 0;
        }

        @Override
        public String toString() {
            return cli;
        }

        /** Stored bytes per key or value element. */
        public double bytesPerElement(boolean fp16) {
            return bits == 0 ? (fp16 ? 2 : 4) : bits / 8.0;
        }
    }

    /** The command that writes the benchmark model in the GroupQueryAttention form. */
    public static final String GQA_BENCH_COMMAND = "./kvq bench model --attention gqa --out DIR";

    private OrtQuantKv() {
    }

    /**
     * The GroupQueryAttention node of every layer, or a one-line refusal: ONNX Runtime's
     * quantized KV cache exists only in that operator.
     */
    public static List<Node> attentionNodes(OnnxModel m, String setting) {
        List<Node> out = new ArrayList<>();
        for (int i = 0; m.outputs.containsKey("present." + i + ".key"); i++) {
            Node n = m.producer.get("present." + i + ".key");
            if (n == null || !n.op().equals("GroupQueryAttention") || !n.domain().equals("com.microsoft")) {
                throw new IllegalArgumentException("--kv " + setting + " needs a com.microsoft::GroupQueryAttention graph "
                        + "(ONNX Runtime quantizes the KV cache only inside that operator); " + m.file.getFileName()
                        + " computes present." + i + ".key with " + (n == null ? "no node" : n.op()) + ": export with "
                        + "onnxruntime-genai's model builder, or for the benchmark model write its GQA form with "
                        + GQA_BENCH_COMMAND);
            }
            for (String a : List.of("k_quant_type", "v_quant_type", "kv_cache_bit_width")) {
                if (n.attribute(a) != null) {
                    throw new IllegalArgumentException("--kv " + setting + ": node '" + n.name() + "' already has attribute "
                            + a + "; give the unquantized export");
                }
            }
            if (n.inputs().size() > 12) {
                throw new IllegalArgumentException("--kv " + setting + ": node '" + n.name() + "' already has k_scale/v_scale "
                        + "inputs; give the unquantized export");
            }
            if (!n.inputs().get(3).equals("past_key_values." + i + ".key") || !n.inputs().get(4).equals("past_key_values." + i
                    + ".value") || n.outputs().size() < 3 || !n.outputs().get(2).equals("present." + i + ".value")) {
                throw new IllegalArgumentException("--kv " + setting + ": node '" + n.name() + "' does not read "
                        + "past_key_values." + i + ".key/value and write present." + i + ".key/value");
            }
            out.add(n);
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException("the model has no present.0.key output: export it with past key values");
        }
        return out;
    }

    /**
     * Per-channel scales from sample tensors: {@code x[layer]} holds [kvHeads][tokens][headDim]
     * floats (a present tensor of the unquantized graph); the scale of channel (h, c) is
     * max |x| / qmax over the tokens (a channel that is zero everywhere gets 1e-6).
     */
    public static float[][] scales(float[][] x, int kvHeads, int headDim, Setting s) {
        float[][] out = new float[x.length][kvHeads * headDim];
        for (int l = 0; l < x.length; l++) {
            int tokens = x[l].length / (kvHeads * headDim);
            if (tokens * kvHeads * headDim != x[l].length || tokens == 0) {
                throw new IllegalArgumentException("layer " + l + ": " + x[l].length + " calibration values do not fit "
                        + kvHeads + " heads x " + headDim);
            }
            for (int h = 0; h < kvHeads; h++) {
                for (int c = 0; c < headDim; c++) {
                    float max = 0;
                    for (int t = 0; t < tokens; t++) {
                        max = Math.max(max, Math.abs(x[l][(h * tokens + t) * headDim + c]));
                    }
                    out[l][h * headDim + c] = max > 0 ? max / s.qmax() : 1e-6f;
                }
            }
        }
        return out;
    }

    /**
     * The rewritten model: {@code kScale[layer]}/{@code vScale[layer]} hold kvHeads·headDim
     * per-channel scales. Serialized with the original header; weights still referenced.
     */
    public static byte[] rewrite(OnnxModel m, Setting s, float[][] kScale, float[][] vScale, int kvHeads, int headDim) {
        if (s.bits == 0) {
            throw new IllegalArgumentException("ort is the unquantized graph; nothing to rewrite");
        }
        List<Node> nodes = attentionNodes(m, s.cli);
        if (kScale.length != nodes.size() || vScale.length != nodes.size()) {
            throw new IllegalArgumentException("scales for " + kScale.length + " layers, the model has " + nodes.size());
        }
        if (s.bits == 4 && headDim % 2 != 0) {
            throw new IllegalArgumentException("--kv ort-int4 packs two values a byte: head dim " + headDim + " must be even");
        }
        int pastType = s.bits == 8 ? INT8 : UINT8;
        int pastDim = s.bits == 8 ? headDim : headDim / 2;
        Pb g = new Pb();
        List<Pb> inits = new ArrayList<>();
        for (Pb.Field f : m.graph.fields) {
            switch (f.number()) {
                case 1 -> {
                    Pb n = f.message();
                    int layer = nodeLayer(nodes, n);
                    if (layer < 0) {
                        g.fields.add(f);
                        continue;
                    }
                    List<String> ins = new ArrayList<>(n.strings(1));
                    while (ins.size() < 12) {
                        ins.add("");
                    }
                    String ks = "kvq_ort_k_scale." + layer;
                    String vs = "kvq_ort_v_scale." + layer;
                    ins.add(ks);
                    ins.add(vs);
                    Pb r = new Pb();
                    for (String in : ins) {
                        r.add(1, in);
                    }
                    r.fields.addAll(n.without(1).fields);
                    r.add(5, attrString("k_quant_type", "PER_CHANNEL"));
                    r.add(5, attrString("v_quant_type", "PER_CHANNEL"));
                    r.add(5, attrInt("kv_cache_bit_width", s.bits));
                    g.add(1, r);
                    long[] dims = {1, kvHeads, 1, headDim};
                    inits.add(floats(ks, dims, kScale[layer]));
                    inits.add(floats(vs, dims, vScale[layer]));
                }
                case 11 -> {
                    String name = Pb.parse(f.bytes()).string(1, "");
                    g.fields.add(name.startsWith("past_key_values.") ? new Pb.Field(11, 2, 0,
                            valueInfo(name, pastType, "batch_size", kvHeads, "past_sequence_length", pastDim).toBytes()) : f);
                }
                case 12 -> {
                    String name = Pb.parse(f.bytes()).string(1, "");
                    g.fields.add(name.startsWith("present.") ? new Pb.Field(12, 2, 0,
                            valueInfo(name, pastType, "batch_size", kvHeads, "total_sequence_length", pastDim).toBytes()) : f);
                }
                case 13 -> {
                    String name = Pb.parse(f.bytes()).string(1, "");
                    if (!name.startsWith("present.") && !name.startsWith("past_key_values.")) {
                        g.fields.add(f);
                    }
                }
                default -> g.fields.add(f);
            }
        }
        for (Pb t : inits) {
            g.add(5, t);
        }
        Pb out = m.model.without(7);
        out.add(7, g);
        return out.toBytes();
    }

    private static int nodeLayer(List<Node> nodes, Pb n) {
        if (!n.string(4, "").equals("GroupQueryAttention")) {
            return -1;
        }
        List<String> outs = n.strings(2);
        for (int i = 0; i < nodes.size(); i++) {
            if (nodes.get(i).outputs().equals(outs)) {
                return i;
            }
        }
        return -1;
    }

    static final int UINT8 = 2;
    static final int INT8 = 3;

    private static Pb attrString(String name, String v) {
        return new Pb().add(1, name).add(4, v).addVarint(20, 3);
    }

    private static Pb attrInt(String name, long v) {
        return new Pb().add(1, name).addVarint(3, v).addVarint(20, 2);
    }

    private static Pb floats(String name, long[] dims, float[] v) {
        Pb t = new Pb();
        for (long d : dims) {
            t.addVarint(1, d);
        }
        t.addVarint(2, OnnxModel.FLOAT);
        t.add(8, name);
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            b.putFloat(x);
        }
        return t.add(9, b.array());
    }

    private static Pb valueInfo(String name, int elemType, Object... dims) {
        Pb shape = new Pb();
        for (Object o : dims) {
            Pb dim = new Pb();
            if (o instanceof Integer i) {
                dim.addVarint(1, i);
            } else {
                dim.add(2, (String) o);
            }
            shape.add(1, dim);
        }
        Pb tensorType = new Pb().addVarint(1, elemType).add(2, shape);
        return new Pb().add(1, name).add(2, new Pb().add(1, tensorType));
    }
}
