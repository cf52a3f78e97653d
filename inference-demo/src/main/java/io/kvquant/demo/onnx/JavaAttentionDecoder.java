package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCache;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The engine (--mode engine, formerly java-attention): ONNX Runtime runs each layer's dense parts (the pieces of
 * {@link JavaAttentionModel}); between them kvquant appends the new keys and values to the
 * compressed cache and computes attention straight from it ({@link DecodeAttention}), so no
 * dense past is ever rebuilt. The prompt is fed in chunks with the prefill form of the attention.
 */
public final class JavaAttentionDecoder extends CacheDecoder {
    private final JavaAttentionModel model;
    private final DecodeAttention attention;
    /** Which of the decoder-fed inputs some piece reads (a cut graph may no longer need the mask). */
    private final boolean needsIds;
    private final boolean needsPositions;
    private final boolean needsMask;
    /**
     * Reusable direct buffers per input slot, grown geometrically: ONNX Runtime wraps direct
     * buffers without a copy, where a heap buffer is copied into a fresh direct buffer per call.
     */
    private final Map<String, ByteBuffer> buffers = new HashMap<>();
    /** Tensors by name during one feed, and what to close after it; reused across steps. */
    private final Map<String, OnnxTensor> avail = new HashMap<>();
    private final List<AutoCloseable> owned = new ArrayList<>();
    private final List<Map<String, OnnxTensor>> pieceInputs = new ArrayList<>();
    /**
     * Diagnostic ({@code -Dkvq.engine.split=true}): wall time of a prefill by part, printed to
     * stderr after each multi-token feed that returns logits (the last chunk of a prefill), and of
     * every {@link #SPLIT_DECODE_STEPS} decode steps; reset after each print.
     */
    private static final boolean SPLIT = Boolean.getBoolean("kvq.engine.split");
    private static final String[] SPLIT_NAMES = {"ort runs", "input tensors", "q/k/v out of ORT", "cache append (encode)",
        "attention kernel", "output tensor", "logits copy", "close results", "other"};
    private final long[] split = new long[SPLIT_NAMES.length];
    private long splitStart;
    private long lastAtt;
    private long lastOrt;
    private final StringBuilder chunkLog = new StringBuilder();
    private int splitChunks;
    private int splitDecodeSteps;
    private static final int SPLIT_DECODE_STEPS = 256;

    private long mark(int part, long t0) {
        long t = System.nanoTime();
        split[part] += t - t0;
        return t;
    }

    /** The Java decode step's attention callback: one token through {@link #attendArrays}. */
    private final JavaPieces.Attend attendOne = (layer, q, k, v) -> attendArrays(layer, q, k, v, 1);

    /** Per layer: the attention output array, reused while the step shape stays the same. */
    private final float[][] outScratch;

    public JavaAttentionDecoder(JavaAttentionModel model, KvCache cache, DecodeAttention attention, int prefillChunk) {
        super(cache, prefillChunk);
        if (cache.layers() != model.layers.size()) {
            throw new IllegalArgumentException("cache has " + cache.layers() + " layers, the model " + model.layers.size());
        }
        this.model = model;
        this.attention = attention;
        java.util.Set<String> read = new java.util.HashSet<>();
        for (JavaAttentionModel.PieceInfo p : model.pieces) {
            read.addAll(p.inputs());
            pieceInputs.add(new HashMap<>());
        }
        this.needsIds = read.contains("input_ids");
        this.needsPositions = read.contains("position_ids");
        this.needsMask = read.contains("attention_mask");
        this.outScratch = new float[model.layers.size()][];
    }

    /** One pass through the pieces, attention on the cache between them. */
    @Override
    public float[] feed(long[] ids, int off, int len) {
        return run(ids, off, len, true);
    }

    /**
     * As {@link #feed} up to the last layer's attention: the pieces after it (the last layer's
     * dense tail, the final norm and the vocabulary projection) only make logits, which a
     * prompt chunk that is not the last does not need. On the bundled model they are ~40% of the
     * dense work per token (the vocabulary projection alone 1 M of ~3.4 M multiply-adds).
     */
    @Override
    public float[] feedPrefix(long[] ids, int off, int len) {
        run(ids, off, len, false);
        return null;
    }

