package io.kvquant.demo.bench;

import com.google.protobuf.CodedOutputStream;
import io.kvquant.demo.graph.Pb;
import io.kvquant.demo.onnx.Json;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.LongConsumer;

/**
 * Writes a Llama-architecture decoder with random weights as ONNX, in Java (no Python): the
 * KV-heavy benchmark model. Memory and speed do not depend on the weights, so a fixed seed is
 * enough; what matters is the geometry (by default 8 layers, 8 KV heads of 128 dims: 64 KiB of
 * fp32 KV cache per token, 1 GiB at 16K tokens).
 *
 * <p>The graph is the Hugging Face/optimum "decoder with past" layout, built from the same
 * operators as the bundled export ({@code models/kvq-llama}), so that every execution mode and
 * the attention cut ({@code kvq prepare}) run it unchanged:
 * inputs {@code input_ids, attention_mask, position_ids [batch, seq]} and
 * {@code past_key_values.i.key|value [batch, kv_heads, past, head_dim]}; outputs
 * {@code logits [batch, seq, vocab]} and {@code present.i.key|value}. RMSNorm is
 * Pow/ReduceMean/Add/Sqrt/Div/Mul; rotary embedding is cos/sin tables from the positions
 * (Cast, Mul by the inverse frequencies, Concat, Cos, Sin) applied with rotate-half (Slice, Neg,
 * Concat); {@code present = Concat(past, new, axis 2)}; GQA repeats each KV head with
 * Unsqueeze/Expand/Reshape; attention is MatMul(Q, Kᵀ) · scale + mask → Softmax → MatMul(·, V)
 * with the additive mask built from the causal order and {@code attention_mask}; the MLP is
 * SwiGLU (Sigmoid, Mul).
 *
 * <p>The weights are streamed to the file, so writing a 400 MB model needs a few MB of heap.
 */
public final class BenchModelWriter {

    /** Format of the writer; recorded in config.json so that a stale model is rewritten. */
    public static final int FORMAT = 1;

    /** The shape of the model, and the seed of its random weights. */
    public record Geometry(int layers, int hidden, int qHeads, int kvHeads, int headDim, int intermediate, int vocab,
                           int maxPositions, double ropeTheta, long seed) {

        /** The benchmark default: 8 layers, 8 query and 8 KV heads of 128 dims, hidden 1024, MLP 2048, 64K positions. */
        public static Geometry benchDefault(int vocab) {
            return new Geometry(8, 1024, 8, 8, 128, 2048, vocab, 65536, 500000.0, 42L);
        }

        public Geometry withQHeads(int q) {
            return new Geometry(layers, hidden, q, kvHeads, headDim, intermediate, vocab, maxPositions, ropeTheta, seed);
        }

        public Geometry withLayers(int l) {
            return new Geometry(l, hidden, qHeads, kvHeads, headDim, intermediate, vocab, maxPositions, ropeTheta, seed);
        }

        /** One-line errors for shapes the graph cannot have. */
        public void validate() {
            check(layers >= 1, "layers must be >= 1");
            check(hidden >= 1 && qHeads >= 1 && kvHeads >= 1 && intermediate >= 1 && vocab >= 2 && maxPositions >= 2,
                    "hidden, heads, intermediate size, vocab and positions must be positive");
            check(headDim >= 2 && headDim % 2 == 0, "head dim must be even (rotary embedding), got " + headDim);
            check(qHeads % kvHeads == 0, "query heads (" + qHeads + ") must be a multiple of KV heads (" + kvHeads + ")");
            long params = parameters();
            check(params * 4 < Integer.MAX_VALUE - (1 << 24), "the model would be " + params * 4 / (1 << 20)
                    + " MiB of weights; ONNX files without external data stop at 2 GiB");
        }

        private static void check(boolean ok, String message) {
            if (!ok) {
                throw new IllegalArgumentException("bench model: " + message);
            }
        }

        /** fp32 bytes of K and V per token, all layers. */
        public long kvBytesPerToken() {
            return 2L * layers * kvHeads * headDim * 4;
        }

        /** Number of weights. */
        public long parameters() {
            long attn = (long) hidden * qHeads * headDim * 2 + (long) hidden * kvHeads * headDim * 2;
            long mlp = 3L * hidden * intermediate;
            return layers * (attn + mlp + 2L * hidden) + 2L * vocab * hidden + hidden;
        }

        /** A short name for a folder: {@code l8-q8-kv8-d128-h1024-i2048-v4096-s42}. */
        public String tag() {
            return String.format(Locale.ROOT, "l%d-q%d-kv%d-d%d-h%d-i%d-v%d-p%d-s%d", layers, qHeads, kvHeads, headDim, hidden,
                    intermediate, vocab, maxPositions, seed);
        }
    }

