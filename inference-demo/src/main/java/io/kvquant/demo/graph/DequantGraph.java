package io.kvquant.demo.graph;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.codec.Rotation;
import io.kvquant.codec.TurboQuantMse;
import io.kvquant.codec.VectorCodec;
import io.kvquant.demo.graph.OnnxModel.Node;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Rewrites an exported decoder so that its past arrives as TurboQuant codes and is decoded inside
 * the graph with standard ONNX operators, in the rotated domain (issue #8).
 *
 * <p>Per layer and for keys and values, the past inputs become {@code kvq_codes.i.key} (uint8
 * [batch, kv_heads, past, code_bytes]: a record's packed codes exactly as the cache stores them,
 * least significant bit first) and {@code kvq_norms.i.key} (fp16 [batch, kv_heads, past, 1], the
 * stored norms as they are).
 * Each segment of b-bit codes is decoded by Slice → Cast(int64) → Gather of each code's first
 * byte and (where the code straddles two bytes) the next, weighted by 256 → Add → Div by
 * 2^(bit offset) → Mod 2^b → Gather from the centroid table; the segments are concatenated and
 * multiplied by the norms. That is the codec's reconstruction in the rotated domain, Π·x̂.
 * Attention then runs in that domain: the queries and the step's new keys are multiplied by Πₖᵀ
 * (a constant MatMul) and new values by Πᵥᵀ, so Q·Kᵀ is unchanged, and the attention output is
 * un-rotated once with Πᵥ. The new keys and values (not rotated) are outputs
 * ({@code kvq_new.i.key|value}); the caller quantizes and appends them.
 *
 * <p>Operators added: Slice, Cast, Gather, Mul, Add, Div, Mod, Concat, MatMul, Identity
 * (opset 13+ forms). Supported caches: TurboQuant without QJL, without a full-precision
 * window or boundary layers.
 */
public final class DequantGraph {

    private DequantGraph() {
    }

    /** Refuses settings the in-graph decoder does not implement, with a one-line reason. */
    public static void check(KvQuantConfig cfg) {
        if (cfg.kind() != KvQuantConfig.Kind.TURBO) {
            throw new IllegalArgumentException("--mode graph decodes TurboQuant codes in the graph; '" + cfg + "' is not a "
                    + "TurboQuant setting (use turbo3.5, turbo2.5, k4v3, turbo8, ...)");
        }
        if (cfg.keyQjl() || cfg.valueQjl()) {
            throw new IllegalArgumentException("--mode graph does not implement the QJL correction; use qjl=none");
        }
        if (cfg.window() > 0 || cfg.mid() > 0 || cfg.valueRotations() > 1 || cfg.boundaryLayers() > 0 || cfg.center()
                || cfg.keyScale() > 0 || !cfg.layers().isEmpty()) {
            throw new IllegalArgumentException("--mode graph decodes the bare codec: no window=, mid=, vrot=, boundary=, layers=, key "
                    + "centering or key scaling (the plain presets have a window, a middle tier, value rotations and both); use e.g. --mode graph --kv turbo3.5,window=0,center=off");
        }
    }

    /** The rewritten model. */
    public static byte[] rewrite(OnnxModel m, AttentionSplit split, KvQuantConfig cfg, int kvHeads, int headDim) {
        check(cfg);
        if (split.layers.stream().anyMatch(l -> l.fused() != null)) {
            throw new IllegalArgumentException("--mode graph rewrites plain MatMul/Softmax attention; this model's attention "
                    + "is a fused GroupQueryAttention (use --mode java-attention)");
        }
        Map<Node, List<Pb>> before = new HashMap<>();
        Map<Node, List<Pb>> after = new HashMap<>();
        Map<Node, Pb> replaced = new HashMap<>();
        List<Pb> head = new ArrayList<>();
        List<byte[]> inits = new ArrayList<>();
        Pb g = m.graph.without(1, 5, 11, 12);
        List<byte[]> inputs = new ArrayList<>();
        List<byte[]> outputs = new ArrayList<>();
        for (Map.Entry<String, byte[]> e : m.inputs.entrySet()) {
            if (!e.getKey().startsWith("past_key_values.")) {
                inputs.add(e.getValue());
            }
        }
        outputs.add(m.outputs.get("logits"));
        for (AttentionSplit.Layer l : split.layers) {
            int i = l.index();
            String[] kinds = {"key", "value"};
            for (int kvIdx = 0; kvIdx < 2; kvIdx++) {
                String kind = kinds[kvIdx];
                VectorCodec vc = kvIdx == 0 ? KvCaches.keyCodec(cfg, headDim, i) : KvCaches.valueCodec(cfg, headDim, i);
                if (!(vc instanceof TurboQuantMse c)) {
                    throw new IllegalArgumentException("--mode graph supports TurboQuant_mse codecs, got " + vc.describe());
                }
                String p = "kvq/" + i + "/" + kind + "/";
                String codes = "kvq_codes." + i + "." + kind;
                String norms = "kvq_norms." + i + "." + kind;
                inputs.add(valueInfo(codes, 2, "batch_size", kvHeads, "past_sequence_length", c.recordBytes() - 2));
                inputs.add(valueInfo(norms, OnnxModel.FLOAT16, "batch_size", kvHeads, "past_sequence_length", 1));
                List<String> segs = new ArrayList<>();
                int[] len = c.segmentLengths();
                int[] bits = c.segmentBits();
                int[] off = c.segmentByteOffsets();
                for (int s = 0; s < len.length; s++) {
                    int b = bits[s];
                    String q = p + "s" + s + "/";
                    int nb = (len[s] * b + 7) / 8;
                    inits.add(int64(q + "starts", new long[] {off[s] - 2}));
                    inits.add(int64(q + "ends", new long[] {off[s] - 2 + nb}));
                    inits.add(int64(q + "axes", new long[] {3}));
                    inits.add(floats(q + "centroids", new long[] {1L << b}, c.centroids(s)));
                    head.add(node("Slice", q + "slice", new String[] {codes, q + "starts", q + "ends", q + "axes"}, q + "bytes"));
                    head.add(node("Cast", q + "cast", new String[] {q + "bytes"}, q + "i64").add(5, attrInt("to", OnnxModel.INT64)));
                    // code j occupies bits [j·b, j·b + b) of the segment: bytes lo = ⌊j·b/8⌋ and, when it
                    // straddles, lo + 1; value = ((lo + 256·hi) / 2^(j·b mod 8)) mod 2^b
                    long[] lo = new long[len[s]];
                    long[] hi = new long[len[s]];
                    long[] hiW = new long[len[s]];
                    long[] shift = new long[len[s]];
                    for (int j = 0; j < len[s]; j++) {
                        int bit = j * b;
                        lo[j] = bit >>> 3;
                        boolean straddle = (bit & 7) + b > 8;
                        hi[j] = straddle ? lo[j] + 1 : lo[j];
                        hiW[j] = straddle ? 256 : 0;
                        shift[j] = 1L << (bit & 7);
                    }
                    inits.add(int64(q + "lo", lo));
                    inits.add(int64(q + "hi", hi));
                    inits.add(int64(q + "hiw", hiW));
                    inits.add(int64(q + "shift", shift));
                    inits.add(int64(q + "mod", new long[] {1L << b}));
                    head.add(node("Gather", q + "lo", new String[] {q + "i64", q + "lo"}, q + "lo_b").add(5, attrInt("axis", 3)));
                    head.add(node("Gather", q + "hi", new String[] {q + "i64", q + "hi"}, q + "hi_b").add(5, attrInt("axis", 3)));
                    head.add(node("Mul", q + "hiw", new String[] {q + "hi_b", q + "hiw"}, q + "hi_w"));
                    head.add(node("Add", q + "word", new String[] {q + "lo_b", q + "hi_w"}, q + "word"));
                    head.add(node("Div", q + "shift", new String[] {q + "word", q + "shift"}, q + "shifted"));
                    head.add(node("Mod", q + "mask", new String[] {q + "shifted", q + "mod"}, q + "code"));
                    String code = q + "code";
                    head.add(node("Gather", q + "lookup", new String[] {q + "centroids", code}, q + "values")
                            .add(5, attrInt("axis", 0)));
                    segs.add(q + "values");
                }
                String unit = p + "unit";
                if (segs.size() == 1) {
                    head.add(node("Identity", p + "one", new String[] {segs.get(0)}, unit));
                } else {
                    head.add(node("Concat", p + "segments", segs.toArray(String[]::new), unit).add(5, attrInt("axis", 3)));
                }
                head.add(node("Cast", p + "norm32", new String[] {norms}, p + "norms").add(5, attrInt("to", OnnxModel.FLOAT)));
                head.add(node("Mul", p + "norm", new String[] {unit, p + "norms"}, p + "past_rot"));
                // new tokens: rotated by the same Π (x·Πᵀ), joined to the decoded past
                Rotation rot = c.rotation();
                inits.add(floats(p + "rotT", new long[] {headDim, headDim}, rotationTransposed(rot, headDim)));
                Node concat = kvIdx == 0 ? l.keyConcat() : l.valueConcat();
                String newT = kvIdx == 0 ? l.newKey() : l.newValue();
                before.computeIfAbsent(concat, k -> new ArrayList<>())
                        .add(node("MatMul", p + "rot_new", new String[] {newT, p + "rotT"}, p + "new_rot"));
                Pb cn = concat.raw().without(1);
                for (String in : concat.inputs()) {
                    cn.add(1, in.equals("past_key_values." + i + "." + kind) ? p + "past_rot" : p + "new_rot");
                }
                replaced.put(concat, cn);
                String out = "kvq_new." + i + "." + kind;
                after.computeIfAbsent(concat, k -> new ArrayList<>()).add(node("Identity", p + "new_out", new String[] {newT}, out));
                outputs.add(valueInfo(out, OnnxModel.FLOAT, "batch_size", kvHeads, "sequence_length", headDim));
                if (kvIdx == 0) {
                    // queries into the keys' rotated domain
                    String qRot = "kvq/" + i + "/q_rot";
                    before.computeIfAbsent(l.scores(), k -> new ArrayList<>())
                            .add(node("MatMul", qRot, new String[] {l.query(), p + "rotT"}, qRot));
                    Pb sn = l.scores().raw().without(1);
                    for (int k = 0; k < l.scores().inputs().size(); k++) {
                        sn.add(1, k == 0 ? qRot : l.scores().inputs().get(k));
                    }
                    replaced.put(l.scores(), sn);
                } else {
                    // attention output back from the values' rotated domain: out = out_rot · Πᵥ
                    inits.add(floats(p + "rot", new long[] {headDim, headDim}, rotationMatrix(rot, headDim)));
                    String outRot = "kvq/" + i + "/out_rot";
                    Pb pn = l.probsValues().raw().without(2).add(2, outRot);
                    replaced.put(l.probsValues(), pn);
                    after.computeIfAbsent(l.probsValues(), k -> new ArrayList<>())
                            .add(node("MatMul", "kvq/" + i + "/unrotate", new String[] {outRot, p + "rot"}, l.output()));
                }
            }
        }
        for (Pb n : head) {
            g.add(1, n);
        }
        for (Node n : m.nodes) {
            for (Pb x : before.getOrDefault(n, List.of())) {
                g.add(1, x);
            }
            g.add(1, replaced.getOrDefault(n, n.raw()));
            for (Pb x : after.getOrDefault(n, List.of())) {
                g.add(1, x);
            }
        }
        for (byte[] t : m.initializers.values()) {
            g.add(5, t);
        }
        for (byte[] t : inits) {
            g.add(5, t);
        }
        for (byte[] vi : inputs) {
            g.add(11, vi);
        }
        for (byte[] vi : outputs) {
            g.add(12, vi);
        }
        Pb model = m.model.without(7);
        model.add(7, g);
        return model.toBytes();
    }

    /** Row j = Π e_j, i.e. the matrix M with x·M = (Π x)ᵀ for a row vector x. */
    static float[] rotationTransposed(Rotation r, int d) {
        float[] m = new float[d * d];
        float[] e = new float[d];
        float[] y = new float[d];
        for (int j = 0; j < d; j++) {
            java.util.Arrays.fill(e, 0f);
            e[j] = 1f;
            r.rotate(e, 0, y, 0);
            System.arraycopy(y, 0, m, j * d, d);
        }
        return m;
    }

    /** Π itself: element (r, j) = (Π e_j)_r, so that y·Π = (Πᵀ y)ᵀ for a row vector y. */
    static float[] rotationMatrix(Rotation r, int d) {
        float[] t = rotationTransposed(r, d);
        float[] m = new float[d * d];
        for (int a = 0; a < d; a++) {
            for (int b = 0; b < d; b++) {
                m[a * d + b] = t[b * d + a];
            }
        }
        return m;
    }

    static Pb node(String op, String name, String[] in, String out) {
        Pb n = new Pb();
        for (String s : in) {
            n.add(1, s);
        }
        n.add(2, out);
        n.add(3, name);
        n.add(4, op);
        return n;
    }

    static Pb attrInt(String name, long v) {
        return new Pb().add(1, name).addVarint(3, v).addVarint(20, 2);
    }

    static byte[] int64(String name, long[] v) {
        ByteBuffer b = ByteBuffer.allocate(8 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long x : v) {
            b.putLong(x);
        }
        return new Pb().addVarint(1, v.length).addVarint(2, OnnxModel.INT64).add(8, name).add(9, b.array()).toBytes();
    }

    static byte[] floats(String name, long[] dims, float[] v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            b.putFloat(x);
        }
        Pb t = new Pb();
        for (long d : dims) {
            t.addVarint(1, d);
        }
        return t.addVarint(2, OnnxModel.FLOAT).add(8, name).add(9, b.array()).toBytes();
    }

    /** A ValueInfoProto with element type and a shape of named (String) or fixed (Integer) dims. */
    static byte[] valueInfo(String name, int elemType, Object... dims) {
        Pb shape = new Pb();
        for (Object d : dims) {
            Pb dim = new Pb();
            if (d instanceof String s) {
                dim.add(2, s);
            } else {
                dim.addVarint(1, ((Number) d).longValue());
            }
            shape.add(1, dim);
        }
        Pb tensor = new Pb().addVarint(1, elemType).add(2, shape);
        return new Pb().add(1, name).add(2, new Pb().add(1, tensor)).toBytes();
    }
}
