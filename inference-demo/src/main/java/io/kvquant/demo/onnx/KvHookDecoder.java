package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import java.util.function.IntConsumer;

/**
 * The KV hook in round-trip mode: before each step the dense past is what the {@link KvCache}
 * reconstructs ({@code read(layer, 0, len)}), after it the step's new keys and values (the last
 * positions of {@code present}) are appended to the cache. With a lossless cache ({@code full})
 * the logits equal plain ONNX Runtime decoding exactly.
 */
public final class KvHookDecoder implements Decoder {

    private final DecoderModel model;
    private final KvCache cache;
    private final int prefillChunk;
    /** Positions at the end of the cache whose reconstruction may still change (residual windows). */
    private final int unstableTail;
    /** Dense mirror of what the cache reconstructs, per layer and KV head: [tokens][headDim]. */
    private final float[][][] mirrorK;
    private final float[][][] mirrorV;
    private int mirrored;
    private float[] readK = new float[0];
    private float[] readV = new float[0];

    public KvHookDecoder(DecoderModel model, KvCache cache, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        if (cache.layers() != model.layers() || cache.kvHeads() != model.kvHeads() || cache.headDim() != model.headDim()) {
            throw new IllegalArgumentException("cache shape " + cache.layers() + "x" + cache.kvHeads() + "x" + cache.headDim()
                    + " does not match the model's " + model.layers() + "x" + model.kvHeads() + "x" + model.headDim());
        }
        this.model = model;
        this.cache = cache;
        this.prefillChunk = prefillChunk;
        this.unstableTail = unstableTail(cache);
        this.mirrorK = new float[model.layers()][model.kvHeads()][0];
        this.mirrorV = new float[model.layers()][model.kvHeads()][0];
    }

    /**
     * How many of the most recent positions a cache may still re-encode: kvquant's caches keep
     * the newest {@code window} tokens (KIVI: residual + one group) in full precision and
     * quantize them later, so their reconstruction changes once; older positions never change.
     * Unknown implementations are re-read in full every step.
     */
    static int unstableTail(KvCache cache) {
        if (cache instanceof LayeredKvCache lc) {
            KvQuantConfig c = lc.config();
            return switch (c.kind()) {
                case FULL, FP16 -> 0;
                case TURBO -> c.window();
                case KIVI -> c.window() + c.groupSize();
            };
        }
        return Integer.MAX_VALUE;
    }

    /** Tokens held in the cache (the next position). */
    @Override
    public int position() {
        return cache.length(0);
    }

    @Override
    public KvCache cache() {
        return cache;
    }

    /**
     * Feeds the prompt in chunks of at most {@code --prefill-chunk} tokens; returns the logits
     * after its last token. {@code progress} receives the number of tokens done after each chunk.
     */
    @Override
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

    /** One decode step: feeds {@code token}, returns the next-token logits. */
    @Override
    public float[] step(long token) {
        return feed(new long[] {token}, 0, 1);
    }

    private float[] feed(long[] ids, int off, int len) {
        int past = cache.length(0);
        for (int l = 1; l < model.layers(); l++) {
            if (cache.length(l) != past) {
                throw new IllegalStateException("cache layers out of step: layer " + l + " holds " + cache.length(l)
                        + " tokens, layer 0 holds " + past);
            }
        }
        refreshMirror(past);
        DecoderModel.Step s = model.run(ids, off, len, past, (layer, key, heads, offsets) -> {
            float[][] m = key ? mirrorK[layer] : mirrorV[layer];
            for (int h = 0; h < heads.length; h++) {
                heads[h] = m[h];
                offsets[h] = 0;
            }
        });
        for (int l = 0; l < model.layers(); l++) {
            cache.append(l, s.keys()[l], s.values()[l], len);
        }
        return s.logits();
    }

    /** Brings the dense mirror up to {@code past} positions, re-reading only what may have changed. */
    private void refreshMirror(int past) {
        if (past < mirrored) {
            mirrored = 0; // the cache was cleared
        }
        // Positions that were still in a residual window at the last refresh may have been
        // re-encoded since; everything before them is final.
        int from = unstableTail == Integer.MAX_VALUE ? 0 : Math.max(0, mirrored - unstableTail);
        int n = past - from;
        if (n > 0) {
            int heads = model.kvHeads();
            int d = model.headDim();
            if (readK.length < heads * n * d) {
                readK = new float[heads * n * d];
                readV = new float[heads * n * d];
            }
            for (int l = 0; l < model.layers(); l++) {
                cache.read(l, from, past, readK, readV);
                for (int h = 0; h < heads; h++) {
                    if (mirrorK[l][h].length < past * d) {
                        int cap = Math.max(past, mirrorK[l][h].length / d * 3 / 2) * d;
                        mirrorK[l][h] = java.util.Arrays.copyOf(mirrorK[l][h], cap);
                        mirrorV[l][h] = java.util.Arrays.copyOf(mirrorV[l][h], cap);
                    }
                    System.arraycopy(readK, h * n * d, mirrorK[l][h], from * d, n * d);
                    System.arraycopy(readV, h * n * d, mirrorV[l][h], from * d, n * d);
                }
            }
        }
        mirrored = past;
    }

    /** Checks the mirror against a full read of the cache (for tests): true when identical. */
    boolean mirrorMatchesCache() {
        int past = cache.length(0);
        refreshMirror(past);
        int heads = model.kvHeads();
        int d = model.headDim();
        float[] k = new float[heads * past * d];
        float[] v = new float[heads * past * d];
        for (int l = 0; l < model.layers(); l++) {
            if (past > 0) {
                cache.read(l, 0, past, k, v);
            }
            for (int h = 0; h < heads; h++) {
                if (!java.util.Arrays.equals(k, h * past * d, (h + 1) * past * d, mirrorK[l][h], 0, past * d)
                        || !java.util.Arrays.equals(v, h * past * d, (h + 1) * past * d, mirrorV[l][h], 0, past * d)) {
                    return false;
                }
            }
        }
        return true;
    }
}
