package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.ShortBuffer;
import java.util.HashMap;
import java.util.Map;
import java.util.function.IntConsumer;

/**
 * Plain ONNX Runtime decoding, the baseline kvquant is measured against: the {@code present}
 * outputs of step t are passed as the {@code past_key_values} inputs of step t+1 as they are
 * (the same native {@link OnnxTensor}s, never converted to Java arrays), with no kvquant cache in
 * the loop. ONNX Runtime's Java API has no I/O binding, so each step ONNX Runtime itself
 * allocates the new {@code present} (past + new positions) and the previous step's tensors are
 * released once the step has run; that is what a Java user of ONNX Runtime gets.
 *
 * <p>Not thread-safe. Close it to release the past.
 */
public final class PlainOrtDecoder implements AutoCloseable {

    /**
     * What the loop needs of the graph: its session, the past's geometry and element type
     * ({@code pastDim} is the stored last dimension: head_dim, or head_dim / 2 for ONNX Runtime's
     * 4-bit cache, two values a byte), {@code pastBytes} per stored element, and which optional
     * inputs it has.
     */
    public record Graph(OrtSession session, int layers, int kvHeads, int headDim, int pastDim, OnnxJavaType pastType,
                        int pastBytes, boolean hasAttentionMask, boolean hasPositionIds, boolean hasUseCacheBranch) {

        /** A {@link DecoderModel}'s graph (fp32 or fp16 past). */
        public static Graph of(DecoderModel m) {
            return new Graph(m.session(), m.layers(), m.kvHeads(), m.headDim(), m.headDim(),
                    m.fp16() ? OnnxJavaType.FLOAT16 : OnnxJavaType.FLOAT, m.fp16() ? 2 : 4,
                    m.session().getInputNames().contains("attention_mask"), m.hasPositionIds(), m.hasUseCacheBranch());
        }
    }

    private final Graph model;
    private final OrtSession session;
    private final int prefillChunk;
    private final boolean hasAttentionMask;
    private final Map<String, ByteBuffer> buffers = new HashMap<>();
    /** The last step's outputs: its present tensors are the next step's past. */
    private OrtSession.Result held;
    private int position;

    public PlainOrtDecoder(DecoderModel model, int prefillChunk) {
        this(Graph.of(model), prefillChunk);
    }