    /**
     * The attention form of the graph: {@code PLAIN} (MatMul/Softmax, the optimum layout) or
     * {@code GQA} (one {@code com.microsoft::GroupQueryAttention} per layer with rotary inside, as
     * onnxruntime-genai's model builder emits; no position_ids input; {@code seqlens_k} and
     * {@code total_sequence_length} from attention_mask). Same weights for the same geometry;
     * GQA is the form ONNX Runtime's own quantized KV cache ({@code --kv ort-int8}) runs in.
     */
    public enum Attention {
        PLAIN("plain"), GQA("gqa");

        public final String cli;

        Attention(String cli) {
            this.cli = cli;
        }

        public static Attention parse(String s) {
            for (Attention a : values()) {
                if (a.cli.equalsIgnoreCase(s.trim())) {
                    return a;
                }
            }
            throw new IllegalArgumentException("unknown --attention '" + s + "' (plain or gqa)");
        }
    }

    private BenchModelWriter() {
    }

    /**
     * True when {@code dir} holds a model written by this writer (this format) with geometry
     * {@code g}: its config.json says so and model.onnx and tokenizer.json are there.
     */
    public static boolean isCurrent(Path dir, Geometry g) {
        return isCurrent(dir, g, Attention.PLAIN);
    }

    /** As {@link #isCurrent(Path, Geometry)}, for the given attention form. */
    public static boolean isCurrent(Path dir, Geometry g, Attention form) {
        Path cfg = dir.resolve("config.json");
        if (!Files.isRegularFile(cfg) || !Files.isRegularFile(dir.resolve("model.onnx"))
                || !Files.isRegularFile(dir.resolve("tokenizer.json"))) {
            return false;
        }
        try {
            Object o = Json.parse(Files.readString(cfg));
            if (o instanceof Map<?, ?> m && m.get("kvq_bench_model") instanceof Map<?, ?> b) {
                Object a = b.get("attention");
                return b.get("format") instanceof Number f && f.intValue() == FORMAT && g.tag().equals(b.get("geometry"))
                        && form.cli.equals(a == null ? Attention.PLAIN.cli : a);
            }
        } catch (IOException | RuntimeException e) {
            return false;
        }
        return false;
    }

    /**
     * Writes model.onnx, config.json and a copy of {@code tokenizer} into {@code dir} (created if
     * needed). Files are written under temporary names and moved into place, config.json last, so
     * an interrupted write never looks complete. {@code progress} (may be null) receives bytes
     * of weights written so far out of {@link Geometry#parameters()}·4.
     */
    public static void write(Path dir, Geometry g, Path tokenizer, int eosTokenId, LongConsumer progress) throws IOException {
        write(dir, g, Attention.PLAIN, tokenizer, eosTokenId, progress);
    }