    private float[] run(long[] ids, int off, int len, boolean logitsWanted) {
        if (len < 1 || off < 0 || off + len > ids.length) {
            throw new IllegalArgumentException("bad token range [" + off + ", " + (off + len) + ") of " + ids.length);
        }
        int past = cache.length(0);
        if (len == 1 && logitsWanted && model.javaStep != null) {
            return stepJava(ids[off], past);
        }
        avail.clear();
        owned.clear();
        long tm = SPLIT ? System.nanoTime() : 0;
        if (SPLIT && splitChunks++ == 0) {
            splitStart = tm;
        }
        try {
            if (needsIds) {
                LongBuffer b = longs("input_ids", len, false);
                b.put(ids, off, len).flip();
                put(avail, owned, "input_ids", OnnxTensor.createTensor(DecoderModel.environment(), b, new long[] {1, len}));
            }
            if (needsPositions) {
                LongBuffer b = longs("position_ids", len, false);
                for (int i = 0; i < len; i++) {
                    b.put(past + i);
                }
                put(avail, owned, "position_ids", OnnxTensor.createTensor(DecoderModel.environment(), b.flip(),
                        new long[] {1, len}));
            }
            if (needsMask) {
                // all ones: the buffer is filled once when it grows, so a step writes nothing
                LongBuffer b = longs("attention_mask", past + len, true);
                put(avail, owned, "attention_mask", OnnxTensor.createTensor(DecoderModel.environment(), b,
                        new long[] {1, past + len}));
            }
            if (SPLIT) {
                tm = mark(1, tm);
            }
            int stages = logitsWanted ? model.pieces.size() : model.layers.size();
            DecodeSessions one = len == 1 ? model.decode : null; // a decode step: the one-token pieces
            for (int s = 0; s < stages; s++) {
                JavaAttentionModel.PieceInfo piece = model.pieces.get(s);
                Map<String, OnnxTensor> in = pieceInputs.get(s);
                in.clear();
                for (String name : one != null ? one.inputs.get(s) : piece.inputs()) {
                    OnnxTensor t = avail.get(name);
                    if (t == null) {
                        throw new IllegalStateException("piece " + s + " needs " + name + ", which no earlier piece made");
                    }
                    in.put(name, t);
                }
                OrtSession.Result r = (one != null ? one.sessions : model.sessions).get(s).run(in);
                owned.add(r);
                if (SPLIT) {
                    tm = mark(0, tm);
                }
                for (String name : piece.outputs()) {
                    OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("piece output " + name + " missing"));
                    avail.put(name, (OnnxTensor) v);
                }
                if (s < model.layers.size()) {
                    attend(s, avail, owned, len);
                    if (SPLIT) {
                        tm = System.nanoTime();
                    }
                }
            }
            if (!logitsWanted) {
                return null;
            }
            OnnxTensor logits = avail.get("logits");
            long[] shape = logits.getInfo().getShape();
            int vocab = (int) shape[shape.length - 1];
            FloatBuffer fb = logits.getFloatBuffer();
            float[] last = new float[vocab];
            fb.position(fb.limit() - vocab);
            fb.get(last);
            if (SPLIT) {
                mark(6, tm);
            }
            return last;
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on an engine step (past " + past + ", " + len
                    + " tokens): " + e.getMessage(), e);
        } finally {
            long tc = SPLIT ? System.nanoTime() : 0;
            for (AutoCloseable c : owned) {
                try {
                    c.close();
                } catch (Exception e) {
                    // closing native buffers: nothing to recover
                }
            }
            owned.clear();
            avail.clear();
            if (SPLIT) {
                mark(7, tc);
                if (len > 1) {
                    chunkLog.append(String.format(java.util.Locale.ROOT, " %d:%.0f/%.0f", past, (split[4] - lastAtt) / 1e6,
                            (split[0] - lastOrt) / 1e6));
                    lastAtt = split[4];
                    lastOrt = split[0];
                }
                if (logitsWanted && len > 1 || len == 1 && ++splitDecodeSteps % SPLIT_DECODE_STEPS == 0) {
                    printSplit();
                }
            }
        }
    }

    /**
     * A decode step with the dense layers in Java ({@link JavaPieces}): no ONNX Runtime call, no
     * tensor; the attention reads the queries/keys/values the Java step made and hands its
     * output back as an array.
     */
    private float[] stepJava(long token, int past) {
        long t0 = SPLIT ? System.nanoTime() : 0;
        if (SPLIT && splitChunks++ == 0) {
            splitStart = t0;
        }
        long marked = SPLIT ? split[3] + split[4] : 0;
        float[] logits = model.javaStep.step(token, past, attendOne);
        if (SPLIT) {
            // the dense layers in Java: the step less what the attention marked as its own parts
            split[0] += System.nanoTime() - t0 - (split[3] + split[4] - marked);
            if (++splitDecodeSteps % SPLIT_DECODE_STEPS == 0) {
                printSplit();
            }
        }
        return logits;
    }

    private void printSplit() {
        long total = System.nanoTime() - splitStart;
        long known = 0;
        long up = java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime();
        StringBuilder b = new StringBuilder(String.format(java.util.Locale.ROOT,
                "engine split: %d chunks, %.3f s (JVM uptime %d to %d ms):", splitChunks, total / 1e9, up - total / 1_000_000, up));
        for (int i = 0; i < split.length - 1; i++) {
            known += split[i];
        }
        split[split.length - 1] = total - known;
        for (int i = 0; i < split.length; i++) {
            b.append(String.format(java.util.Locale.ROOT, " %s %.3f s (%.0f%%);", SPLIT_NAMES[i], split[i] / 1e9,
                    100.0 * split[i] / total));
        }
        System.err.println(b);
        System.err.println("engine split per chunk (past: attention ms / ort ms):" + chunkLog);
        chunkLog.setLength(0);
        lastAtt = 0;
        lastOrt = 0;
        java.util.Arrays.fill(split, 0);
        splitChunks = 0;
    }

    /** A direct buffer of {@code n} longs for {@code slot}; {@code ones}: every element is 1 (filled when it grows). */
    private LongBuffer longs(String slot, int n, boolean ones) {
        ByteBuffer b = direct(slot, (long) n * 8, ones);
        return b.asLongBuffer();
    }

    private FloatBuffer floatsOut(String slot, int n) {
        return direct(slot, (long) n * 4, false).asFloatBuffer();
    }

    private ByteBuffer direct(String slot, long need, boolean ones) {
        ByteBuffer b = buffers.get(slot);
        if (b == null || b.capacity() < need) {
            long cap = Math.max(need, b == null ? 0 : b.capacity() + b.capacity() / 2);
            if (cap > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("input " + slot + " needs " + need + " bytes, over 2 GiB");
            }
            b = ByteBuffer.allocateDirect((int) Math.max(cap, 64)).order(ByteOrder.nativeOrder());
            if (ones) {
                LongBuffer l = b.asLongBuffer();
                while (l.hasRemaining()) {
                    l.put(1L);
                }
            }
            buffers.put(slot, b);
        }
        return b.clear().limit((int) need).slice().order(ByteOrder.nativeOrder());
    }

    private void attend(int layer, Map<String, OnnxTensor> avail, List<AutoCloseable> owned, int len) throws OrtException {
        JavaAttentionModel.LayerInfo li = model.layers.get(layer);
        if (li.rotary() != null) {
            attendFused(layer, li, avail, owned, len);
            return;
        }
        long tm = SPLIT ? System.nanoTime() : 0;
        float[] q = floats(avail.get(li.query()), li.query());
        float[] k = floats(avail.get(li.newKey()), li.newKey());
        float[] v = floats(avail.get(li.newValue()), li.newValue());
        if (SPLIT) {
            mark(2, tm);
        }
        float[] out = attendArrays(layer, q, k, v, len);
        tm = SPLIT ? System.nanoTime() : 0;
        int qHeads = q.length / (len * cache.headDim());
        put(avail, owned, li.output(), output(out, new long[] {1, qHeads, len, cache.headDim()},
                avail.get(li.query()).getInfo().type));
        if (SPLIT) {
            mark(5, tm);
        }
    }

    /**
     * Layer {@code layer}'s attention in the plain form ([1, heads, tokens, d] queries, keys and
     * values): the keys and values appended to the cache, the output (same layout as the queries)
     * computed from it; the array returned is reused by the next call for this layer.
     */
    private float[] attendArrays(int layer, float[] q, float[] k, float[] v, int len) {
        JavaAttentionModel.LayerInfo li = model.layers.get(layer);
        long tm = SPLIT ? System.nanoTime() : 0;
        int d = cache.headDim();
        int qHeads = q.length / (len * d);
        if (qHeads * len * d != q.length || k.length != cache.kvHeads() * len * d || v.length != k.length) {
            throw new IllegalStateException("layer " + layer + ": queries/keys/values of " + q.length + "/" + k.length + "/"
                    + v.length + " floats do not fit " + len + " tokens of head dim " + d + " and " + cache.kvHeads()
                    + " KV heads");
        }
        // [1, heads, tokens, d] is the cache's [heads][tokens][d]
        cache.append(layer, k, v, len);
        if (SPLIT) {
            tm = mark(3, tm);
        }
        float[] out = outScratch[layer] != null && outScratch[layer].length == q.length ? outScratch[layer]
                : (outScratch[layer] = new float[q.length]);
        if (len == 1) {
            attention.attend(cache, layer, q, qHeads, (float) li.scale(), out, li.mods());
        } else {
            attention.attendPrefill(cache, layer, q, qHeads, len, (float) li.scale(), out, li.mods());
        }
        if (SPLIT) {
            mark(4, tm);
        }
        return out;
    }

    /**
     * The attention output tensor: fp32 outputs go through one reused direct buffer for every
     * layer (piece l + 1 has consumed layer l's output before layer l + 1 attends); fp16/bf16 are
     * converted by {@link #tensor}.
     */
    private OnnxTensor output(float[] out, long[] shape, ai.onnxruntime.OnnxJavaType type) throws OrtException {
        if (type == ai.onnxruntime.OnnxJavaType.FLOAT) {
            return OnnxTensor.createTensor(DecoderModel.environment(), floatsOut("attention", out.length).put(out).flip(), shape);
        }
        return tensor(out, shape, type);
    }

    /**
     * A GroupQueryAttention layer done in the operator's place: tensors [1, tokens, heads x d]
     * (queries|keys|values in one when packed) are regrouped head-major, rotary embedding is applied
     * to the queries and new keys at positions past..past+len-1 (what the operator does with
     * seqlens_k = past + len - 1), the keys and values appended, attention computed over the cache
     * (grouped heads, causal), and the output handed back as [1, tokens, heads x d].
     */
    private void attendFused(int layer, JavaAttentionModel.LayerInfo li, Map<String, OnnxTensor> avail,
                             List<AutoCloseable> owned, int len) throws OrtException {
        JavaAttentionModel.Fused f = li.rotary();
        int d = cache.headDim();
        int nq = f.qHeads();
        int nkv = f.kvHeads();
        if (nkv != cache.kvHeads()) {
            throw new IllegalStateException("layer " + layer + ": the graph has " + nkv + " KV heads, the cache "
                    + cache.kvHeads());
        }
        float[] q;
        float[] k;
        float[] v;
        int qOff = 0;
        int kOff;
        int vOff;
        int stride;
        q = floats(avail.get(li.query()), li.query());
        if (f.packed()) {
            k = q;
            v = q;
            stride = (nq + 2 * nkv) * d;
            kOff = nq * d;
            vOff = (nq + nkv) * d;
        } else {
            k = floats(avail.get(li.newKey()), li.newKey());
            v = floats(avail.get(li.newValue()), li.newValue());
            stride = nq * d;
            kOff = 0;
            vOff = 0;
            if (k.length != len * nkv * d || v.length != k.length) {
                throw new IllegalStateException("layer " + layer + ": keys/values of " + k.length + "/" + v.length
                        + " floats do not fit " + len + " tokens x " + nkv + " KV heads x " + d);
            }
        }
        if (q.length != len * stride) {
            throw new IllegalStateException("layer " + layer + ": " + li.query() + " has " + q.length + " floats, not "
                    + len + " tokens x " + stride);
        }
        int kStride = f.packed() ? stride : nkv * d;
        int past = cache.length(layer);
        // reused across calls (a prefill chunk's arrays are megabytes; fresh ones per layer and chunk
        // grew the heap: docs/engine.md); the cache copies what it keeps, the outputs go to ONNX Runtime
        float[] qh = fusedScratch(0, nq * len * d);
        float[] kh = fusedScratch(1, nkv * len * d);
        float[] vh = fusedScratch(2, nkv * len * d);
        for (int t = 0; t < len; t++) {
            for (int h = 0; h < nq; h++) {
                System.arraycopy(q, t * stride + qOff + h * d, qh, (h * len + t) * d, d);
                rotate(f, qh, (h * len + t) * d, past + t, layer);
            }
            for (int h = 0; h < nkv; h++) {
                System.arraycopy(k, t * kStride + kOff + h * d, kh, (h * len + t) * d, d);
                rotate(f, kh, (h * len + t) * d, past + t, layer);
                System.arraycopy(v, t * kStride + vOff + h * d, vh, (h * len + t) * d, d);
            }
        }
        cache.append(layer, kh, vh, len);
        float[] out = fusedScratch(3, nq * len * d);
        if (len == 1) {
            attention.attend(cache, layer, qh, nq, (float) li.scale(), out, li.mods());
        } else {
            attention.attendPrefill(cache, layer, qh, nq, len, (float) li.scale(), out, li.mods());
        }
        float[] bsnh = fusedScratch(4, out.length);
        for (int h = 0; h < nq; h++) {
            for (int t = 0; t < len; t++) {
                System.arraycopy(out, (h * len + t) * d, bsnh, (t * nq + h) * d, d);
            }
        }
        put(avail, owned, li.output(), output(bsnh, new long[] {1, len, (long) nq * d}, avail.get(li.query()).getInfo().type));
    }

    /** Scratch arrays of the fused (GroupQueryAttention) path: queries, keys, values, output, transposed output. */
    private final float[][] fused = new float[5][];

    /** Scratch array {@code i} of exactly {@code n} floats (callers copy into them whole, or fill every element). */
    private float[] fusedScratch(int i, int n) {
        float[] a = fused[i];
        if (a == null || a.length != n) {
            a = fused[i] = new float[n];
        }
        return a;
    }

    /**
     * Rotary embedding of one head vector in place at {@code pos}: pairs (x[j], x[j + r/2])
     * (or (x[2j], x[2j+1]) when interleaved) over the first r = rotaryDim dimensions, rotated by
     * the angle whose cos/sin are row {@code pos} of the tables; the rest passes through.
     */
    static void rotate(JavaAttentionModel.Fused f, float[] x, int off, int pos, int layer) {
        if (f.cos() == null) {
            return;
        }
        if (pos >= f.positions()) {
            throw new IllegalArgumentException("position " + pos + " is beyond the model's rotary tables (" + f.positions()
                    + " positions, layer " + layer + ")");
        }
        int half = f.rotaryDim() / 2;
        int row = pos * half;
        for (int j = 0; j < half; j++) {
            int a = f.interleaved() ? off + 2 * j : off + j;
            int b = f.interleaved() ? a + 1 : a + half;
            float c = f.cos()[row + j];
            float s = f.sin()[row + j];
            float x1 = x[a];
            float x2 = x[b];
            x[a] = x1 * c - x2 * s;
            x[b] = x2 * c + x1 * s;
        }
    }

    /**
     * The attention output as the graph expects it: the queries' element type (attention is
     * computed in fp32 whatever the model's precision; fp16/bf16 outputs are rounded to nearest).
     */
    static OnnxTensor tensor(float[] out, long[] shape, ai.onnxruntime.OnnxJavaType type) throws OrtException {
        return switch (type) {
            case FLOAT -> OnnxTensor.createTensor(DecoderModel.environment(), FloatBuffer.wrap(out), shape);
            case FLOAT16, BFLOAT16 -> {
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(out.length * 2).order(java.nio.ByteOrder.nativeOrder());
                for (float f : out) {
                    b.putShort(type == ai.onnxruntime.OnnxJavaType.FLOAT16 ? Float.floatToFloat16(f) : bf16(f));
                }
                b.rewind();
                yield OnnxTensor.createTensor(DecoderModel.environment(), b, shape, type);
            }
            default -> throw new IllegalArgumentException("the attention inputs are " + type + "; kvquant's attention takes "
                    + "fp32, fp16 or bf16");
        };
    }

    /** fp32 to bf16, rounding to nearest even (NaN kept a NaN). */
    static short bf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) {
            return (short) ((bits >>> 16) | 0x40);
        }
        return (short) ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16);
    }

    private static float[] floats(OnnxTensor t, String name) {
        if (t == null) {
            throw new IllegalStateException(name + " was not produced");
        }
        ai.onnxruntime.OnnxJavaType type = t.getInfo().type;
        if (type != ai.onnxruntime.OnnxJavaType.FLOAT && type != ai.onnxruntime.OnnxJavaType.FLOAT16
                && type != ai.onnxruntime.OnnxJavaType.BFLOAT16) {
            throw new IllegalArgumentException("java-attention mode takes fp32, fp16 or bf16 attention inputs; " + name + " is "
                    + type);
        }
        FloatBuffer fb = t.getFloatBuffer(); // a fresh copy; fp16 and bf16 widened to fp32 exactly
        if (fb.hasArray() && fb.arrayOffset() == 0 && fb.position() == 0 && fb.remaining() == fb.array().length) {
            return fb.array(); // the copy's own array: no second copy
        }
        float[] a = new float[fb.remaining()];
        fb.get(a);
        return a;
    }

    private static void put(Map<String, OnnxTensor> avail, List<AutoCloseable> owned, String name, OnnxTensor t) {
        avail.put(name, t);
        owned.add(t);
    }
}