    public PlainOrtDecoder(Graph model, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("prefill chunk must be >= 1, got " + prefillChunk);
        }
        this.model = model;
        this.session = model.session();
        this.prefillChunk = prefillChunk;
        this.hasAttentionMask = model.hasAttentionMask();
    }

    /** Feeds the prompt {@link #prefillChunk()} tokens per run; returns the logits after its last token. */
    public float[] prefill(long[] tokens, IntConsumer progress) {
        if (tokens.length == 0) {
            throw new IllegalArgumentException("the prompt is empty (no tokens)");
        }
        float[] logits = null;
        for (int off = 0; off < tokens.length; off += prefillChunk) {
            int len = Math.min(prefillChunk, tokens.length - off);
            logits = feed(tokens, off, len);
            if (progress != null) {
                progress.accept(off + len);
            }
        }
        return logits;
    }

    /** One decode step. */
    public float[] step(long token) {
        return feed(new long[] {token}, 0, 1);
    }

    /** Runs {@code ids[off, off+len)} at the next positions; returns the logits after the last. */
    public float[] feed(long[] ids, int off, int len) {
        if (len < 1 || off < 0 || off + len > ids.length) {
            throw new IllegalArgumentException("bad token range [" + off + ", " + (off + len) + ") of " + ids.length);
        }
        OrtEnvironment env = DecoderModel.environment();
        int past = position;
        int total = past + len;
        Map<String, OnnxTensor> in = new HashMap<>();
        Map<String, OnnxTensor> mine = new HashMap<>();
        try {
            LongBuffer idb = longs("ids", len);
            idb.put(ids, off, len).flip();
            mine.put("input_ids", OnnxTensor.createTensor(env, idb, new long[] {1, len}));
            if (hasAttentionMask) {
                LongBuffer mb = longs("mask", total);
                for (int i = 0; i < total; i++) {
                    mb.put(1L);
                }
                mine.put("attention_mask", OnnxTensor.createTensor(env, mb.flip(), new long[] {1, total}));
            }
            if (model.hasPositionIds()) {
                LongBuffer pb = longs("pos", len);
                for (int i = 0; i < len; i++) {
                    pb.put(past + i);
                }
                mine.put("position_ids", OnnxTensor.createTensor(env, pb.flip(), new long[] {1, len}));
            }
            if (model.hasUseCacheBranch()) {
                mine.put("use_cache_branch", OnnxTensor.createTensor(env, new boolean[] {past > 0}));
            }
            in.putAll(mine);
            long[] empty = {1, model.kvHeads(), 0, model.pastDim()};
            for (int l = 0; l < model.layers(); l++) {
                for (String kind : new String[] {"key", "value"}) {
                    String name = "past_key_values." + l + "." + kind;
                    if (held == null) {
                        OnnxTensor e = model.pastType() == OnnxJavaType.FLOAT
                                ? OnnxTensor.createTensor(env, FloatBuffer.allocate(0), empty)
                                : OnnxTensor.createTensor(env, ByteBuffer.allocateDirect(0), empty, model.pastType());
                        mine.put(name, e);
                        in.put(name, e);
                    } else {
                        in.put(name, present(held, l, kind));
                    }
                }
            }
            OrtSession.Result res = session.run(in);
            OrtSession.Result old = held;
            held = res;
            position = total;
            if (old != null) {
                old.close(); // the past just consumed; ONNX Runtime made a new present
            }
            return lastRow(res);
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on a step (past " + past + ", " + len + " tokens): "
                    + DecoderModel.firstLine(e.getMessage()), e);
        } finally {
            for (OnnxTensor t : mine.values()) {
                t.close();
            }
        }
    }

    private static OnnxTensor present(OrtSession.Result r, int layer, String kind) {
        String name = "present." + layer + "." + kind;
        OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("output '" + name + "' missing"));
        if (!(v instanceof OnnxTensor t)) {
            throw new IllegalStateException("output '" + name + "' is not a tensor");
        }
        return t;
    }

    private static float[] lastRow(OrtSession.Result res) {
        OnnxValue v = res.get("logits").orElseThrow(() -> new IllegalStateException("output 'logits' missing"));
        OnnxTensor t = (OnnxTensor) v;
        long[] shape = t.getInfo().getShape();
        int vocab = (int) shape[shape.length - 1];
        float[] out = new float[vocab];
        if (t.getInfo().type == OnnxJavaType.FLOAT16) {
            ShortBuffer sb = t.getShortBuffer();
            int base = sb.remaining() - vocab;
            for (int i = 0; i < vocab; i++) {
                out[i] = Float.float16ToFloat(sb.get(base + i));
            }
            return out;
        }
        FloatBuffer fb = t.getFloatBuffer();
        fb.position(fb.limit() - vocab);
        fb.get(out);
        return out;
    }

    /** A reusable direct buffer per input (ONNX Runtime wraps direct buffers without a copy). */
    private LongBuffer longs(String slot, int n) {
        long need = 8L * n;
        ByteBuffer b = buffers.get(slot);
        if (b == null || b.capacity() < need) {
            long cap = Math.max(need, b == null ? 64 : b.capacity() + b.capacity() / 2);
            b = ByteBuffer.allocateDirect((int) cap).order(ByteOrder.nativeOrder());
            buffers.put(slot, b);
        }
        return b.clear().limit((int) need).slice().order(ByteOrder.nativeOrder()).asLongBuffer();
    }

    public int prefillChunk() {
        return prefillChunk;
    }

    /** Tokens in the past (the position of the next token). */
    public int position() {
        return position;
    }

    /** Bytes of the past held between steps: every present tensor of the last step. */
    public long pastBytes() {
        return 2L * model.layers() * model.kvHeads() * model.pastDim() * position * model.pastBytes();
    }

    /**
     * The last step's {@code present.layer.kind} as floats, [kvHeads][tokens][headDim] (fp32 or
     * fp16 pasts only): the calibration sample of ONNX Runtime's quantized cache.
     */
    public float[] presentFloats(int layer, String kind) {
        if (held == null) {
            throw new IllegalStateException("nothing decoded yet");
        }
        OnnxTensor t = present(held, layer, kind);
        if (t.getInfo().type == OnnxJavaType.FLOAT) {
            FloatBuffer fb = t.getFloatBuffer();
            float[] out = new float[fb.remaining()];
            fb.get(out);
            return out;
        }
        if (t.getInfo().type == OnnxJavaType.FLOAT16) {
            ShortBuffer sb = t.getShortBuffer();
            float[] out = new float[sb.remaining()];
            for (int i = 0; i < out.length; i++) {
                out[i] = Float.float16ToFloat(sb.get(i));
            }
            return out;
        }
        throw new IllegalStateException("present." + layer + "." + kind + " is " + t.getInfo().type + ", not fp32/fp16");
    }

    /** The last step's {@code present.layer.kind} as stored bytes (int8/uint8 pasts: ONNX Runtime's quantized codes). */
    public byte[] presentBytes(int layer, String kind) {
        if (held == null) {
            throw new IllegalStateException("nothing decoded yet");
        }
        ByteBuffer b = present(held, layer, kind).getByteBuffer();
        byte[] out = new byte[b.remaining()];
        b.get(out);
        return out;
    }

    /** What the same past takes in fp16. */
    public long pastBytesFp16() {
        return 2L * model.layers() * model.kvHeads() * model.headDim() * position * 2;
    }

    @Override
    public void close() {
        if (held != null) {
            held.close();
            held = null;
        }
    }
}
