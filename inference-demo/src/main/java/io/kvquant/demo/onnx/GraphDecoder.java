package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.cache.LayeredKvCache;
import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * In-graph dequantization mode: each step hands ONNX Runtime the cache's packed codes and norms
 * (not a dense past), the graph decodes them where attention runs, and the step's new keys and
 * values come back to be quantized and appended. A mirror of the records, grown by the new
 * positions after each step, avoids re-reading the cache.
 */
public final class GraphDecoder extends CacheDecoder {
    private final GraphModel model;
    private final LayeredKvCache layered;
    private final int heads;
    private final int dim;
    /** Record and code bytes for keys [0] and values [1] (k4v3 has different widths). */
    private final int[] recordBytes = new int[2];
    private final int[] codeBytes = new int[2];
    /** [layer][key=0/value=1][head]: packed codes (tokens × codeBytes) and norms. */
    private final byte[][][][] codes;
    private final short[][][][] norms; // fp16 bits, as stored
    private long bytesMoved;
    private long lastStepBytes;

    GraphDecoder(GraphModel model, LayeredKvCache cache, int prefillChunk) {
        super(cache, prefillChunk);
        this.model = model;
        this.layered = cache;
        this.heads = cache.kvHeads();
        this.dim = cache.headDim();
        recordBytes[0] = io.kvquant.cache.KvCaches.keyCodec(layered.config(), dim, 0).recordBytes();
        recordBytes[1] = io.kvquant.cache.KvCaches.valueCodec(layered.config(), dim, 0).recordBytes();
        codeBytes[0] = recordBytes[0] - 2;
        codeBytes[1] = recordBytes[1] - 2;
        int layers = cache.layers();
        codes = new byte[layers][2][heads][0];
        norms = new short[layers][2][heads][0];
    }

    /** Bytes of past (codes and norms) handed to ONNX Runtime so far. */
    public long bytesMoved() {
        return bytesMoved;
    }

    /** The packed copy of the codes and norms this decoder keeps to hand the graph (kv_bytes counts it). */
    @Override
    public long heldBytes() {
        long b = 0;
        for (int l = 0; l < codes.length; l++) {
            for (int kv = 0; kv < 2; kv++) {
                for (int h = 0; h < heads; h++) {
                    b += codes[l][kv][h].length + 2L * norms[l][kv][h].length;
                }
            }
        }
        return b;
    }

    /** Bytes of past handed to ONNX Runtime by the latest call. */
    public long lastStepBytes() {
        return lastStepBytes;
    }

    @Override
    public float[] feed(long[] ids, int off, int len) {
        int past = cache.length(0);
        Map<String, OnnxTensor> in = new HashMap<>();
        try {
            var env = DecoderModel.environment();
            long[] pos = new long[len];
            long[] mask = new long[past + len];
            Arrays.fill(mask, 1L);
            for (int i = 0; i < len; i++) {
                pos[i] = past + i;
            }
            in.put("input_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(Arrays.copyOfRange(ids, off, off + len)),
                    new long[] {1, len}));
            in.put("attention_mask", OnnxTensor.createTensor(env, LongBuffer.wrap(mask), new long[] {1, past + len}));
            in.put("position_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(pos), new long[] {1, len}));
            String[] kinds = {"key", "value"};
            long before = bytesMoved;
            for (int l = 0; l < model.layers; l++) {
                for (int kv = 0; kv < 2; kv++) {
                    int cb = codeBytes[kv];
                    byte[] c = new byte[heads * past * cb];
                    short[] n = new short[heads * past];
                    for (int h = 0; h < heads; h++) {
                        System.arraycopy(codes[l][kv][h], 0, c, h * past * cb, past * cb);
                        System.arraycopy(norms[l][kv][h], 0, n, h * past, past);
                    }
                    in.put("kvq_codes." + l + "." + kinds[kv], OnnxTensor.createTensor(env, ByteBuffer.wrap(c),
                            new long[] {1, heads, past, cb}, OnnxJavaType.UINT8));
                    in.put("kvq_norms." + l + "." + kinds[kv], OnnxTensor.createTensor(env, java.nio.ShortBuffer.wrap(n),
                            new long[] {1, heads, past, 1}, OnnxJavaType.FLOAT16));
                    bytesMoved += c.length + 2L * n.length;
                }
            }
            lastStepBytes = bytesMoved - before;
            float[] last;
            try (OrtSession.Result r = model.session.run(in)) {
                OnnxTensor logits = (OnnxTensor) r.get("logits").orElseThrow();
                long[] shape = logits.getInfo().getShape();
                int vocab = (int) shape[shape.length - 1];
                FloatBuffer fb = logits.getFloatBuffer();
                last = new float[vocab];
                fb.position(fb.limit() - vocab);
                fb.get(last);
                for (int l = 0; l < model.layers; l++) {
                    cache.append(l, floats(r, "kvq_new." + l + ".key"), floats(r, "kvq_new." + l + ".value"), len);
                }
            }
            mirror(past, past + len);
            return last;
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on a graph-mode step (past " + past + ", " + len + " tokens): "
                    + e.getMessage(), e);
        } finally {
            for (OnnxTensor t : in.values()) {
                t.close();
            }
        }
    }

    private float[] floats(OrtSession.Result r, String name) {
        OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("the graph has no output " + name));
        FloatBuffer fb = ((OnnxTensor) v).getFloatBuffer();
        float[] a = new float[fb.remaining()];
        fb.get(a);
        if (a.length % (heads * dim) != 0) {
            throw new IllegalStateException(name + " holds " + a.length + " floats, not a multiple of " + heads + "x" + dim);
        }
        return a;
    }

    /** Appends the records of tokens [from, to) to the mirror. */
    private void mirror(int from, int to) {
        for (int l = 0; l < model.layers; l++) {
            for (int kv = 0; kv < 2; kv++) {
                int rb = recordBytes[kv];
                int cb = codeBytes[kv];
                byte[] rec = new byte[(to - from) * rb];
                for (int h = 0; h < heads; h++) {
                    layered.copyRecords(l, kv == 0, h, from, to, rec, 0);
                    if (codes[l][kv][h].length < to * cb) {
                        int cap = Math.max(to, codes[l][kv][h].length / cb * 3 / 2);
                        codes[l][kv][h] = Arrays.copyOf(codes[l][kv][h], cap * cb);
                        norms[l][kv][h] = Arrays.copyOf(norms[l][kv][h], cap);
                    }
                    for (int t = from; t < to; t++) {
                        int o = (t - from) * rb;
                        norms[l][kv][h][t] = (short) ((rec[o] & 0xFF) | (rec[o + 1] << 8));
                        System.arraycopy(rec, o + 2, codes[l][kv][h], t * cb, cb);
                    }
                }
            }
        }
    }
}