    /** As {@link #write(Path, Geometry, Path, int, LongConsumer)}, in the given attention form. */
    public static void write(Path dir, Geometry g, Attention form, Path tokenizer, int eosTokenId, LongConsumer progress)
            throws IOException {
        g.validate();
        if (!Files.isRegularFile(tokenizer)) {
            throw new IllegalArgumentException("tokenizer not found: " + tokenizer);
        }
        Files.createDirectories(dir);
        if (Files.isRegularFile(dir.resolve("model.onnx")) && !isBenchModel(dir)) {
            throw new IllegalArgumentException(dir + " already holds a model.onnx that this writer did not make; "
                    + "choose another folder");
        }
        Files.deleteIfExists(dir.resolve("config.json")); // the "complete" marker goes first and comes back last
        Path tmpModel = dir.resolve(".model.onnx.tmp");
        try (OutputStream os = new BufferedOutputStream(Files.newOutputStream(tmpModel), 1 << 20)) {
            writeModel(os, g, form, progress);
        }
        Files.move(tmpModel, dir.resolve("model.onnx"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        Files.copy(tokenizer, dir.resolve("tokenizer.json"), StandardCopyOption.REPLACE_EXISTING);
        Path tmpCfg = dir.resolve(".config.json.tmp");
        Files.writeString(tmpCfg, configJson(g, form, eosTokenId));
        Files.move(tmpCfg, dir.resolve("config.json"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static boolean isBenchModel(Path dir) {
        try {
            return Files.readString(dir.resolve("config.json")).contains("\"kvq_bench_model\"");
        } catch (IOException e) {
            return false; // no config: a half-written bench model or a foreign one; refuse only if a config says otherwise
        }
    }

    static String configJson(Geometry g, Attention form, int eos) {
        return "{\n"
                + "  \"model_type\": \"llama\",\n"
                + "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                + "  \"vocab_size\": " + g.vocab() + ",\n"
                + "  \"hidden_size\": " + g.hidden() + ",\n"
                + "  \"num_hidden_layers\": " + g.layers() + ",\n"
                + "  \"num_attention_heads\": " + g.qHeads() + ",\n"
                + "  \"num_key_value_heads\": " + g.kvHeads() + ",\n"
                + "  \"head_dim\": " + g.headDim() + ",\n"
                + "  \"intermediate_size\": " + g.intermediate() + ",\n"
                + "  \"max_position_embeddings\": " + g.maxPositions() + ",\n"
                + "  \"rope_theta\": " + g.ropeTheta() + ",\n"
                + "  \"rms_norm_eps\": " + RMS_EPS + ",\n"
                + "  \"tie_word_embeddings\": false,\n"
                + "  \"bos_token_id\": " + eos + ",\n"
                + "  \"eos_token_id\": " + eos + ",\n"
                + "  \"torch_dtype\": \"float32\",\n"
                + "  \"kvq_bench_model\": {\"format\": " + FORMAT + ", \"geometry\": \"" + g.tag() + "\", \"attention\": \""
                + form.cli + "\", \"seed\": " + g.seed()
                + ", \"kv_bytes_per_token_fp32\": " + g.kvBytesPerToken() + ", \"parameters\": " + g.parameters()
                + ", \"note\": \"random weights written by kvq bench model (BenchModelWriter): for memory and speed only; "
                + "its text is meaningless\"}\n"
                + "}\n";
    }

    // ---- the graph ----------------------------------------------------------------------

    private static final float RMS_EPS = 1e-5f;
    private static final float MASKED = -1e9f;

    private static final int FLOAT = 1;
    private static final int INT32 = 6;
    private static final int INT64 = 7;

    /** A weight tensor streamed at write time: name, dims, distribution. */
    private record Weight(String name, long[] dims, float center, float halfWidth) {
        long count() {
            long n = 1;
            for (long d : dims) {
                n *= d;
            }
            return n;
        }
    }

    /** Nodes, small initializers and the weights still to stream. */
    private static final class Graph {
        final Pb body = new Pb();
        final List<Weight> weights = new ArrayList<>();
        int counter;

        String node(String op, String out, List<String> in, Pb... attrs) {
            Pb n = new Pb();
            for (String i : in) {
                n.add(1, i);
            }
            n.add(2, out);
            n.add(3, "/" + op + "_" + counter++);
            n.add(4, op);
            for (Pb a : attrs) {
                n.add(5, a);
            }
            body.add(1, n);
            return out;
        }

        String node(String op, String out, String... in) {
            return node(op, out, List.of(in));
        }

        String constI64(String name, long[] dims, long... values) {
            ByteBuffer b = ByteBuffer.allocate(values.length * 8).order(ByteOrder.LITTLE_ENDIAN);
            for (long v : values) {
                b.putLong(v);
            }
            body.add(5, tensor(name, INT64, dims, b.array()));
            return name;
        }

        String constF32(String name, long[] dims, float... values) {
            ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
            for (float v : values) {
                b.putFloat(v);
            }
            body.add(5, tensor(name, FLOAT, dims, b.array()));
            return name;
        }

        String weight(String name, float center, float halfWidth, long... dims) {
            weights.add(new Weight(name, dims, center, halfWidth));
            return name;
        }
    }

    private static Pb tensorHeader(String name, int type, long[] dims) {
        Pb t = new Pb();
        for (long d : dims) {
            t.addVarint(1, d);
        }
        t.addVarint(2, type);
        t.add(8, name);
        return t;
    }

    private static Pb tensor(String name, int type, long[] dims, byte[] raw) {
        return tensorHeader(name, type, dims).add(9, raw);
    }

    private static Pb attrInt(String name, long v) {
        return new Pb().add(1, name).addVarint(3, v).addVarint(20, 2);
    }

    private static Pb attrInts(String name, long... v) {
        Pb a = new Pb().add(1, name);
        for (long x : v) {
            a.addVarint(8, x);
        }
        return a.addVarint(20, 7);
    }

    private static final long[] SCALAR = {};

    private static String rmsNorm(Graph g, String x, String weight, String p) {
        String sq = g.node("Pow", p + "/pow", x, "c_f_two");
        String ms = g.node("ReduceMean", p + "/mean", List.of(sq), attrInts("axes", -1), attrInt("keepdims", 1));
        String ad = g.node("Add", p + "/add_eps", ms, "c_f_eps");
        String sd = g.node("Sqrt", p + "/sqrt", ad);
        String inv = g.node("Div", p + "/inv", "c_f_one", sd);
        String xn = g.node("Mul", p + "/normed", x, inv);
        return g.node("Mul", p + "/out", xn, weight);
    }

    /** x·cos + rotate_half(x)·sin on [batch, heads, seq, head_dim]. */
    private static String rope(Graph g, String x, String p) {
        String a = g.node("Mul", p + "/x_cos", x, "rope/cos4");
        String lo = g.node("Slice", p + "/lo", x, "c_half_lo_start", "c_half_lo_end", "c_axis3");
        String hi = g.node("Slice", p + "/hi", x, "c_half_hi_start", "c_half_hi_end", "c_axis3");
        String nhi = g.node("Neg", p + "/neg_hi", hi);
        String rot = g.node("Concat", p + "/rotated", List.of(nhi, lo), attrInt("axis", -1));
        String b = g.node("Mul", p + "/rot_sin", rot, "rope/sin4");
        return g.node("Add", p + "/out", a, b);
    }

    /** Projects to heads: MatMul, Reshape [0, 0, heads, d], Transpose to [batch, heads, seq, d]. */
    private static String heads(Graph g, String x, String w, String shape, String p) {
        String mm = g.node("MatMul", p + "/proj", x, w);
        String r = g.node("Reshape", p + "/split", mm, shape);
        return g.node("Transpose", p + "/heads", List.of(r), attrInts("perm", 0, 2, 1, 3));
    }

    /** Repeats each KV head (GQA): [b, kv, T, d] → [b, kv·group, T, d]; identity when group = 1. */
    private static String repeatKv(Graph g, String x, int group, String p) {
        if (group == 1) {
            return x;
        }
        String u = g.node("Unsqueeze", p + "/unsq", x, "c_axes_2");
        String e = g.node("Expand", p + "/expand", u, "c_gqa_expand");
        return g.node("Reshape", p + "/merge", e, "c_gqa_shape");
    }

    private static Graph build(Geometry m, Attention form) {
        if (form == Attention.GQA) {
            return buildGqa(m);
        }
        Graph g = new Graph();
        int d = m.headDim();
        int group = m.qHeads() / m.kvHeads();
        // small constants
        g.constI64("c_i64_0", SCALAR, 0);
        g.constI64("c_i64_1", SCALAR, 1);
        g.constI64("c_axes_0", new long[] {1}, 0);
        g.constI64("c_axes_1", new long[] {1}, 1);
        g.constI64("c_axes_m1", new long[] {1}, -1);
        g.constI64("c_axes_01", new long[] {2}, 0, 1);
        g.constI64("c_axes_12", new long[] {2}, 1, 2);
        g.constI64("c_axis3", new long[] {1}, 3);
        g.constI64("c_half_lo_start", new long[] {1}, 0);
        g.constI64("c_half_lo_end", new long[] {1}, d / 2);
        g.constI64("c_half_hi_start", new long[] {1}, d / 2);
        g.constI64("c_half_hi_end", new long[] {1}, d);
        g.constI64("c_q_shape", new long[] {4}, 0, 0, m.qHeads(), d);
        g.constI64("c_kv_shape", new long[] {4}, 0, 0, m.kvHeads(), d);
        g.constI64("c_merge_shape", new long[] {3}, 0, 0, (long) m.qHeads() * d);
        if (group > 1) {
            g.constI64("c_axes_2", new long[] {1}, 2);
            g.constI64("c_gqa_expand", new long[] {5}, 1, 1, group, 1, 1);
            g.constI64("c_gqa_shape", new long[] {4}, 0, m.qHeads(), -1, d);
        }
        g.constF32("c_f_two", SCALAR, 2f);
        g.constF32("c_f_one", SCALAR, 1f);
        g.constF32("c_f_eps", SCALAR, RMS_EPS);
        g.constF32("c_f_zero", SCALAR, 0f);
        g.constF32("c_f_masked", SCALAR, MASKED);
        g.constF32("c_f_scale", SCALAR, (float) (1 / Math.sqrt(d)));
        float[] invFreq = new float[d / 2];
        for (int i = 0; i < invFreq.length; i++) {
            invFreq[i] = (float) (1 / Math.pow(m.ropeTheta(), 2.0 * i / d));
        }
        g.constF32("rope/inv_freq", new long[] {d / 2}, invFreq);

        // additive mask [batch, 1, seq, total]: 0 where key j <= past + i and attention_mask[j] > 0
        String seqShape = g.node("Shape", "mask/ids_shape", "input_ids");
        String seq = g.node("Gather", "mask/seq", List.of(seqShape, "c_i64_1"), attrInt("axis", 0));
        String totShape = g.node("Shape", "mask/mask_shape", "attention_mask");
        String total = g.node("Gather", "mask/total", List.of(totShape, "c_i64_1"), attrInt("axis", 0));
        String past = g.node("Sub", "mask/past", total, seq);
        String rows = g.node("Range", "mask/rows", "c_i64_0", seq, "c_i64_1");
        String rowsAbs = g.node("Add", "mask/rows_abs", rows, past);
        String rowsCol = g.node("Unsqueeze", "mask/rows_col", rowsAbs, "c_axes_1");
        String cols = g.node("Range", "mask/cols", "c_i64_0", total, "c_i64_1");
        String colsRow = g.node("Unsqueeze", "mask/cols_row", cols, "c_axes_0");
        String causal = g.node("LessOrEqual", "mask/causal", colsRow, rowsCol);
        String causal4 = g.node("Unsqueeze", "mask/causal4", causal, "c_axes_01");
        String am4 = g.node("Unsqueeze", "mask/am4", "attention_mask", "c_axes_12");
        String amOn = g.node("Greater", "mask/am_on", am4, "c_i64_0");
        String allowed = g.node("And", "mask/allowed", causal4, amOn);
        String maskAdd = g.node("Where", "mask/additive", allowed, "c_f_zero", "c_f_masked");

        // rotary tables [batch, 1, seq, d]
        String posF = g.node("Cast", "rope/pos_f", List.of("position_ids"), attrInt("to", FLOAT));
        String posU = g.node("Unsqueeze", "rope/pos_u", posF, "c_axes_m1");
        String freqs = g.node("Mul", "rope/freqs", posU, "rope/inv_freq");
        String emb = g.node("Concat", "rope/emb", List.of(freqs, freqs), attrInt("axis", -1));
        String cos = g.node("Cos", "rope/cos", emb);
        String sin = g.node("Sin", "rope/sin", emb);
        g.node("Unsqueeze", "rope/cos4", cos, "c_axes_1");
        g.node("Unsqueeze", "rope/sin4", sin, "c_axes_1");

        float wIn = (float) Math.sqrt(3.0 / m.hidden());
        float wAttnOut = (float) Math.sqrt(3.0 / ((long) m.qHeads() * d));
        float wDown = (float) Math.sqrt(3.0 / m.intermediate());
        String x = g.node("Gather", "embed/out", List.of(g.weight("embed_tokens.weight", 0f, 1.7f, m.vocab(), m.hidden()),
                "input_ids"), attrInt("axis", 0));
        for (int l = 0; l < m.layers(); l++) {
            String p = "layers." + l;
            String h = rmsNorm(g, x, g.weight(p + ".input_layernorm.weight", 1f, 0.1f, m.hidden()), p + "/input_norm");
            String q = heads(g, h, g.weight(p + ".q_proj", 0f, wIn, m.hidden(), (long) m.qHeads() * d), "c_q_shape", p + "/q");
            String k = heads(g, h, g.weight(p + ".k_proj", 0f, wIn, m.hidden(), (long) m.kvHeads() * d), "c_kv_shape", p + "/k");
            String v = heads(g, h, g.weight(p + ".v_proj", 0f, wIn, m.hidden(), (long) m.kvHeads() * d), "c_kv_shape", p + "/v");
            String qr = rope(g, q, p + "/q_rope");
            String kr = rope(g, k, p + "/k_rope");
            String pk = g.node("Concat", "present." + l + ".key", List.of("past_key_values." + l + ".key", kr),
                    attrInt("axis", 2));
            String pv = g.node("Concat", "present." + l + ".value", List.of("past_key_values." + l + ".value", v),
                    attrInt("axis", 2));
            String kAll = repeatKv(g, pk, group, p + "/k_rep");
            String vAll = repeatKv(g, pv, group, p + "/v_rep");
            String kT = g.node("Transpose", p + "/attn/k_t", List.of(kAll), attrInts("perm", 0, 1, 3, 2));
            String scores = g.node("MatMul", p + "/attn/scores", qr, kT);
            String scaled = g.node("Mul", p + "/attn/scaled", scores, "c_f_scale");
            String masked = g.node("Add", p + "/attn/masked", scaled, maskAdd);
            String probs = g.node("Softmax", p + "/attn/probs", List.of(masked), attrInt("axis", -1));
            String ctx = g.node("MatMul", p + "/attn/out", probs, vAll);
            String ctxT = g.node("Transpose", p + "/attn/out_t", List.of(ctx), attrInts("perm", 0, 2, 1, 3));
            String merged = g.node("Reshape", p + "/attn/merged", ctxT, "c_merge_shape");
            String o = g.node("MatMul", p + "/o_proj/out", merged,
                    g.weight(p + ".o_proj", 0f, wAttnOut, (long) m.qHeads() * d, m.hidden()));
            x = g.node("Add", p + "/resid_attn", x, o);
            String h2 = rmsNorm(g, x, g.weight(p + ".post_attention_layernorm.weight", 1f, 0.1f, m.hidden()), p + "/post_norm");
            String gate = g.node("MatMul", p + "/mlp/gate", h2, g.weight(p + ".gate_proj", 0f, wIn, m.hidden(), m.intermediate()));
            String sg = g.node("Sigmoid", p + "/mlp/sigmoid", gate);
            String silu = g.node("Mul", p + "/mlp/silu", gate, sg);
            String up = g.node("MatMul", p + "/mlp/up", h2, g.weight(p + ".up_proj", 0f, wIn, m.hidden(), m.intermediate()));
            String gu = g.node("Mul", p + "/mlp/gated", silu, up);
            String down = g.node("MatMul", p + "/mlp/down", gu, g.weight(p + ".down_proj", 0f, wDown, m.intermediate(), m.hidden()));
            x = g.node("Add", p + "/resid_mlp", x, down);
        }
        String hn = rmsNorm(g, x, g.weight("norm.weight", 1f, 0.1f, m.hidden()), "final_norm");
        g.node("MatMul", "logits", hn, g.weight("lm_head", 0f, wIn, m.hidden(), m.vocab()));

        g.body.add(2, "kvq-bench-llama");
        // inputs and outputs
        g.body.add(11, valueInfo("input_ids", INT64, "batch_size", "sequence_length"));
        g.body.add(11, valueInfo("attention_mask", INT64, "batch_size", "total_sequence_length"));
        g.body.add(11, valueInfo("position_ids", INT64, "batch_size", "sequence_length"));
        for (int l = 0; l < m.layers(); l++) {
            for (String kind : new String[] {"key", "value"}) {
                g.body.add(11, valueInfo("past_key_values." + l + "." + kind, FLOAT, "batch_size", m.kvHeads(),
                        "past_sequence_length", d));
            }
        }
        g.body.add(12, valueInfo("logits", FLOAT, "batch_size", "sequence_length", m.vocab()));
        for (int l = 0; l < m.layers(); l++) {
            for (String kind : new String[] {"key", "value"}) {
                g.body.add(12, valueInfo("present." + l + "." + kind, FLOAT, "batch_size", m.kvHeads(),
                        "total_sequence_length", d));
            }
        }
        return g;
    }

    /** A ValueInfoProto: name, tensor type with dims given as Integer (value) or String (symbol). */
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

    /**
     * The GroupQueryAttention form of the same model (same weights, registered in the same order):
     * per layer q/k/v projections [batch, seq, heads·d] into one GroupQueryAttention (do_rotary = 1,
     * half-split rotary from cos_cache/sin_cache [maxPositions, d/2] computed as the plain form does
     * in fp32), then o_proj. seqlens_k = ReduceSum(attention_mask) - 1 and total_sequence_length =
     * its length, both int32, as the GenAI model builder derives them.
     */
    private static Graph buildGqa(Geometry m) {
        Graph g = new Graph();
        int d = m.headDim();
        g.constI64("c_i64_1", SCALAR, 1);
        g.constI64("c_axes_1", new long[] {1}, 1);
        g.constF32("c_f_two", SCALAR, 2f);
        g.constF32("c_f_one", SCALAR, 1f);
        g.constF32("c_f_eps", SCALAR, RMS_EPS);
        int half = d / 2;
        float[] invFreq = new float[half];
        for (int i = 0; i < half; i++) {
            invFreq[i] = (float) (1 / Math.pow(m.ropeTheta(), 2.0 * i / d));
        }
        float[] cos = new float[m.maxPositions() * half];
        float[] sin = new float[cos.length];
        for (int p = 0; p < m.maxPositions(); p++) {
            for (int i = 0; i < half; i++) {
                float angle = (float) p * invFreq[i]; // fp32, as the plain form's Mul
                cos[p * half + i] = (float) Math.cos(angle);
                sin[p * half + i] = (float) Math.sin(angle);
            }
        }
        g.constF32("cos_cache", new long[] {m.maxPositions(), half}, cos);
        g.constF32("sin_cache", new long[] {m.maxPositions(), half}, sin);
        String sum = g.node("ReduceSum", "attn_mask/sum", List.of("attention_mask", "c_axes_1"), attrInt("keepdims", 0));
        String sub = g.node("Sub", "attn_mask/sub", sum, "c_i64_1");
        g.node("Cast", "seqlens_k", List.of(sub), attrInt("to", INT32));
        String shape = g.node("Shape", "attn_mask/shape", "attention_mask");
        String len = g.node("Gather", "attn_mask/len", List.of(shape, "c_i64_1"), attrInt("axis", 0));
        g.node("Cast", "total_sequence_length", List.of(len), attrInt("to", INT32));

        float wIn = (float) Math.sqrt(3.0 / m.hidden());
        float wAttnOut = (float) Math.sqrt(3.0 / ((long) m.qHeads() * d));
        float wDown = (float) Math.sqrt(3.0 / m.intermediate());
        String x = g.node("Gather", "embed/out", List.of(g.weight("embed_tokens.weight", 0f, 1.7f, m.vocab(), m.hidden()),
                "input_ids"), attrInt("axis", 0));
        for (int l = 0; l < m.layers(); l++) {
            String p = "layers." + l;
            String h = rmsNorm(g, x, g.weight(p + ".input_layernorm.weight", 1f, 0.1f, m.hidden()), p + "/input_norm");
            String q = g.node("MatMul", p + "/q/proj", h, g.weight(p + ".q_proj", 0f, wIn, m.hidden(), (long) m.qHeads() * d));
            String k = g.node("MatMul", p + "/k/proj", h, g.weight(p + ".k_proj", 0f, wIn, m.hidden(), (long) m.kvHeads() * d));
            String v = g.node("MatMul", p + "/v/proj", h, g.weight(p + ".v_proj", 0f, wIn, m.hidden(), (long) m.kvHeads() * d));
            Pb n = new Pb();
            for (String in : List.of(q, k, v, "past_key_values." + l + ".key", "past_key_values." + l + ".value", "seqlens_k",
                    "total_sequence_length", "cos_cache", "sin_cache")) {
                n.add(1, in);
            }
            String attn = p + "/attn/GroupQueryAttention_output";
            n.add(2, attn);
            n.add(2, "present." + l + ".key");
            n.add(2, "present." + l + ".value");
            n.add(3, "/" + p + "/attn/GroupQueryAttention");
            n.add(4, "GroupQueryAttention");
            n.add(5, attrInt("num_heads", m.qHeads()));
            n.add(5, attrInt("kv_num_heads", m.kvHeads()));
            n.add(5, attrInt("do_rotary", 1));
            n.add(5, attrInt("rotary_interleaved", 0));
            Pb scale = new Pb().add(1, "scale");
            scale.fields.add(new Pb.Field(2, 5, Float.floatToIntBits((float) (1 / Math.sqrt(d))) & 0xffffffffL, null));
            n.add(5, scale.addVarint(20, 1));
            n.add(7, "com.microsoft");
            g.body.add(1, n);
            String o = g.node("MatMul", p + "/o_proj/out", attn,
                    g.weight(p + ".o_proj", 0f, wAttnOut, (long) m.qHeads() * d, m.hidden()));
            x = g.node("Add", p + "/resid_attn", x, o);
            String h2 = rmsNorm(g, x, g.weight(p + ".post_attention_layernorm.weight", 1f, 0.1f, m.hidden()), p + "/post_norm");
            String gate = g.node("MatMul", p + "/mlp/gate", h2, g.weight(p + ".gate_proj", 0f, wIn, m.hidden(), m.intermediate()));
            String sg = g.node("Sigmoid", p + "/mlp/sigmoid", gate);
            String silu = g.node("Mul", p + "/mlp/silu", gate, sg);
            String up = g.node("MatMul", p + "/mlp/up", h2, g.weight(p + ".up_proj", 0f, wIn, m.hidden(), m.intermediate()));
            String gu = g.node("Mul", p + "/mlp/gated", silu, up);
            String down = g.node("MatMul", p + "/mlp/down", gu, g.weight(p + ".down_proj", 0f, wDown, m.intermediate(), m.hidden()));
            x = g.node("Add", p + "/resid_mlp", x, down);
        }
        String hn = rmsNorm(g, x, g.weight("norm.weight", 1f, 0.1f, m.hidden()), "final_norm");
        g.node("MatMul", "logits", hn, g.weight("lm_head", 0f, wIn, m.hidden(), m.vocab()));

        g.body.add(2, "kvq-bench-llama-gqa");
        g.body.add(11, valueInfo("input_ids", INT64, "batch_size", "sequence_length"));
        g.body.add(11, valueInfo("attention_mask", INT64, "batch_size", "total_sequence_length"));
        for (int l = 0; l < m.layers(); l++) {
            for (String kind : new String[] {"key", "value"}) {
                g.body.add(11, valueInfo("past_key_values." + l + "." + kind, FLOAT, "batch_size", m.kvHeads(),
                        "past_sequence_length", d));
            }
        }
        g.body.add(12, valueInfo("logits", FLOAT, "batch_size", "sequence_length", m.vocab()));
        for (int l = 0; l < m.layers(); l++) {
            for (String kind : new String[] {"key", "value"}) {
                g.body.add(12, valueInfo("present." + l + "." + kind, FLOAT, "batch_size", m.kvHeads(),
                        "total_sequence_length", d));
            }
        }
        return g;
    }

    /** ModelProto: ir_version 8, producer, opset 17, then the graph with the weights streamed in. */
    static void writeModel(OutputStream os, Geometry m, LongConsumer progress) throws IOException {
        writeModel(os, m, Attention.PLAIN, progress);
    }

    /** As {@link #writeModel(OutputStream, Geometry, LongConsumer)}; GQA adds the com.microsoft opset. */
    static void writeModel(OutputStream os, Geometry m, Attention form, LongConsumer progress) throws IOException {
        Graph g = build(m, form);
        byte[] body = g.body.toBytes();
        // sizes first: graph = body + one initializer field per weight
        List<byte[]> headers = new ArrayList<>();
        long graphSize = body.length;
        for (Weight w : g.weights) {
            byte[] h = tensorHeader(w.name(), FLOAT, w.dims()).toBytes();
            headers.add(h);
            long tensorSize = tensorSize(h.length, w.count() * 4);
            graphSize += CodedOutputStream.computeTagSize(5) + CodedOutputStream.computeUInt64SizeNoTag(tensorSize) + tensorSize;
        }
        CodedOutputStream out = CodedOutputStream.newInstance(os, 1 << 16);
        out.writeInt64(1, 8);
        out.writeString(2, "kvquant-bench");
        out.writeString(3, String.valueOf(FORMAT));
        out.writeByteArray(8, new Pb().add(1, "").addVarint(2, 17).toBytes());
        if (form == Attention.GQA) {
            out.writeByteArray(8, new Pb().add(1, "com.microsoft").addVarint(2, 1).toBytes());
        }
        out.writeTag(7, 2);
        out.writeUInt64NoTag(graphSize);
        out.writeRawBytes(body);
        long done = 0;
        byte[] chunk = new byte[1 << 16];
        ByteBuffer cb = ByteBuffer.wrap(chunk).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < g.weights.size(); i++) {
            Weight w = g.weights.get(i);
            byte[] h = headers.get(i);
            long bytes = w.count() * 4;
            out.writeTag(5, 2);
            out.writeUInt64NoTag(tensorSize(h.length, bytes));
            out.writeRawBytes(h);
            out.writeTag(9, 2);
            out.writeUInt64NoTag(bytes);
            SplittableRandom r = new SplittableRandom(m.seed() * 1_000_003L + i);
            for (long left = w.count(); left > 0; ) {
                int n = (int) Math.min(left, chunk.length / 4);
                cb.clear();
                for (int j = 0; j < n; j++) {
                    cb.putFloat(w.center() + w.halfWidth() * (float) (2 * r.nextDouble() - 1));
                }
                out.writeRawBytes(chunk, 0, n * 4);
                left -= n;
            }
            done += bytes;
            if (progress != null) {
                progress.accept(done);
            }
        }
        out.flush();
    }

    private static long tensorSize(int headerBytes, long rawBytes) {
        return headerBytes + CodedOutputStream.computeTagSize(9) + CodedOutputStream.computeUInt64SizeNoTag(rawBytes) + rawBytes;
    }
}
