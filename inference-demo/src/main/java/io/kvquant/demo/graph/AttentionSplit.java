package io.kvquant.demo.graph;

import io.kvquant.attention.ScoreMods;
import io.kvquant.demo.graph.OnnxModel.Node;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Finds each layer's attention in a decoder exported in the Hugging Face/optimum layout and cuts
 * the graph around it, so that ONNX Runtime runs the dense parts and kvquant the attention.
 *
 * <p>Locating layer i: {@code present.i.key} is a Concat of {@code past_key_values.i.key} and the
 * new keys (after rotary embedding); from it, through shape ops (GQA expand/reshape, transpose)
 * and scalar scalings, to the scores MatMul, whose other operand is the queries; on through
 * scaling, mask and Softmax to the MatMul with the values, whose output is the attention output
 * [batch, heads, tokens, head_dim]. The same for {@code present.i.value}.
 *
 * <p>Cutting: the attention nodes (those that compute the attention output but not the
 * queries, new keys or new values — the Concat with the past, score, mask and softmax nodes)
 * are removed. Every other node gets a stage: the number of attention outputs upstream of it.
 * Piece s runs the nodes of stage s; a tensor made in one stage and used in a later one (the
 * residual stream, rotary tables) becomes an output of the first piece and an input of the
 * later one. Nodes that depend on constants only are copied into every piece that needs them.
 */
public final class AttentionSplit {

    /** One layer's attention boundary. */
    public record Layer(int index, String query, String newKey, String newValue, String output, double scale,
                        Node keyConcat, Node valueConcat, Node scores, Node probsValues, Fused fused) {
    }

    /**
     * A layer whose attention is one com.microsoft GroupQueryAttention node: tensors are
     * [batch, tokens, heads x head_dim] (queries alone, or queries|keys|values when {@code packed}),
     * rotary embedding (when {@code cos} is not null) is applied by kvquant to the queries and new
     * keys at positions past..past+n-1, rows of {@code cos}/{@code sin} are [rotaryDim / 2].
     */
    public record Fused(int qHeads, int kvHeads, boolean packed, boolean interleaved, int rotaryDim, float[] cos,
                        float[] sin) {
    }

    /** GroupQueryAttention attributes kvquant implements, and the value of each that it can run. */
    private static final Set<String> GQA_ATTRIBUTES = Set.of("num_heads", "kv_num_heads", "scale", "do_rotary",
            "rotary_interleaved", "softcap", "local_window_size", "smooth_softmax");

    /** One piece of the cut graph: the serialized model and its input and output names. */
    public record Piece(int stage, byte[] model, List<String> inputs, List<String> outputs) {
    }

    private static final Set<String> PASS_THROUGH = Set.of("Unsqueeze", "Expand", "Reshape", "Transpose", "Identity",
            "Cast", "Tile", "Squeeze", "Flatten");
    private static final Set<String> SCALE_OPS = Set.of("Mul", "Div");

    public final OnnxModel model;
    public final List<Layer> layers = new ArrayList<>();
    public final List<Piece> pieces = new ArrayList<>();
    private final List<List<MaskProbe.Op>> masks = new ArrayList<>();
    /** Per plain layer: its attention sinks (a Concat onto the scores), or null. */
    private final List<MaskProbe.Sink> sinks = new ArrayList<>();
    private int probeLength;
    private final List<String[]> sequenceInputs = new ArrayList<>();
    /** Score modifiers (sliding window, softcap, sinks) per layer index; absent: plain causal. */
    private final Map<Integer, ScoreMods> scoreMods = new HashMap<>();

    /** What layer {@code index}'s attention does to its scores besides scale and the causal mask. */
    public ScoreMods mods(int index) {
        return scoreMods.getOrDefault(index, ScoreMods.NONE);
    }

    private AttentionSplit(OnnxModel model) {
        this.model = model;
    }

    /** Locates every layer's attention and builds the pieces; one-line errors name what is missing. */
    public static AttentionSplit of(OnnxModel model) {
        return of(model, 0);
    }

