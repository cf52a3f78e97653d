package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.DenseOps;
import io.kvquant.demo.graph.DenseOps.Kernel;
import io.kvquant.demo.graph.DenseOps.T;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.Pb;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The engine's decode step in Java: the pieces' dense layers for one token, run by a small
 * interpreter ({@link DenseOps}) on the very weights ONNX Runtime's general sessions use
 * ({@link SharedWeights}: held once). A decode step through ONNX Runtime pays its per-run and
 * per-node overhead five times per token on the bundled model (1.4–1.9 ms of a ~3.5 ms step at
 * 1K, docs/engine.md) for ~3.4 M multiply-adds; here the step is a list of Java kernels whose
 * matrix products stream the weights once ({@link io.kvquant.simd.GemvOps}).
 *
 * <p>Built when the engine opens, from the prepared pieces: every node is compiled, and a dummy
 * step (token 1 at position 3, pseudo-random attention outputs) is evaluated once; nodes whose
 * inputs are all constant (initializers, Constant, Shape of a tensor whose shape is fixed during
 * a decode step) are folded into constants, the others form the step's plan. What it refuses, in
 * one line naming it, with the general pieces used instead: an operator, attribute, element type
 * or domain {@link DenseOps} does not implement; a piece input other than the token ids,
 * positions and attention outputs (an attention mask, say); a shape that depends on the step's
 * data; fused attention layers (the GroupQueryAttention and MultiHeadAttention cuts, whose rotary
 * embedding kvquant applies). The plan is then checked against ONNX Runtime's
 * general sessions on the same dummy step: every piece output must agree within
 * {@value #TOLERANCE} (relative to the output's largest magnitude), or the engine says what
 * differs and decodes with ONNX Runtime.
 */
final class JavaPieces {

    /** Largest relative difference (max |a − b| / max |a|, per piece output) accepted on the check step. */
    static final double TOLERANCE = 1e-4;
    /**
     * fp32 weights of rank below 2, or of at most this many elements, are copied onto the heap
     * (norm scales and biases: read elementwise every step); matrices stay where they lie, for
     * {@link io.kvquant.simd.GemvOps}.
     */
    private static final int HEAP_WEIGHT = 4096;

    private record Step(Kernel kernel, int[] in, int[] out) {
    }

    /** What a decode step calls between pieces: layer {@code layer}'s attention for one token. */
    interface Attend {
        float[] attend(int layer, float[] q, float[] k, float[] v);
    }

    private final List<List<Step>> plan = new ArrayList<>();
    private T[] statics;
    private int idsSlot = -1;
    private int posSlot = -1;
    private final List<int[]> layerSlots = new ArrayList<>();
    private int logitsSlot = -1;
    /** Nodes run per step and nodes folded into constants at build. */
    int dynamicNodes;
    int foldedNodes;

    /** The helper thread of the large matrix products; null with one thread. */
    private final PairRunner runner;

    private JavaPieces(PairRunner runner) {
        this.runner = runner;
    }

    /**
     * Builds the Java decode step for {@code jm}'s pieces ({@code models}, weights in
     * {@code weights}) and checks it against {@code jm.sessions}; null after one line to
     * {@code warn} saying why not.
     */
    static JavaPieces build(JavaAttentionModel jm, List<OnnxModel> models, SharedWeights weights, int threads,
                            java.util.function.Consumer<String> warn) {
        PairRunner runner = threads > 1 ? new PairRunner() : null;
        try {
            Dummy d = new Dummy();
            JavaPieces jp = plan(jm, models, weights, d, runner);
            String diff = check(jm, d);
            if (diff != null) {
                jp.close();
                warn.accept("kvquant: the engine's Java decode step differs from ONNX Runtime's pieces on a check step ("
                        + diff + "); decoding with ONNX Runtime");
                return null;
            }
            return jp;
        } catch (DenseOps.Unsupported e) {
            closeRunner(runner);
            warn.accept(cannot(e.getMessage()));
            return null;
        } catch (OrtException | RuntimeException e) {
            closeRunner(runner);
            warn.accept(cannot(DecoderModel.firstLine(String.valueOf(e.getMessage()))));
            return null;
        }
    }

    private static void closeRunner(PairRunner r) {
        if (r != null) {
            r.close();
        }
    }

    /** The helper thread, to lend the attention ({@link io.kvquant.attention.DecodeAttention#workers}); null with one thread. */
    PairRunner runner() {
        return runner;
    }

    /** Stops the helper thread. */
    void close() {
        closeRunner(runner);
    }

    /**
     * Largest size of the pieces' weights (bytes) for which the engine decodes with the Java step
     * by default: {@code kvq.engine.javaStepMaxMiB} MiB, default {@value #MAX_WEIGHT_MIB}. Each
     * step streams every weight once; while they fit the two cores' caches the Java step's
     * products run from cache and it wins by ONNX Runtime's per-run overhead (the bundled model,
     * 18 MB: 1.6–2x faster per step); from memory ONNX Runtime's prepacked products stream
     * faster (the 370 MB benchmark model at 4K: 58 against 46 ms per step; docs/engine.md).
     */
    static long maxWeightBytes() {
        return Long.getLong("kvq.engine.javaStepMaxMiB", MAX_WEIGHT_MIB) << 20;
    }

    static final long MAX_WEIGHT_MIB = 32;

    /** Bytes of the pieces' weights with external data, each distinct (file, offset) once. */
    static long weightBytes(List<OnnxModel> models) {
        Set<String> seen = new HashSet<>();
        long total = 0;
        for (OnnxModel m : models) {
            for (byte[] init : m.initializers.values()) {
                Pb t = Pb.parse(init);
                if (t.varint(14, 0) != 1) {
                    continue;
                }
                OnnxModel.ExternalData x = OnnxModel.ExternalData.of(t);
                long len = x.length();
                if (len < 0) {
                    len = 4;
                    for (Pb.Field d : t.all(1)) {
                        len *= d.bits();
                    }
                }
                if (seen.add(x.location() + "@" + x.offset())) {
                    total += len;
                }
            }
        }
        return total;
    }

    static String cannot(String reason) {
        return "kvquant: the engine's Java decode step cannot be built (" + reason + "); decoding with ONNX Runtime";
    }

    /** The build's dummy step: its inputs and every tensor's value in it. */
    private static final class Dummy {
        static final long TOKEN = 1;
        static final long POSITION = 3;
        final Map<String, T> values = new HashMap<>();
        final Map<String, float[]> attention = new HashMap<>();
    }

    private static JavaPieces plan(JavaAttentionModel jm, List<OnnxModel> models, SharedWeights weights, Dummy d,
                                   PairRunner runner) {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new DenseOps.Unsupported("a big-endian machine (the weights are little-endian)");
        }
        for (JavaAttentionModel.LayerInfo l : jm.layers) {
            if (l.rotary() != null) {
                throw new DenseOps.Unsupported("fused attention layers (GroupQueryAttention or MultiHeadAttention cut)");
            }
        }
        JavaPieces jp = new JavaPieces(runner);
        Map<String, Integer> slot = new HashMap<>();
        List<T> vals = new ArrayList<>();
        Set<Integer> dynamic = new HashSet<>();
        java.util.Random rnd = new java.util.Random(42);
        java.util.function.Function<String, Integer> slotOf = name -> slot.computeIfAbsent(name, k -> {
            vals.add(null);
            return vals.size() - 1;
        });
        for (int s = 0; s < models.size(); s++) {
            OnnxModel m = models.get(s);
            long opset = opset(m);
            List<Step> steps = new ArrayList<>();
            for (String in : jm.pieces.get(s).inputs()) {
                if (slot.containsKey(in)) {
                    continue;
                }
                if (in.equals("input_ids") || in.equals("position_ids")) {
                    int i = slotOf.apply(in);
                    T t = T.longs(OnnxModel.INT64, new int[] {1, 1}, new long[] {in.equals("input_ids") ? Dummy.TOKEN : Dummy.POSITION});
                    vals.set(i, t);
                    dynamic.add(i);
                    if (in.equals("input_ids")) {
                        jp.idsSlot = i;
                    } else {
                        jp.posSlot = i;
                    }
                    continue;
                }
                throw new DenseOps.Unsupported("piece " + s + " reads " + in + "; the Java decode step feeds input_ids, "
                        + "position_ids and the attention outputs only");
            }
            Map<String, MemorySegment> segs = weights.segments.get(s);
            for (Map.Entry<String, byte[]> e : m.initializers.entrySet()) {
                int i = slotOf.apply(e.getKey());
                vals.set(i, initializer(e.getKey(), Pb.parse(e.getValue()), segs.get(e.getKey())));
                dynamic.remove(i);
            }
            for (OnnxModel.Node n : m.nodes) {
                Kernel k = DenseOps.compile(n, opset, runner == null ? DenseOps.Parallel.INLINE : runner);
                T[] in = new T[n.inputs().size()];
                int[] inSlots = new int[in.length];
                boolean dyn = false;
                for (int i = 0; i < in.length; i++) {
                    String name = n.inputs().get(i);
                    if (name.isEmpty()) {
                        inSlots[i] = -1;
                        continue;
                    }
                    Integer si = slot.get(name);
                    if (si == null || vals.get(si) == null) {
                        throw new DenseOps.Unsupported("node " + n.name() + " reads " + name + ", which nothing before it made");
                    }
                    inSlots[i] = si;
                    in[i] = vals.get(si);
                    dyn |= dynamic.contains(si);
                }
                if (n.op().equals("Shape") || n.op().equals("Size")) {
                    dyn = false; // every shape is fixed during a decode step (checked below for shape-giving inputs)
                }
                if (dyn) {
                    for (int p : shapeInputs(n.op())) {
                        if (p < inSlots.length && inSlots[p] >= 0 && dynamic.contains(inSlots[p])) {
                            throw new DenseOps.Unsupported("node " + n.name() + " (" + n.op() + ") takes its output shape "
                                    + "from the step's data");
                        }
                    }
                }
                T[] out;
                try {
                    out = k.run(in);
                } catch (DenseOps.Unsupported e) {
                    throw e;
                } catch (RuntimeException e) {
                    throw new DenseOps.Unsupported("node " + n.name() + " (" + n.op() + ") fails on the check step: "
                            + e.getMessage());
                }
                int[] outSlots = new int[n.outputs().size()];
                for (int j = 0; j < outSlots.length; j++) {
                    String name = n.outputs().get(j);
                    if (name.isEmpty() || j >= out.length) {
                        outSlots[j] = -1;
                        continue;
                    }
                    int si = slotOf.apply(name);
                    outSlots[j] = si;
                    vals.set(si, out[j]);
                    if (dyn) {
                        dynamic.add(si);
                    } else {
                        dynamic.remove(si);
                    }
                }
                if (dyn) {
                    steps.add(new Step(k, inSlots, outSlots));
                    jp.dynamicNodes++;
                } else {
                    jp.foldedNodes++;
                }
            }
            jp.plan.add(steps);
            for (String o : jm.pieces.get(s).outputs()) {
                Integer si = slot.get(o);
                if (si == null || vals.get(si) == null) {
                    throw new DenseOps.Unsupported("piece " + s + " output " + o + " is not made by its nodes");
                }
                d.values.put(o, vals.get(si));
            }
            if (s < jm.layers.size()) {
                JavaAttentionModel.LayerInfo l = jm.layers.get(s);
                int[] ls = new int[4];
                String[] names = {l.query(), l.newKey(), l.newValue()};
                for (int j = 0; j < 3; j++) {
                    Integer si = slot.get(names[j]);
                    if (si == null || !vals.get(si).isFloat()) {
                        throw new DenseOps.Unsupported("layer " + s + ": " + names[j] + " is not an fp32 output of piece " + s);
                    }
                    ls[j] = si;
                }
                T q = vals.get(ls[0]);
                float[] att = new float[q.size()];
                for (int i = 0; i < att.length; i++) {
                    att[i] = (float) (0.5 * rnd.nextGaussian());
                }
                int o = slotOf.apply(l.output());
                vals.set(o, T.floats(q.shape, att));
                dynamic.add(o);
                ls[3] = o;
                jp.layerSlots.add(ls);
                d.attention.put(l.output(), att);
                d.values.put(l.output(), vals.get(o));
            }
        }
        Integer lg = slot.get("logits");
        if (lg == null || !vals.get(lg).isFloat()) {
            throw new DenseOps.Unsupported("no fp32 logits output");
        }
        jp.logitsSlot = lg;
        T[] st = new T[vals.size()];
        for (int i = 0; i < st.length; i++) {
            st[i] = dynamic.contains(i) ? null : vals.get(i);
        }
        jp.statics = st;
        return jp;
    }

    /** Inputs (0-based) that give an operator's output shape by their values. */
    private static int[] shapeInputs(String op) {
        return switch (op) {
            case "Reshape", "Expand", "Unsqueeze", "Squeeze", "Split", "Tile", "ReduceMean", "ReduceSum", "ReduceMax" ->
                new int[] {1};
            case "Slice" -> new int[] {1, 2, 3, 4};
            case "Range" -> new int[] {0, 1, 2};
            case "ConstantOfShape" -> new int[] {0};
            default -> new int[0];
        };
    }

    private static long opset(OnnxModel m) {
        for (Pb.Field f : m.model.all(8)) {
            Pb o = f.message();
            String dom = o.string(1, "");
            if (dom.isEmpty() || dom.equals("ai.onnx")) {
                return o.varint(2, 0);
            }
        }
        throw new DenseOps.Unsupported("a piece without a default-domain opset");
    }

    private static T initializer(String name, Pb t, MemorySegment seg) {
        if (t.varint(14, 0) != 1) {
            T v = DenseOps.tensor(t, "initializer " + name);
            if (v.isFloat() && v.shape.length == 2 && v.size() > HEAP_WEIGHT) {
                // an inline matrix: into native memory once, for the Vector API's loads
                MemorySegment m = java.lang.foreign.Arena.ofAuto().allocate(4L * v.size(), 64);
                MemorySegment.copy(v.f(), 0, m, ValueLayout.JAVA_FLOAT, 0, v.size());
                return T.weight(v.shape, m);
            }
            return v;
        }
        if (seg == null) {
            throw new DenseOps.Unsupported("initializer " + name + " has external data the engine did not map");
        }
        int type = (int) t.varint(2, 0);
        List<Pb.Field> df = t.all(1);
        int[] shape = new int[df.size()];
        long n = 1;
        for (int k = 0; k < shape.length; k++) {
            shape[k] = Math.toIntExact(df.get(k).bits());
            n *= shape[k];
        }
        switch (type) {
            case OnnxModel.FLOAT -> {
                T w = T.weight(shape, seg);
                return shape.length < 2 || n <= HEAP_WEIGHT ? T.floats(shape, w.f()) : w;
            }
            case OnnxModel.INT64 -> {
                return T.longs(OnnxModel.INT64, shape, seg.asSlice(0, 8 * n).toArray(ValueLayout.JAVA_LONG_UNALIGNED));
            }
            case OnnxModel.INT32 -> {
                int[] v = seg.asSlice(0, 4 * n).toArray(ValueLayout.JAVA_INT_UNALIGNED);
                long[] l = new long[v.length];
                for (int i = 0; i < v.length; i++) {
                    l[i] = v[i];
                }
                return T.longs(OnnxModel.INT32, shape, l);
            }
            default -> throw new DenseOps.Unsupported("initializer " + name + " of ONNX element type " + type);
        }
    }

    /** The check step through ONNX Runtime's general sessions against the plan's dummy values: null when they agree. */
    private static String check(JavaAttentionModel jm, Dummy d) throws OrtException {
        var env = DecoderModel.environment();
        List<AutoCloseable> owned = new ArrayList<>();
        try {
            Map<String, OnnxTensor> avail = new HashMap<>();
            OnnxTensor ids = OnnxTensor.createTensor(env, new long[][] {{Dummy.TOKEN}});
            owned.add(ids);
            OnnxTensor pos = OnnxTensor.createTensor(env, new long[][] {{Dummy.POSITION}});
            owned.add(pos);
            avail.put("input_ids", ids);
            avail.put("position_ids", pos);
            for (int s = 0; s < jm.sessions.size(); s++) {
                Map<String, OnnxTensor> in = new HashMap<>();
                for (String name : jm.pieces.get(s).inputs()) {
                    in.put(name, avail.get(name));
                }
                OrtSession.Result r = jm.sessions.get(s).run(in);
                owned.add(r);
                for (String name : jm.pieces.get(s).outputs()) {
                    OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("piece output " + name + " missing"));
                    OnnxTensor t = (OnnxTensor) v;
                    avail.put(name, t);
                    String diff = compare(name, t, d.values.get(name));
                    if (diff != null) {
                        return diff;
                    }
                }
                if (s < jm.layers.size()) {
                    JavaAttentionModel.LayerInfo l = jm.layers.get(s);
                    T mine = d.values.get(l.output());
                    long[] shape = Arrays.stream(mine.shape).asLongStream().toArray();
                    OnnxTensor out = OnnxTensor.createTensor(env, FloatBuffer.wrap(d.attention.get(l.output())), shape);
                    owned.add(out);
                    avail.put(l.output(), out);
                }
            }
            return null;
        } finally {
            DecodeSessions.closeAll(owned);
        }
    }

    private static String compare(String name, OnnxTensor ort, T mine) {
        long[] os = ort.getInfo().getShape();
        long[] ms = Arrays.stream(mine.shape).asLongStream().toArray();
        if (!Arrays.equals(os, ms)) {
            return name + ": shape " + Arrays.toString(ms) + " instead of " + Arrays.toString(os);
        }
        if (ort.getInfo().type == OnnxJavaType.FLOAT) {
            if (!mine.isFloat()) {
                return name + ": integers instead of fp32";
            }
            FloatBuffer fb = ort.getFloatBuffer();
            float[] a = new float[fb.remaining()];
            fb.get(a);
            float[] b = mine.f();
            double num = 0;
            double den = 0;
            for (int i = 0; i < a.length; i++) {
                num = Math.max(num, Math.abs((double) a[i] - b[i]));
                den = Math.max(den, Math.abs(a[i]));
            }
            double rel = num == 0 ? 0 : num / Math.max(den, 1e-30);
            return rel <= TOLERANCE ? null : name + ": relative difference " + rel;
        }
        if (ort.getInfo().type == OnnxJavaType.INT64 && !mine.isFloat()) {
            java.nio.LongBuffer lb = ort.getLongBuffer();
            long[] a = new long[lb.remaining()];
            lb.get(a);
            return Arrays.equals(a, mine.l()) ? null : name + ": different integers";
        }
        return name + ": ONNX element type " + ort.getInfo().type + " where the Java step has " + mine.type;
    }

    /**
     * One decode step: token {@code token} at position {@code pos}, attention by {@code att}
     * between pieces; returns the last position's logits (a fresh array).
     */
    float[] step(long token, long pos, Attend att) {
        T[] v = statics.clone();
        if (idsSlot >= 0) {
            v[idsSlot] = T.longs(OnnxModel.INT64, new int[] {1, 1}, new long[] {token});
        }
        if (posSlot >= 0) {
            v[posSlot] = T.longs(OnnxModel.INT64, new int[] {1, 1}, new long[] {pos});
        }
        boolean pair = runner != null && runner.acquire();
        try {
            return run(v, att, pair);
        } finally {
            if (pair) {
                runner.release();
            }
        }
    }

    private float[] run(T[] v, Attend att, boolean pair) {
        for (int s = 0; s < plan.size(); s++) {
            for (Step st : plan.get(s)) {
                T[] in = new T[st.in.length];
                for (int i = 0; i < in.length; i++) {
                    in[i] = st.in[i] < 0 ? null : v[st.in[i]];
                }
                T[] out = st.kernel.run(in);
                for (int j = 0; j < st.out.length; j++) {
                    if (st.out[j] >= 0) {
                        v[st.out[j]] = out[j];
                    }
                }
            }
            if (s < layerSlots.size()) {
                int[] ls = layerSlots.get(s);
                float[] o = att.attend(s, v[ls[0]].f(), v[ls[1]].f(), v[ls[2]].f());
                v[ls[3]] = T.floats(v[ls[0]].shape, o); // the output has the queries' shape
            }
        }
        float[] lg = v[logitsSlot].f();
        int[] shape = v[logitsSlot].shape;
        int vocab = shape[shape.length - 1];
        return Arrays.copyOfRange(lg, lg.length - vocab, lg.length);
    }
}
