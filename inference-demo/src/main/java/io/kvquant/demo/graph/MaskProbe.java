package io.kvquant.demo.graph;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.attention.ScoreMods;
import io.kvquant.demo.graph.OnnxModel.Node;
import io.kvquant.demo.onnx.DecoderModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Proves that what a decoder does to its attention scores between the scores MatMul and Softmax
 * is the causal mask and nothing else, before {@link AttentionSplit} drops it (kvquant's attention
 * is causal over the cache, so the causal mask is the one thing that may be dropped).
 *
 * <p>The mask operands ({@code Add}'s bias; {@code Where}'s condition and fill) are computed by the
 * graph from its inputs ({@code attention_mask}, {@code position_ids}, shapes). The probe runs
 * exactly that part of the graph in ONNX Runtime, fed as the decoder feeds it (attention mask all
 * ones, positions past..past+n-1), at several (past, new tokens) settings including a long one, and
 * checks every element against the causal pattern: query i (absolute position past+i) sees key j
 * iff j ≤ past+i. An {@code Add} must add exactly 0 where the key is not masked and at most
 * {@value #MASKED} where it is; a {@code Where} must keep the score or fill at most
 * {@value #MASKED}; together they must mask every future key and, of the visible keys, either
 * none or exactly those more than W − 1 positions behind the query, for one window W the same for
 * every query, head and probe: a sliding window of W keys, which kvquant's attention implements
 * ({@link io.kvquant.attention.ScoreMods}). ALiBi slopes and relative-position biases (non-zero on
 * unmasked keys) and any other masking of visible keys are refused with the node's name.
 */
final class MaskProbe {

    /** A fill at or below this is a mask (softmax weight below e^-10000). */
    static final double MASKED = -1e4;
    /** The long probe: a sliding window narrower than this shows up as masked visible keys. */
    static final int LONG = 8192;

    /**
     * One operation between the scores and Softmax: an Add (bias) or a Where (condition, fill);
     * {@code scaleBefore}: the product of the constant scalings applied to the scores before it.
     */
    record Op(int layer, Node node, String bias, String condition, String fill, boolean keepWhenTrue, double scaleBefore) {
    }

    /**
     * Attention sinks: {@code node} concatenates {@code tensor} (one logit per head, broadcast over
     * queries) onto the scores' last axis; {@code scaleBefore} as for {@link Op}.
     */
    record Sink(int layer, Node node, String tensor, double scaleBefore) {
    }

    /** An ALiBi slope found on one head: the value and the key range it was measured over. */
    private record Slope(double a, int span) {
    }

    private MaskProbe() {
    }

    /**
     * Checks every layer's mask operations; throws a one-line IllegalArgumentException naming the
     * first node that is not the causal mask. {@code stops} are tensors fed as zeros of a known
     * shape instead of being computed (the present keys/values, the new keys/values), so the probe
     * runs the shape logic, not the model.
     */
    static ScoreMods[] check(OnnxModel model, List<List<Op>> perLayer, Map<String, long[]> stopShapes, int pastAxisLen,
                             int longProbe, double[] layerScale, List<Sink> sinks) {
        Set<String> wanted = new LinkedHashSet<>();
        for (List<Op> ops : perLayer) {
            for (Op op : ops) {
                for (String t : new String[] {op.bias(), op.condition(), op.fill()}) {
                    if (t != null && !model.initializers.containsKey(t)) {
                        wanted.add(t);
                    }
                }
            }
        }
        for (Sink k : sinks) {
            if (k != null && !model.initializers.containsKey(k.tensor())) {
                wanted.add(k.tensor());
            }
        }
        for (int l = 0; l < perLayer.size(); l++) {
            if (perLayer.get(l).isEmpty()) {
                throw new IllegalArgumentException("layer " + l + ": nothing masks the attention scores before Softmax; "
                        + "kvquant's attention is causal, so a graph that attends to every key it is given is not supported");
            }
        }
        int[][] settings = {{0, 6}, {5, 3}, {longProbe - 1, 1}, {longProbe - 4, 4}};
        // per layer, per probed query position p: how many of its visible keys are masked (a prefix)
        List<Map<Integer, Integer>> maskedPrefix = new ArrayList<>();
        // per layer: the Add found to carry ALiBi slopes, per head
        List<Map<Op, Slope[]>> slopes = new ArrayList<>();
        double[][] sinkValues = new double[perLayer.size()][];
        for (int l = 0; l < perLayer.size(); l++) {
            maskedPrefix.add(new java.util.TreeMap<>());
            slopes.add(new java.util.LinkedHashMap<>());
        }
        run(model, wanted, stopShapes, pastAxisLen, settings, (st, r) -> {
            int past = st[0];
            int n = st[1];
            Map<String, Grid> values = new HashMap<>();
            for (String o : wanted) {
                values.put(o, Grid.of(r.get(o), n, past + n, o));
            }
            for (int l = 0; l < perLayer.size(); l++) {
                int[] m = checkLayer(model, perLayer.get(l), values, past, n, slopes.get(l));
                for (int i = 0; i < n; i++) {
                    maskedPrefix.get(l).put(past + i, m[i]);
                }
                Sink k = sinks.get(l);
                if (k != null) {
                    sinkValues[l] = sinkLogits(model, k, values, past, n, sinkValues[l]);
                }
            }
        });
        ScoreMods[] mods = new ScoreMods[perLayer.size()];
        for (int l = 0; l < perLayer.size(); l++) {
            int w = window(perLayer.get(l), maskedPrefix.get(l), longProbe);
            float[] alibi = null;
            if (slopes.get(l).size() > 1) {
                throw new IllegalArgumentException(names(perLayer.get(l)) + " of layer " + l + " add more than one bias "
                        + "linear in the key position; not supported");
            }
            for (Map.Entry<Op, Slope[]> e : slopes.get(l).entrySet()) {
                // ALiBi: the bias is slope_h · key position (+ a per-query constant softmax ignores),
                // scaled by whatever scalings follow the Add
                double after = layerScale[l] / e.getKey().scaleBefore();
                alibi = new float[e.getValue().length];
                for (int h = 0; h < alibi.length; h++) {
                    if (e.getValue()[h] == null) {
                        throw new IllegalArgumentException("node '" + e.getKey().node().name() + "' of layer " + l + " adds "
                                + "a bias linear in the key position to some heads only; not supported");
                    }
                    alibi[h] = (float) (e.getValue()[h].a() * after);
                }
            }
            float[] sink = null;
            if (sinkValues[l] != null) {
                if (alibi != null) {
                    // ALiBi's per-query offsets are invisible to softmax but not to a sink: not proved here
                    throw new IllegalArgumentException("node '" + sinks.get(l).node().name() + "' (Concat) of layer " + l
                            + ": attention sinks together with ALiBi are not supported in this graph form");
                }
                double after = layerScale[l] / sinks.get(l).scaleBefore();
                sink = new float[sinkValues[l].length];
                for (int h = 0; h < sink.length; h++) {
                    sink[h] = (float) (sinkValues[l][h] * after);
                }
            }
            mods[l] = ScoreMods.of(w, 0f, alibi, sink);
        }
        return mods;
    }

    /**
     * The sliding window W a layer's masks prove (0: none): query p sees keys (p − W, p], so its
     * first max(0, p + 1 − W) keys are masked, at every probed p; anything else is refused.
     */
    private static int window(List<Op> ops, Map<Integer, Integer> maskedPrefix, int longProbe) {
        int w = 0;
        int at = -1;
        for (Map.Entry<Integer, Integer> e : maskedPrefix.entrySet()) {
            if (e.getValue() > 0) {
                at = e.getKey();
                w = at + 1 - e.getValue();
                break;
            }
        }
        if (w == 0) {
            return 0;
        }
        for (Map.Entry<Integer, Integer> e : maskedPrefix.entrySet()) {
            int p = e.getKey();
            int want = Math.max(0, p + 1 - w);
            if (e.getValue() != want) {
                throw new IllegalArgumentException(names(ops) + " of layer " + ops.get(0).layer() + " mask the first "
                        + e.getValue() + " keys of query " + p + ", where a sliding window of " + w + " keys (as at query "
                        + at + ") masks " + want + ": not one sliding window (probed to " + longProbe + " tokens); not "
                        + "supported");
            }
        }
        return w;
    }

    /**
     * The sink logits a Concat appends, per head: probed (or read, for a constant), they must be
     * one finite value per head, the same for every query and probe ({@code prev}).
     */
    private static double[] sinkLogits(OnnxModel model, Sink k, Map<String, Grid> values, int past, int n,
                                       double[] prev) {
        String name = "node '" + k.node().name() + "' (Concat) between the attention scores and Softmax of layer "
                + k.layer() + " appends ";
        Grid g;
        if (model.initializers.containsKey(k.tensor())) {
            try {
                float[] f = model.floats(k.tensor());
                double[] d = new double[f.length];
                for (int j = 0; j < f.length; j++) {
                    d[j] = f[j];
                }
                g = Grid.of(d, model.dims(k.tensor()), n, 1, k.tensor());
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        } else {
            g = values.get(k.tensor());
        }
        if (g.jStride() != 0) {
            throw new IllegalArgumentException(name + "more than one column; kvquant takes one sink logit per head");
        }
        if (g.heads == 1) {
            throw new IllegalArgumentException(name + "one value for every head alike (attention sinks without a heads "
                    + "dimension?); not supported in this graph form");
        }
        double[] r = new double[g.heads];
        for (int h = 0; h < g.heads; h++) {
            r[h] = g.get(h, 0, 0);
            for (int i = 0; i < n; i++) {
                double v = g.get(h, i, 0);
                if (v != r[h] || !Double.isFinite(v) || prev != null && (prev.length != r.length || prev[h] != v)) {
                    throw new IllegalArgumentException(name + "logits that vary with the query or are not finite (head "
                            + h + ", query " + (past + i) + ": " + v + "); kvquant takes one constant sink per head");
                }
            }
        }
        return r;
    }

    private static String names(List<Op> ops) {
        StringBuilder b = new StringBuilder("the mask operations (");
        for (Op op : ops) {
            b.append(b.charAt(b.length() - 1) == '(' ? "" : ", ").append('\'').append(op.node().name()).append('\'');
        }
        return b.append(')').toString();
    }

    /**
     * Proves that each GroupQueryAttention's seqlens_k and total_sequence_length (inputs 5 and 6,
     * computed by the graph from attention_mask) are past + n - 1 and past + n when the decoder
     * feeds an all-ones mask: kvquant then attends causally over exactly the tokens ONNX Runtime
     * would. Each entry: {seqlens_k, total_sequence_length, node description}.
     */
    static void checkSequenceLengths(OnnxModel model, List<String[]> gqa, int longProbe) {
        Set<String> wanted = new LinkedHashSet<>();
        for (String[] g : gqa) {
            wanted.add(g[0]);
            wanted.add(g[1]);
        }
        wanted.removeIf(model.initializers::containsKey);
        for (String[] g : gqa) {
            if (!wanted.contains(g[0]) || !wanted.contains(g[1])) {
                throw new IllegalArgumentException(g[2] + ": seqlens_k/total_sequence_length are constants; they must be "
                        + "computed from attention_mask");
            }
        }
        int[][] settings = {{0, 6}, {5, 3}, {longProbe - 1, 1}};
        run(model, wanted, Map.of(), 2, settings, (st, r) -> {
            int past = st[0];
            int n = st[1];
            for (String[] g : gqa) {
                Grid seq = Grid.of(r.get(g[0]), 1, 1, g[0]);
                Grid total = Grid.of(r.get(g[1]), 1, 1, g[1]);
                if (seq.v().length != 1 || seq.v()[0] != past + n - 1 || total.v().length != 1
                        || total.v()[0] != past + n) {
                    throw new IllegalArgumentException(g[2] + ": seqlens_k / total_sequence_length are "
                            + java.util.Arrays.toString(seq.v()) + " / " + java.util.Arrays.toString(total.v()) + " for "
                            + "past " + past + " and " + n + " new tokens with an all-ones attention_mask; kvquant needs "
                            + (past + n - 1) + " / " + (past + n) + " (batch 1, no padding)");
                }
            }
        });
    }

    /** Runs the part of the graph computing {@code wanted} at each (past, new tokens) setting. */
    private static void run(OnnxModel model, Set<String> wanted, Map<String, long[]> stopShapes, int pastAxisLen,
                            int[][] settings, java.util.function.BiConsumer<int[], Map<String, OnnxTensor>> check) {
        // the part of the graph that computes the mask operands, with the stop tensors as inputs
        Set<Node> nodes = new LinkedHashSet<>();
        Set<String> feeds = new LinkedHashSet<>();
        java.util.Deque<String> todo = new java.util.ArrayDeque<>(wanted);
        Set<String> seen = new java.util.HashSet<>();
        while (!todo.isEmpty()) {
            String t = todo.pop();
            if (t.isEmpty() || !seen.add(t) || model.initializers.containsKey(t)) {
                continue;
            }
            if (stopShapes.containsKey(t) || model.inputs.containsKey(t)) {
                feeds.add(t);
                continue;
            }
            Node p = model.producer.get(t);
            if (p == null) {
                throw new IllegalArgumentException("cannot probe the attention mask: nothing produces " + t);
            }
            if (nodes.add(p)) {
                todo.addAll(p.inputs());
            }
        }
        List<String> outs = new ArrayList<>(wanted);
        byte[] sub = model.subModel("mask-probe", nodes, new ArrayList<>(feeds), outs);
        try (OrtSession.SessionOptions so = new OrtSession.SessionOptions()) {
            so.setIntraOpNumThreads(1);
            // run from memory: the few weights the mask logic needs (if any) read inline
            byte[] inline = OnnxModel.inlined(sub, 1L << 30);
            try (OrtSession session = DecoderModel.environment().createSession(inline, so)) {
                for (int[] st : settings) {
                    int past = st[0];
                    int n = st[1];
                    Map<String, OnnxTensor> in = new HashMap<>();
                    try {
                        for (String f : feeds) {
                            in.put(f, feed(model, f, past, n, stopShapes, pastAxisLen));
                        }
                        try (OrtSession.Result r = session.run(in)) {
                            Map<String, OnnxTensor> got = new HashMap<>();
                            for (String o : outs) {
                                got.put(o, (OnnxTensor) r.get(o).orElseThrow());
                            }
                            check.accept(st, got);
                        }
                    } finally {
                        for (OnnxTensor t : in.values()) {
                            t.close();
                        }
                    }
                }
            }
        } catch (OrtException e) {
            throw new IllegalArgumentException("cannot probe the attention mask with ONNX Runtime: " + e.getMessage(), e);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Checks one layer's mask operations at one probe; returns, per query i, how many of its
     * visible keys are masked — always a prefix (keys 0..m-1), the same in every head.
     */
    private static int[] checkLayer(OnnxModel model, List<Op> ops, Map<String, Grid> values, int past, int n,
                                    Map<Op, Slope[]> slopes) {
        int total = past + n;
        int heads = 1;
        Grid[][] grids = new Grid[ops.size()][];
        for (int o = 0; o < ops.size(); o++) {
            Op op = ops.get(o);
            Grid bias = op.bias() == null ? null : grid(model, values, op.bias(), n, total);
            Grid cond = op.condition() == null ? null : grid(model, values, op.condition(), n, total);
            Grid fill = op.fill() == null ? null : grid(model, values, op.fill(), n, total);
            grids[o] = new Grid[] {bias, cond, fill};
            heads = Math.max(heads, bias != null ? bias.heads : Math.max(cond.heads, fill.heads));
        }
        int[] prefix = new int[n];
        // the op that first masks each query's visible keys, to name in a refusal
        Op[] masker = new Op[n];
        for (int h = 0; h < heads; h++) {
            boolean[][] masked = new boolean[n][total];
            for (int o = 0; o < ops.size(); o++) {
                Op op = ops.get(o);
                String name = "node '" + op.node().name() + "' (" + op.node().op() + ") between the attention scores and "
                        + "Softmax of layer " + op.layer() + " is not a causal mask kvquant recognizes: ";
                String tail = " (probed at past " + past + ", " + n + " new tokens); relative-position biases other "
                        + "than ALiBi (slope per head x key position) are not supported in this graph form";
                Grid bias = grids[o][0];
                Grid cond = grids[o][1];
                Grid fill = grids[o][2];
                for (int i = 0; i < n; i++) {
                    if (bias != null) {
                        alibi(op, bias, h, heads, i, past, total, name, tail, slopes);
                    }
                    for (int j = 0; j < total; j++) {
                        boolean m;
                        if (bias != null) {
                            m = bias.get(h, i, j) <= MASKED;
                        } else {
                            boolean keep = (cond.get(h, i, j) != 0) == op.keepWhenTrue();
                            if (!keep && fill.get(h, i, j) > MASKED) {
                                throw new IllegalArgumentException(name + "it replaces the score of key " + j + " for query "
                                        + (past + i) + " with " + fill.get(h, i, j) + ", not a mask (<= " + MASKED + ")"
                                        + tail);
                            }
                            m = !keep;
                        }
                        if (m && j <= past + i && !masked[i][j] && masker[i] == null) {
                            masker[i] = op;
                        }
                        masked[i][j] |= m;
                    }
                }
            }
            for (int i = 0; i < n; i++) {
                int p = past + i;
                for (int j = p + 1; j < total; j++) {
                    if (!masked[i][j]) {
                        throw new IllegalArgumentException("layer " + ops.get(0).layer() + ": the mask between the attention "
                                + "scores and Softmax (" + names(ops).substring("the mask operations (".length()) + " leaves "
                                + "future key " + j + " visible to query " + p + "; kvquant's attention is causal, so a "
                                + "non-causal graph is not supported");
                    }
                }
                int m = 0;
                while (m <= p && masked[i][m]) {
                    m++;
                }
                String name = masker[i] == null ? "" : "node '" + masker[i].node().name() + "' (" + masker[i].node().op()
                        + ") between the attention scores and Softmax of layer " + masker[i].layer() + " is not a causal "
                        + "mask or sliding window kvquant recognizes: ";
                for (int j = m; j <= p; j++) {
                    if (masked[i][j]) {
                        throw new IllegalArgumentException(name + "it masks visible key " + j + " for query " + p
                                + " but not key " + m + " (probed at past " + past + ", " + n + " new tokens); not "
                                + "supported in this graph form");
                    }
                }
                if (h > 0 && m != prefix[i]) {
                    throw new IllegalArgumentException(name + "it masks the first " + prefix[i] + " keys of query " + p
                            + " in head 0 but " + m + " in head " + h + "; per-head windows are not supported");
                }
                prefix[i] = m;
            }
        }
        return prefix;
    }

    /**
     * The bias an Add puts on query i's unmasked keys (value above {@value #MASKED}) in head h:
     * none (all 0), or ALiBi — exactly {@code a_h · j + b} over the keys j, with a slope a_h ≠ 0
     * of the head, the same for every query and probe, recorded in {@code slopes}. Anything else
     * (a constant, a non-linear bias, a slope shared by all heads) is refused.
     */
    private static void alibi(Op op, Grid bias, int h, int heads, int i, int past, int total, String name, String tail,
                              Map<Op, Slope[]> slopes) {
        int j0 = -1;
        int j1 = -1;
        double max = 0;
        boolean nonZero = false;
        for (int j = 0; j < total; j++) {
            double v = bias.get(h, i, j);
            if (v > MASKED) {
                j0 = j0 < 0 ? j : j0;
                j1 = j;
                max = Math.max(max, Math.abs(v));
                nonZero |= v != 0;
            }
        }
        if (!nonZero || j1 == j0) {
            return; // no bias, or one key left: nothing softmax could see
        }
        double v0 = bias.get(h, i, j0);
        double a = (bias.get(h, i, j1) - v0) / (j1 - j0);
        double tol = 1e-6 * max + 1e-7;
        for (int j = j0; j <= j1; j++) {
            double v = bias.get(h, i, j);
            if (v > MASKED && Math.abs(v - (v0 + a * (j - j0))) > tol) {
                throw new IllegalArgumentException(name + "it adds " + v + " to the score of " + (j <= past + i ? "visible "
                        : "") + "key " + j + " for query " + (past + i) + ", not a bias linear in the key position" + tail);
            }
        }
        if (a == 0) {
            throw new IllegalArgumentException(name + "it adds " + v0 + " to the score of visible key " + j0 + " for query "
                    + (past + i) + tail);
        }
        if (bias.heads == 1) {
            throw new IllegalArgumentException(name + "it adds " + a + " x key position to every head alike (ALiBi without "
                    + "a heads dimension?)" + tail);
        }
        Slope[] per = slopes.computeIfAbsent(op, k -> new Slope[bias.heads]);
        if (h >= per.length) {
            throw new IllegalArgumentException(name + "its bias has " + bias.heads + " heads but the layer's masks have more"
                    + tail);
        }
        Slope prev = per[h];
        if (prev != null && Math.abs(prev.a() - a) > 1e-5 * Math.abs(prev.a())) {
            throw new IllegalArgumentException(name + "its bias slope in head " + h + " is " + a + " for query " + (past + i)
                    + " but " + prev.a() + " elsewhere; not ALiBi" + tail);
        }
        if (prev == null || j1 - j0 > prev.span()) { // keep the slope measured over the widest range
            per[h] = new Slope(a, j1 - j0);
        }
    }

    private static Grid grid(OnnxModel model, Map<String, Grid> values, String t, int n, int total) {
        Grid g = values.get(t);
        if (g == null) { // an initializer: a constant (scalar fill, constant bias)
            double v = model.scalar(t);
            if (Double.isNaN(v)) {
                throw new IllegalArgumentException("cannot probe the attention mask: " + t + " is a constant that is not a "
                        + "scalar");
            }
            g = Grid.constant(v);
            values.put(t, g);
        }
        return g;
    }

    /** A probe input: graph inputs as the decoder feeds them, stop tensors as zeros. */
    private static OnnxTensor feed(OnnxModel model, String name, int past, int n, Map<String, long[]> stopShapes,
                                   int pastAxisLen) throws OrtException {
        long[] shape;
        int type = model.elemType(name);
        long[] values = null;
        if (stopShapes.containsKey(name)) {
            shape = stopShapes.get(name).clone();
            for (int k = 0; k < shape.length; k++) {
                if (shape[k] == -1) {
                    shape[k] = n;
                } else if (shape[k] == -2) {
                    shape[k] = past + n;
                } else if (shape[k] < 0) {
                    throw new IllegalArgumentException("cannot probe the attention mask: the past key/value inputs have "
                            + "an unknown dimension " + k + " (only batch and past length may be dynamic)");
                }
            }
        } else if (name.startsWith("past_key_values.")) {
            shape = model.inputShape(name);
            shape[0] = 1;
            shape[pastAxisLen] = past;
            for (int k = 0; k < shape.length; k++) {
                if (shape[k] < 0) {
                    throw new IllegalArgumentException("cannot probe the attention mask: " + name + " has an unknown "
                            + "dimension " + k + " (only batch and past length may be dynamic)");
                }
            }
        } else {
            switch (name) {
                case "input_ids" -> {
                    shape = new long[] {1, n};
                    values = new long[n];
                }
                case "attention_mask" -> {
                    shape = new long[] {1, past + n};
                    values = new long[past + n];
                    java.util.Arrays.fill(values, 1);
                }
                case "position_ids", "cache_position" -> {
                    shape = name.equals("position_ids") ? new long[] {1, n} : new long[] {n};
                    values = new long[n];
                    for (int i = 0; i < n; i++) {
                        values[i] = past + i;
                    }
                }
                default -> throw new IllegalArgumentException("cannot probe the attention mask: it depends on the graph "
                        + "input " + name + ", which kvquant does not feed");
            }
        }
        long count = 1;
        for (long d : shape) {
            count *= d;
        }
        int width = switch (type) {
            case OnnxModel.FLOAT, OnnxModel.INT32 -> 4;
            case OnnxModel.INT64, 11 -> 8;
            case OnnxModel.FLOAT16, OnnxModel.BFLOAT16 -> 2;
            case OnnxModel.BOOL -> 1;
            default -> throw new IllegalArgumentException("cannot probe the attention mask: " + name + " has element type "
                    + type);
        };
        ByteBuffer b = ByteBuffer.allocateDirect((int) (count * width)).order(ByteOrder.nativeOrder());
        if (values != null) {
            for (long v : values) {
                if (width == 8) {
                    b.putLong(v);
                } else if (width == 4) {
                    b.putInt((int) v);
                } else {
                    throw new IllegalArgumentException("cannot probe the attention mask: " + name + " is not an integer");
                }
            }
            b.rewind();
        }
        OnnxJavaType jt = switch (type) {
            case OnnxModel.FLOAT -> OnnxJavaType.FLOAT;
            case OnnxModel.INT32 -> OnnxJavaType.INT32;
            case OnnxModel.INT64 -> OnnxJavaType.INT64;
            case 11 -> OnnxJavaType.DOUBLE;
            case OnnxModel.FLOAT16 -> OnnxJavaType.FLOAT16;
            case OnnxModel.BFLOAT16 -> OnnxJavaType.BFLOAT16;
            default -> OnnxJavaType.BOOL;
        };
        return OnnxTensor.createTensor(DecoderModel.environment(), b, shape, jt);
    }

    /** A probed tensor broadcast to [heads, queries, keys]. */
    private record Grid(double[] v, int heads, int hStride, int iStride, int jStride) {
        static Grid constant(double x) {
            return new Grid(new double[] {x}, 1, 0, 0, 0);
        }

        double get(int h, int i, int j) {
            return v[Math.min(h, heads - 1) * hStride + i * iStride + j * jStride];
        }

        static Grid of(OnnxTensor t, int n, int total, String name) {
            long[] shape = t.getInfo().getShape();
            return of(read(t, shape, name), shape, n, total, name);
        }

        private static double[] read(OnnxTensor t, long[] shape, String name) {
            ByteBuffer b = t.getByteBuffer().order(ByteOrder.nativeOrder());
            int count = 1;
            for (long d : shape) {
                count *= (int) d;
            }
            double[] v = new double[count];
            for (int k = 0; k < count; k++) {
                v[k] = switch (t.getInfo().type) {
                    case FLOAT -> b.getFloat();
                    case DOUBLE -> b.getDouble();
                    case FLOAT16 -> Float.float16ToFloat(b.getShort());
                    case BFLOAT16 -> Float.intBitsToFloat(b.getShort() << 16);
                    case BOOL, UINT8, INT8 -> b.get();
                    case INT32 -> b.getInt();
                    case INT64 -> b.getLong();
                    default -> throw new IllegalArgumentException("cannot probe the attention mask: " + name + " is "
                            + t.getInfo().type);
                };
            }
            return v;
        }

        /** Values of a tensor of {@code shape}, right-aligned and broadcast to [heads, n, total]. */
        static Grid of(double[] v, long[] shape, int n, int total, String name) {
            // right-aligned broadcast to [.., heads, n, total]
            int r = shape.length;
            long dj = r >= 1 ? shape[r - 1] : 1;
            long di = r >= 2 ? shape[r - 2] : 1;
            long dh = r >= 3 ? shape[r - 3] : 1;
            for (int k = 0; k < r - 3; k++) {
                if (shape[k] != 1) {
                    throw new IllegalArgumentException("cannot probe the attention mask: " + name + " has shape "
                            + java.util.Arrays.toString(shape));
                }
            }
            if ((dj != 1 && dj != total) || (di != 1 && di != n)) {
                throw new IllegalArgumentException("cannot probe the attention mask: " + name + " has shape "
                        + java.util.Arrays.toString(shape) + " for " + n + " queries over " + total + " keys");
            }
            int js = dj == 1 ? 0 : 1;
            int is = di == 1 ? 0 : (int) dj;
            int hs = (int) (di * dj);
            return new Grid(v, (int) dh, hs, is, js);
        }
    }
}