    /**
     * As {@link #of(OnnxModel)}, for a model whose context is {@code maxContext} tokens (0:
     * unknown): the causal-mask probe runs up to min(maxContext, {@value MaskProbe#LONG}) tokens.
     */
    public static AttentionSplit of(OnnxModel model, int maxContext) {
        AttentionSplit s = new AttentionSplit(model);
        s.probeLength = maxContext > 0 ? Math.min(maxContext, MaskProbe.LONG) : MaskProbe.LONG;
        for (int i = 0; ; i++) {
            if (!model.outputs.containsKey("present." + i + ".key")) {
                if (i == 0) {
                    throw new IllegalArgumentException("the model has no present.0.key output: export it with past key "
                            + "values (Hugging Face/optimum decoder layout)");
                }
                break;
            }
            Node fused = model.producer.get("present." + i + ".key");
            if (MhaCut.is(fused)) { // com.microsoft::MultiHeadAttention: taken over like GQA (MhaCut)
                s.layers.add(MhaCut.locate(model, i, fused));
                continue;
            }
            if (fused != null && !fused.domain().isEmpty() && !fused.domain().equals("ai.onnx")
                    || fused != null && fused.op().equals("Attention")) {
                s.layers.add(s.locateFused(i, fused));
                continue;
            }
            List<MaskProbe.Op> ops = new ArrayList<>();
            MaskProbe.Sink[] sink = new MaskProbe.Sink[1];
            s.layers.add(s.locate(i, ops, sink));
            s.masks.add(ops);
            s.sinks.add(sink[0]);
        }
        if (!s.masks.isEmpty()) {
            if (s.masks.size() != s.layers.size()) {
                throw new IllegalArgumentException("the model mixes fused and plain attention layers; not supported");
            }
            s.probeMasks();
        } else if (!s.sequenceInputs.isEmpty()) { // GroupQueryAttention layers (MultiHeadAttention has none)
            s.probeSequenceLengths();
        }
        s.cut();
        return s;
    }

