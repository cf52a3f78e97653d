package io.kvquant.demo.graph;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
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
 * iff j ≤ past+i. An {@code Add} must add exactly 0 where the key is visible and either 0 or at most
 * {@value #MASKED} elsewhere; a {@code Where} must keep the score where the key is visible and fill
 * at most {@value #MASKED} where it masks; together they must mask exactly the future positions.
 * ALiBi slopes and relative-position biases (non-zero on visible keys) and sliding windows (masking
 * visible keys) fail that check and are refused with the node's name.
 */
final class MaskProbe {

    /** A fill at or below this is a mask (softmax weight below e^-10000). */
    static final double MASKED = -1e4;
    /** The long probe: a sliding window narrower than this shows up as masked visible keys. */
    static final int LONG = 8192;

    /** One operation between the scores and Softmax: an Add (bias) or a Where (condition, fill). */
    record Op(int layer, Node node, String bias, String condition, String fill, boolean keepWhenTrue) {
    }

    private MaskProbe() {
    }

    /**
     * Checks every layer's mask operations; throws a one-line IllegalArgumentException naming the
     * first node that is not the causal mask. {@code stops} are tensors fed as zeros of a known
     * shape instead of being computed (the present keys/values, the new keys/values), so the probe
     * runs the shape logic, not the model.
     */
    static void check(OnnxModel model, List<List<Op>> perLayer, Map<String, long[]> stopShapes, int pastAxisLen,
                      int longProbe) {
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
        for (int l = 0; l < perLayer.size(); l++) {
            if (perLayer.get(l).isEmpty()) {
                throw new IllegalArgumentException("layer " + l + ": nothing masks the attention scores before Softmax; "
                        + "kvquant's attention is causal, so a graph that attends to every key it is given is not supported");
            }
        }
        int[][] settings = {{0, 6}, {5, 3}, {longProbe - 1, 1}, {longProbe - 4, 4}};
        run(model, wanted, stopShapes, pastAxisLen, settings, (st, r) -> {
            int past = st[0];
            int n = st[1];
            Map<String, Grid> values = new HashMap<>();
            for (String o : wanted) {
                values.put(o, Grid.of(r.get(o), n, past + n, o));
            }
            for (List<Op> ops : perLayer) {
                checkLayer(model, ops, values, past, n);
            }
        });
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

    private static void checkLayer(OnnxModel model, List<Op> ops, Map<String, Grid> values, int past, int n) {
        int total = past + n;
        boolean[][] masked = new boolean[n][total];
        for (Op op : ops) {
            String name = "node '" + op.node().name() + "' (" + op.node().op() + ") between the attention scores and Softmax "
                    + "of layer " + op.layer() + " is not a causal mask kvquant recognizes: ";
            String tail = " (probed at past " + past + ", " + n + " new tokens); ALiBi, relative-position biases and "
                    + "sliding windows are not supported in this graph form";
            Grid bias = op.bias() == null ? null : grid(model, values, op.bias(), n, total);
            Grid cond = op.condition() == null ? null : grid(model, values, op.condition(), n, total);
            Grid fill = op.fill() == null ? null : grid(model, values, op.fill(), n, total);
            int heads = bias != null ? bias.heads : Math.max(cond.heads, fill.heads);
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < total; j++) {
                        boolean visible = j <= past + i;
                        boolean m;
                        if (bias != null) {
                            double v = bias.get(h, i, j);
                            if (visible && v <= MASKED) {
                                throw new IllegalArgumentException(name + "it masks visible key " + j + " for query "
                                        + (past + i) + " (a sliding window of " + (past + i - j) + " tokens or less?)" + tail);
                            }
                            if (visible && v != 0) {
                                throw new IllegalArgumentException(name + "it adds " + v + " to the score of visible key "
                                        + j + " for query " + (past + i) + tail);
                            }
                            if (!(v == 0 || v <= MASKED)) {
                                throw new IllegalArgumentException(name + "it adds " + v + ", neither 0 nor a mask (<= "
                                        + MASKED + "), to key " + j + " for query " + (past + i) + tail);
                            }
                            m = v <= MASKED;
                        } else {
                            boolean keep = (cond.get(h, i, j) != 0) == op.keepWhenTrue();
                            if (!keep && fill.get(h, i, j) > MASKED) {
                                throw new IllegalArgumentException(name + "it replaces the score of key " + j + " for query "
                                        + (past + i) + " with " + fill.get(h, i, j) + ", not a mask (<= " + MASKED + ")"
                                        + tail);
                            }
                            m = !keep;
                        }
                        if (m && visible) {
                            throw new IllegalArgumentException(name + "it masks visible key " + j + " for query "
                                    + (past + i) + " (a sliding window of " + (past + i - j) + " tokens or less?)" + tail);
                        }
                        masked[i][j] |= m;
                    }
                }
            }
        }
        for (int i = 0; i < n; i++) {
            for (int j = past + i + 1; j < total; j++) {
                if (!masked[i][j]) {
                    StringBuilder names = new StringBuilder();
                    for (Op op : ops) {
                        names.append(names.isEmpty() ? "" : ", ").append('\'').append(op.node().name()).append('\'');
                    }
                    throw new IllegalArgumentException("layer " + ops.get(0).layer() + ": the mask between the attention "
                            + "scores and Softmax (" + names + ") leaves future key " + j + " visible to query " + (past + i)
                            + "; kvquant's attention is causal, so a non-causal graph is not supported");
                }
            }
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
