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
        if (len < 1 || off < 0 || off + len > ids.length) {
            throw new IllegalArgumentException("bad token range [" + off + ", " + (off + len) + ") of " + ids.length);
        }
        int past = cache.length(0);
        avail.clear();
        owned.clear();
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
            int stages = model.pieces.size();
            for (int s = 0; s < stages; s++) {
                JavaAttentionModel.PieceInfo piece = model.pieces.get(s);
                Map<String, OnnxTensor> in = pieceInputs.get(s);
                in.clear();
                for (String name : piece.inputs()) {
                    OnnxTensor t = avail.get(name);
                    if (t == null) {
                        throw new IllegalStateException("piece " + s + " needs " + name + ", which no earlier piece made");
                    }
                    in.put(name, t);
                }
                OrtSession.Result r = model.sessions.get(s).run(in);
                owned.add(r);
                for (String name : piece.outputs()) {
                    OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("piece output " + name + " missing"));
                    avail.put(name, (OnnxTensor) v);
                }
                if (s < model.layers.size()) {
                    attend(s, avail, owned, len);
                }
            }
            OnnxTensor logits = avail.get("logits");
            long[] shape = logits.getInfo().getShape();
            int vocab = (int) shape[shape.length - 1];
            FloatBuffer fb = logits.getFloatBuffer();
            float[] last = new float[vocab];
            fb.position(fb.limit() - vocab);
            fb.get(last);
            return last;
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on an engine step (past " + past + ", " + len
                    + " tokens): " + e.getMessage(), e);
        } finally {
            for (AutoCloseable c : owned) {
                try {
                    c.close();
                } catch (Exception e) {
                    // closing native buffers: nothing to recover
                }
            }
            owned.clear();
            avail.clear();
        }
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
        float[] q = floats(avail.get(li.query()), li.query());
        float[] k = floats(avail.get(li.newKey()), li.newKey());
        float[] v = floats(avail.get(li.newValue()), li.newValue());
        int d = cache.headDim();
        int qHeads = q.length / (len * d);
        if (qHeads * len * d != q.length || k.length != cache.kvHeads() * len * d || v.length != k.length) {
            throw new IllegalStateException("layer " + layer + ": queries/keys/values of " + q.length + "/" + k.length + "/"
                    + v.length + " floats do not fit " + len + " tokens of head dim " + d + " and " + cache.kvHeads()
                    + " KV heads");
        }
        // [1, heads, tokens, d] is the cache's [heads][tokens][d]
        cache.append(layer, k, v, len);
        float[] out = outScratch[layer] != null && outScratch[layer].length == q.length ? outScratch[layer]
                : (outScratch[layer] = new float[q.length]);
        if (len == 1) {
            attention.attend(cache, layer, q, qHeads, (float) li.scale(), out);
        } else {
            attention.attendPrefill(cache, layer, q, qHeads, len, (float) li.scale(), out);
        }
        // one buffer for every layer's output: piece l + 1 has consumed layer l's before layer l + 1 attends
        put(avail, owned, li.output(), OnnxTensor.createTensor(DecoderModel.environment(),
                floatsOut("attention", out.length).put(out).flip(), new long[] {1, qHeads, len, d}));
    }

    private static float[] floats(OnnxTensor t, String name) {
        if (t == null) {
            throw new IllegalStateException(name + " was not produced");
        }
        if (t.getInfo().type != ai.onnxruntime.OnnxJavaType.FLOAT) {
            throw new IllegalArgumentException("java-attention mode supports fp32 models; " + name + " is "
                    + t.getInfo().type);
        }
        FloatBuffer fb = t.getFloatBuffer();
        float[] a = new float[fb.remaining()];
        fb.get(a);
        return a;
    }

    private static void put(Map<String, OnnxTensor> avail, List<AutoCloseable> owned, String name, OnnxTensor t) {
        avail.put(name, t);
        owned.add(t);
    }
}