    private Layer locate(int i, List<MaskProbe.Op> maskOps, MaskProbe.Sink[] sink) {
        String where = "layer " + i + ": ";
        Node keyConcat = concatOf(i, "key", where);
        Node valueConcat = concatOf(i, "value", where);
        String newKey = newPart(keyConcat, i, "key");
        String newValue = newPart(valueConcat, i, "value");
        // keys: from present.i.key to the scores MatMul
        double[] scale = {1.0};
        Node scores = walkToMatMul("present." + i + ".key", scale, where + "no MatMul reads present." + i + ".key");
        String query = scores.inputs().get(0);
        if (!reaches("present." + i + ".key", scores.inputs().get(1))) {
            throw new IllegalArgumentException(where + "the scores MatMul takes the keys first; only Q·Kᵀ order is supported");
        }
        // from the scores to Softmax, collecting scalar scalings and the mask operations (proved
        // to be the causal mask by MaskProbe once every layer is located)
        Node n = scores;
        Node softmax = null;
        for (int guard = 0; guard < 32 && softmax == null; guard++) {
            List<Node> cs = model.consumersOf(n.outputs().get(0));
            if (cs.size() != 1) {
                throw new IllegalArgumentException(where + "the attention scores feed " + cs.size() + " nodes; expected one chain "
                        + "to Softmax");
            }
            Node c = cs.get(0);
            String prev = n.outputs().get(0);
            String between = "node '" + c.name() + "' (" + c.op() + ") between the attention scores and Softmax of layer " + i;
            switch (c.op()) {
                case "Softmax" -> softmax = c;
                case "Mul", "Div" -> {
                    String other = c.inputs().get(0).equals(prev) ? c.inputs().get(1) : c.inputs().get(0);
                    double v = model.scalar(other);
                    if (Double.isNaN(v) || (c.op().equals("Div") && !c.inputs().get(0).equals(prev))) {
                        throw new IllegalArgumentException(between + " is not a scaling by a constant: "
                                + "not supported in this graph form");
                    }
                    scale[0] *= c.op().equals("Mul") ? v : 1 / v;
                }
                case "Add" -> {
                    String bias = c.inputs().get(0).equals(prev) ? c.inputs().get(1) : c.inputs().get(0);
                    if (reaches(scores.outputs().get(0), bias)) {
                        throw new IllegalArgumentException(between + " adds a tensor computed from the scores; not supported");
                    }
                    maskOps.add(new MaskProbe.Op(i, c, bias, null, null, true, scale[0]));
                }
                case "Where" -> {
                    int at = c.inputs().indexOf(prev);
                    if (at != 1 && at != 2) {
                        throw new IllegalArgumentException(between + " uses the scores as its condition; not supported");
                    }
                    String fill = c.inputs().get(3 - at);
                    if (reaches(scores.outputs().get(0), fill) || reaches(scores.outputs().get(0), c.inputs().get(0))) {
                        throw new IllegalArgumentException(between + " selects with tensors computed from the scores; "
                                + "not supported");
                    }
                    maskOps.add(new MaskProbe.Op(i, c, null, c.inputs().get(0), fill, at == 1, scale[0]));
                }
                case "Cast", "Identity" -> {
                }
                case "Tanh" -> throw new IllegalArgumentException(between + " is logit softcapping, which kvquant's "
                        + "attention does not support in this graph form");
                case "Concat" -> {
                    // attention sinks as gpt-oss writes them: Concat(scores, sinks) on the last axis, Softmax,
                    // then a Slice dropping the sinks' column before the MatMul with the values
                    Pb.Field ax = c.attribute("axis");
                    long axis = ax == null ? 0 : ax.message().varint(3, 0);
                    if (sink[0] != null || c.inputs().size() != 2 || !c.inputs().get(0).equals(prev)
                            || (axis != -1 && axis != 3) || reaches(scores.outputs().get(0), c.inputs().get(1))) {
                        throw new IllegalArgumentException(between + " extends the scores (attention sinks?) in a form "
                                + "kvquant does not recognize (it takes Concat(scores, sinks) on the last axis)");
                    }
                    sink[0] = new MaskProbe.Sink(i, c, c.inputs().get(1), scale[0]);
                }
                default -> throw new IllegalArgumentException(between + " is not a scaling or a causal mask; not supported "
                        + "in this graph form");
            }
            n = c;
        }
        if (softmax == null) {
            throw new IllegalArgumentException(where + "no Softmax after the scores MatMul");
        }
        Node pv = null;
        boolean sliced = false;
        n = softmax;
        for (int guard = 0; guard < 8 && pv == null; guard++) {
            List<Node> cs = model.consumersOf(n.outputs().get(0));
            if (cs.size() != 1) {
                throw new IllegalArgumentException(where + "the attention probabilities feed " + cs.size() + " nodes");
            }
            Node c = cs.get(0);
            if (c.op().equals("MatMul")) {
                pv = c;
            } else if (c.op().equals("Slice") && sink[0] != null && !sliced) {
                if (!dropsLastColumn(c)) {
                    throw new IllegalArgumentException(where + "the Slice '" + c.name() + "' after Softmax does not drop "
                            + "exactly the attention sinks' last column (starts 0, ends -1 on the last axis)");
                }
                sliced = true;
            } else if (!c.op().equals("Cast") && !c.op().equals("Identity")) {
                throw new IllegalArgumentException(where + "unexpected " + c.op() + " between Softmax and the MatMul with values");
            }
            n = c;
        }
        if (pv == null || !reaches("present." + i + ".value", pv.inputs().get(1))) {
            throw new IllegalArgumentException(where + "the MatMul after Softmax does not read present." + i + ".value");
        }
        if (sink[0] != null && !sliced) {
            throw new IllegalArgumentException("node '" + sink[0].node().name() + "' (Concat) between the attention scores "
                    + "and Softmax of layer " + i + " extends the scores (attention sinks?) but no Slice drops the extra "
                    + "column before the MatMul with the values; not supported");
        }
        return new Layer(i, query, newKey, newValue, pv.outputs().get(0), scale[0], keyConcat, valueConcat, scores, pv, null);
    }

    /**
     * Layer i computed by one fused node. GroupQueryAttention is taken over (kvquant does what the
     * operator does: rotary embedding from cos_cache/sin_cache, scale, grouped heads, causal
     * attention over past + new tokens); every attribute or input it does not implement is refused
     * by name. Other fused attention operators are refused.
     */
    private Layer locateFused(int i, Node n) {
        String node = "node '" + n.name() + "' (" + n.domain() + "::" + n.op() + ") of layer " + i;
        if (!n.op().equals("GroupQueryAttention") || !n.domain().equals("com.microsoft")) {
            throw new IllegalArgumentException(node + ": kvquant's compressed-attention mode supports plain "
                    + "MatMul/Softmax attention, com.microsoft::GroupQueryAttention and MultiHeadAttention only");
        }
        for (Pb.Field f : n.raw().all(5)) {
            Pb a = f.message();
            String name = a.string(1, "");
            boolean neutral = switch (name) {
                // implemented by ScoreMods; values it cannot take are refused below
                case "softcap" -> a.one(2) == null || Float.intBitsToFloat((int) a.one(2).bits()) >= 0f;
                case "local_window_size" -> a.varint(3, -1) == -1 || a.varint(3, -1) > 0;
                case "smooth_softmax" -> a.varint(3, 0) == 0 || a.varint(3, 0) == 1;
                case "qk_output", "kv_cache_bit_width" -> a.varint(3, 0) == 0;
                case "k_quant_type", "v_quant_type" -> {
                    Pb.Field sv = a.one(4);
                    yield sv == null || sv.string().equals("NONE");
                }
                default -> GQA_ATTRIBUTES.contains(name);
            };
            if (!neutral) {
                String why = switch (name) {
                    case "softcap" -> "a negative logit softcap is not understood";
                    case "local_window_size" -> "a sliding window must be -1 (none) or at least 1 key";
                    case "smooth_softmax" -> "smooth_softmax must be 0 or 1";
                    case "k_quant_type", "v_quant_type", "kv_cache_bit_width" -> "ONNX Runtime's own quantized KV cache "
                            + "cannot be combined with kvquant's cache; export without it";
                    default -> "kvquant does not implement it";
                };
                throw new IllegalArgumentException(node + ": attribute " + name + " = " + attrText(a) + ": " + why);
            }
        }
        List<String> in = n.inputs();
        String[] unsupported = {null, null, null, null, null, null, null, null, null, "position_ids", "attention_bias",
            "head_sink"};
        for (int k = 9; k < in.size(); k++) {
            if (!in.get(k).isEmpty() && k != 11) { // 11, head_sink: taken below
                throw new IllegalArgumentException(node + ": input " + (k < unsupported.length ? unsupported[k] : "#" + k)
                        + " (" + in.get(k) + ") is not supported; kvquant computes positions as past + i with a causal mask");
            }
        }
        for (int k = 3; k < n.outputs().size(); k++) {
            if (!n.outputs().get(k).isEmpty()) {
                throw new IllegalArgumentException(node + ": output #" + k + " (" + n.outputs().get(k) + ", the attention "
                        + "scores) is not supported");
            }
        }
        if (in.size() < 7) {
            throw new IllegalArgumentException(node + ": expected at least 7 inputs (query, key, value, past_key, "
                    + "past_value, seqlens_k, total_sequence_length)");
        }
        String pastKey = "past_key_values." + i + ".key";
        String pastValue = "past_key_values." + i + ".value";
        if (!in.get(3).equals(pastKey) || !in.get(4).equals(pastValue)
                || !n.outputs().get(1).equals("present." + i + ".key") || n.outputs().size() < 3
                || !n.outputs().get(2).equals("present." + i + ".value")) {
            throw new IllegalArgumentException(node + ": expected past_key/past_value to be the graph inputs " + pastKey
                    + "/" + pastValue + " and present_key/present_value the outputs present." + i + ".key/value");
        }
        int qHeads = (int) intAttr(n, "num_heads", 0);
        int kvHeads = (int) intAttr(n, "kv_num_heads", 0);
        if (qHeads <= 0 || kvHeads <= 0 || qHeads % kvHeads != 0) {
            throw new IllegalArgumentException(node + ": num_heads " + qHeads + " and kv_num_heads " + kvHeads
                    + " must be positive, num_heads a multiple of kv_num_heads");
        }
        long[] past = model.inputShape(pastKey);
        int headDim = past.length == 4 ? (int) past[3] : -1;
        if (headDim <= 0) {
            throw new IllegalArgumentException(node + ": " + pastKey + " must be declared [batch, kv_heads, past, head_dim] "
                    + "with a fixed head_dim");
        }
        boolean packed = in.get(1).isEmpty() && in.get(2).isEmpty();
        if (!packed && (in.get(1).isEmpty() || in.get(2).isEmpty())) {
            throw new IllegalArgumentException(node + ": key and value must both be given or both be empty (packed QKV)");
        }
        Pb.Field sc = n.attribute("scale");
        double scale = sc == null || sc.message().one(2) == null
                || Float.intBitsToFloat((int) sc.message().one(2).bits()) == 0f
                ? 1 / Math.sqrt(headDim) : Float.intBitsToFloat((int) sc.message().one(2).bits());
        boolean rotary = intAttr(n, "do_rotary", 0) != 0;
        boolean interleaved = intAttr(n, "rotary_interleaved", 0) != 0;
        float[] cos = null;
        float[] sin = null;
        int rotaryDim = 0;
        if (rotary) {
            if (in.size() < 9 || !model.initializers.containsKey(in.get(7)) || !model.initializers.containsKey(in.get(8))) {
                throw new IllegalArgumentException(node + ": do_rotary = 1 needs cos_cache and sin_cache as constant "
                        + "initializers");
            }
            long[] dims = model.dims(in.get(7));
            if (dims.length != 2 || !java.util.Arrays.equals(dims, model.dims(in.get(8)))) {
                throw new IllegalArgumentException(node + ": cos_cache/sin_cache must both be [max_positions, rotary_dim/2]");
            }
            rotaryDim = (int) dims[1] * 2;
            if (rotaryDim > headDim) {
                throw new IllegalArgumentException(node + ": rotary dimension " + rotaryDim + " exceeds head_dim " + headDim);
            }
            try {
                cos = model.floats(in.get(7));
                sin = model.floats(in.get(8));
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        } else if (in.size() > 7 && (!in.get(7).isEmpty() || in.size() > 8 && !in.get(8).isEmpty())) {
            throw new IllegalArgumentException(node + ": cos_cache/sin_cache given but do_rotary = 0; not supported");
        }
        scoreMods.put(i, fusedMods(n, node, qHeads, in.size() > 11 ? in.get(11) : ""));
        sequenceInputs.add(new String[] {in.get(5), in.get(6), node});
        String out = n.outputs().get(0);
        return new Layer(i, in.get(0), packed ? in.get(0) : in.get(1), packed ? in.get(0) : in.get(2), out, scale, null, null,
                null, null, new Fused(qHeads, kvHeads, packed, interleaved, rotaryDim, cos, sin));
    }

    /**
     * GroupQueryAttention's score modifiers as ONNX Runtime 1.29's CPU operator computes them:
     * scores scaled, then {@code softcap · tanh(s / softcap)} when softcap > 0; query p sees keys
     * (p − local_window_size, p] when local_window_size ≥ 0 (its last local_window_size keys,
     * itself included); {@code head_sink} (a constant [num_heads]) or, with smooth_softmax = 1 and
     * no head_sink, 0 is an extra logit in each head's softmax denominator.
     */
    private ScoreMods fusedMods(Node n, String node, int qHeads, String headSink) {
        Pb.Field sc = n.attribute("softcap");
        float softcap = sc == null || sc.message().one(2) == null ? 0f : Float.intBitsToFloat((int) sc.message().one(2).bits());
        int window = (int) Math.max(0, intAttr(n, "local_window_size", -1));
        float[] sinks = null;
        if (!headSink.isEmpty()) {
            if (!model.initializers.containsKey(headSink)) {
                throw new IllegalArgumentException(node + ": input head_sink (" + headSink + ") must be a constant "
                        + "initializer for kvquant to read the attention sinks");
            }
            long[] dims = model.dims(headSink);
            if (dims.length != 1 || dims[0] != qHeads) {
                throw new IllegalArgumentException(node + ": input head_sink (" + headSink + ") has shape "
                        + java.util.Arrays.toString(dims) + "; expected [num_heads] = [" + qHeads + "]");
            }
            try {
                sinks = model.floats(headSink);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        } else if (intAttr(n, "smooth_softmax", 0) == 1) {
            sinks = new float[qHeads]; // smooth softmax: an extra logit 0 per head
        }
        try {
            return ScoreMods.of(window, softcap, null, sinks);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(node + ": " + e.getMessage());
        }
    }

    /** A Slice with constant starts [0], ends [-1], axes [-1] (or [3]) and steps [1]: drops the last column. */
    private boolean dropsLastColumn(Node slice) {
        List<String> in = slice.inputs();
        if (in.size() < 4) {
            return false;
        }
        long[] starts = ints(in.get(1));
        long[] ends = ints(in.get(2));
        long[] axes = ints(in.get(3));
        long[] steps = in.size() > 4 && !in.get(4).isEmpty() ? ints(in.get(4)) : new long[] {1};
        return starts != null && ends != null && axes != null && steps != null && starts.length == 1 && starts[0] == 0
                && ends.length == 1 && ends[0] == -1 && axes.length == 1 && (axes[0] == -1 || axes[0] == 3)
                && steps.length == 1 && steps[0] == 1;
    }

    /** An int64/int32 constant's values (initializer or Constant node), or null. */
    private long[] ints(String t) {
        byte[] init = model.initializers.get(t);
        Pb tensor = null;
        if (init != null) {
            tensor = Pb.parse(init);
        } else {
            Node p = model.producer.get(t);
            if (p != null && p.op().equals("Constant") && p.attribute("value") != null) {
                tensor = p.attribute("value").message().one(5).message();
            }
        }
        if (tensor == null) {
            return null;
        }
        int type = (int) tensor.varint(2, 0);
        Pb.Field raw = tensor.one(9);
        List<Long> v = new ArrayList<>();
        if (raw != null) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(raw.bytes()).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            while (b.hasRemaining()) {
                v.add(type == OnnxModel.INT64 ? b.getLong() : type == OnnxModel.INT32 ? (long) b.getInt() : Long.MIN_VALUE);
            }
        } else {
            for (Pb.Field f : tensor.all(type == OnnxModel.INT64 ? 7 : 5)) {
                if (f.wireType() == 0) {
                    v.add(f.bits());
                } else {
                    try {
                        com.google.protobuf.CodedInputStream cin = com.google.protobuf.CodedInputStream.newInstance(f.bytes());
                        while (!cin.isAtEnd()) {
                            v.add(cin.readRawVarint64());
                        }
                    } catch (java.io.IOException e) {
                        return null;
                    }
                }
            }
        }
        long[] r = new long[v.size()];
        for (int k = 0; k < r.length; k++) {
            if (v.get(k) == Long.MIN_VALUE) {
                return null;
            }
            r[k] = type == OnnxModel.INT32 ? (int) (long) v.get(k) : v.get(k);
        }
        return r;
    }

    private static long intAttr(Node n, String name, long dflt) {
        Pb.Field a = n.attribute(name);
        return a == null ? dflt : a.message().varint(3, dflt);
    }

    private static String attrText(Pb a) {
        if (a.one(4) != null) {
            return a.one(4).string();
        }
        if (a.one(2) != null) {
            return Float.toString(Float.intBitsToFloat((int) a.one(2).bits()));
        }
        return Long.toString(a.varint(3, 0));
    }

    /** seqlens_k and total_sequence_length of every GroupQueryAttention: proved to be past+n-1 and past+n. */
    private void probeSequenceLengths() {
        MaskProbe.checkSequenceLengths(model, sequenceInputs, probeLength);
    }

    /**
     * Runs {@link MaskProbe} with the present and new keys/values fed as zeros (their shapes from
     * the past inputs' declared shapes and the Concat axis), so only the mask logic runs.
     */
    private void probeMasks() {
        Map<String, long[]> stops = new HashMap<>();
        int axis = -1;
        for (Layer l : layers) {
            for (String kind : new String[] {"key", "value"}) {
                Node concat = kind.equals("key") ? l.keyConcat() : l.valueConcat();
                String past = "past_key_values." + l.index() + "." + kind;
                long[] shape = model.inputShape(past);
                Pb.Field a = concat.attribute("axis");
                int ax = a == null ? 0 : (int) a.message().varint(3, 0);
                ax = ax < 0 ? ax + shape.length : ax;
                axis = ax;
                long[] present = shape.clone();
                long[] fresh = shape.clone();
                present[0] = 1;
                fresh[0] = 1;
                present[ax] = -2;
                fresh[ax] = -1;
                stops.put("present." + l.index() + "." + kind, present);
                stops.put(concat.outputs().get(0), present);
                stops.put(kind.equals("key") ? l.newKey() : l.newValue(), fresh);
            }
        }
        double[] scales = new double[layers.size()];
        for (int l = 0; l < scales.length; l++) {
            scales[l] = layers.get(l).scale();
        }
        // sliding windows and ALiBi slopes proved by the probe: kvquant's attention applies them
        ScoreMods[] found = MaskProbe.check(model, masks, stops, axis, probeLength, scales, sinks);
        for (int l = 0; l < found.length; l++) {
            if (found[l] != ScoreMods.NONE) {
                scoreMods.put(layers.get(l).index(), found[l]);
            }
        }
    }

    private static String newPart(Node concat, int i, String kind) {
        String past = "past_key_values." + i + "." + kind;
        return concat.inputs().get(0).equals(past) ? concat.inputs().get(1) : concat.inputs().get(0);
    }

    /** present.i.{key,value} = Concat(past_key_values.i.{..}, new): returns the Concat node. */
    private Node concatOf(int i, String kind, String where) {
        String present = "present." + i + "." + kind;
        String past = "past_key_values." + i + "." + kind;
        Node c = model.producer.get(present);
        while (c != null && (c.op().equals("Identity") || c.op().equals("Cast"))) {
            c = model.producer.get(c.inputs().get(0));
        }
        if (c == null || !c.op().equals("Concat") || c.inputs().size() != 2 || !c.inputs().contains(past)) {
            throw new IllegalArgumentException(where + present + " is not Concat(" + past + ", new " + kind + "s); "
                    + "cannot locate the attention");
        }
        return c;
    }

    /** Follows a tensor's consumers through shape ops and scalar scalings to the first MatMul. */
    private Node walkToMatMul(String from, double[] scale, String error) {
        String t = from;
        for (int guard = 0; guard < 32; guard++) {
            Node next = null;
            for (Node c : model.consumersOf(t)) {
                if (c.op().equals("MatMul")) {
                    return c;
                }
                if (PASS_THROUGH.contains(c.op())) {
                    next = c;
                } else if (SCALE_OPS.contains(c.op())) {
                    String other = c.inputs().get(0).equals(t) ? c.inputs().get(1) : c.inputs().get(0);
                    double v = model.scalar(other);
                    if (!Double.isNaN(v) && c.inputs().get(0).equals(t)) {
                        scale[0] *= c.op().equals("Mul") ? v : 1 / v;
                        next = c;
                    }
                }
            }
            if (next == null) {
                break;
            }
            t = next.outputs().get(0);
        }
        throw new IllegalArgumentException(error);
    }

    /** True when tensor {@code to} depends on tensor {@code from}. */
    private boolean reaches(String from, String to) {
        Deque<String> todo = new ArrayDeque<>(List.of(to));
        Set<String> seen = new HashSet<>();
        while (!todo.isEmpty()) {
            String t = todo.pop();
            if (t.equals(from)) {
                return true;
            }
            if (!seen.add(t)) {
                continue;
            }
            Node p = model.producer.get(t);
            if (p != null) {
                todo.addAll(p.inputs());
            }
        }
        return false;
    }

    /** Nodes needed to compute {@code targets}, stopping at {@code stops} and graph inputs. */
    private Set<Node> ancestors(Set<String> targets, Set<String> stops) {
        Set<Node> out = new LinkedHashSet<>();
        Deque<String> todo = new ArrayDeque<>(targets);
        Set<String> seen = new HashSet<>();
        while (!todo.isEmpty()) {
            String t = todo.pop();
            if (!seen.add(t) || stops.contains(t)) {
                continue;
            }
            Node p = model.producer.get(t);
            if (p != null && out.add(p)) {
                todo.addAll(p.inputs());
            }
        }
        return out;
    }

    private void cut() {
        Set<String> attnOut = new HashSet<>();
        Set<String> required = new LinkedHashSet<>();
        for (Layer l : layers) {
            attnOut.add(l.output());
            required.add(l.query());
            required.add(l.newKey());
            required.add(l.newValue());
        }
        if (!model.outputs.containsKey("logits")) {
            throw new IllegalArgumentException("the model has no 'logits' output");
        }
        required.add("logits");
        // everything the pieces must compute, with the attention outputs given from outside
        Set<Node> keep = ancestors(required, attnOut);
        // stages: number of attention outputs upstream
        Map<String, Integer> stageOf = new HashMap<>();
        for (Layer l : layers) {
            stageOf.put(l.output(), l.index() + 1);
        }
        Set<Node> free = new HashSet<>(); // depend on constants only
        Map<Node, Integer> nodeStage = new HashMap<>();
        for (Node n : model.nodes) { // ONNX graphs are topologically sorted
            if (!keep.contains(n)) {
                continue;
            }
            int st = -1;
            boolean constant = true;
            for (String in : n.inputs()) {
                if (in.isEmpty() || model.initializers.containsKey(in)) {
                    continue;
                }
                Node p = model.producer.get(in);
                if (p != null && free.contains(p)) {
                    continue;
                }
                constant = false;
                st = Math.max(st, stageOf.getOrDefault(in, 0));
            }
            if (constant) {
                free.add(n);
                continue;
            }
            st = Math.max(st, 0);
            nodeStage.put(n, st);
            for (String o : n.outputs()) {
                stageOf.put(o, st);
            }
        }
        int stages = layers.size() + 1;
        for (int s = 0; s < stages; s++) {
            Set<Node> piece = new LinkedHashSet<>();
            for (Map.Entry<Node, Integer> e : nodeStage.entrySet()) {
                if (e.getValue() == s) {
                    piece.add(e.getKey());
                }
            }
            // constant-only nodes this piece needs, transitively
            Deque<Node> todo = new ArrayDeque<>(piece);
            while (!todo.isEmpty()) {
                for (String in : todo.pop().inputs()) {
                    Node p = model.producer.get(in);
                    if (p != null && free.contains(p) && piece.add(p)) {
                        todo.add(p);
                    }
                }
            }
            Set<String> made = new HashSet<>();
            for (Node n : piece) {
                made.addAll(n.outputs());
            }
            List<String> ins = new ArrayList<>();
            for (Node n : piece) {
                for (String in : n.inputs()) {
                    if (!in.isEmpty() && !made.contains(in) && !model.initializers.containsKey(in) && !ins.contains(in)) {
                        ins.add(in);
                    }
                }
            }
            List<String> outs = new ArrayList<>();
            for (Node n : piece) {
                for (String o : n.outputs()) {
                    if (o.isEmpty() || outs.contains(o) || free.contains(n)) {
                        continue;
                    }
                    boolean later = required.contains(o);
                    for (Node c : model.consumersOf(o)) {
                        Integer cs = nodeStage.get(c);
                        later |= cs != null && cs > s;
                    }
                    if (later) {
                        outs.add(o);
                    }
                }
            }
            for (String t : ins) {
                if (model.elemType(t) == 0) {
                    throw new IllegalArgumentException("cannot tell the element type of " + t + ", which crosses a cut");
                }
            }
            pieces.add(new Piece(s, model.subModel("piece" + s, piece, ins, outs), ins, outs));
        }
    }
}
