package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import java.util.Arrays;

/**
 * A dense copy of what a {@link KvCache} reconstructs, per layer and KV head
 * ({@code [tokens][headDim]} floats), kept up to date incrementally: round-trip decoding feeds
 * it to a dense attention graph every step, and re-reading the whole cache each time would cost
 * O(context) dequantization per token. Only positions that may still change are re-read.
 */
public final class DenseMirror {
    private final KvCache cache;
    private final int layers;
    private final int heads;
    private final int d;
    /** Positions at the end of the cache whose reconstruction may still change (residual windows). */
    private final int unstableTail;
    private final float[][][] k;
    private final float[][][] v;
    private int mirrored;
    private float[] readK = new float[0];
    private float[] readV = new float[0];

    public DenseMirror(KvCache cache) {
        this.cache = cache;
        this.layers = cache.layers();
        this.heads = cache.kvHeads();
        this.d = cache.headDim();
        this.unstableTail = unstableTail(cache);
        this.k = new float[layers][heads][0];
        this.v = new float[layers][heads][0];
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
                case TURBO -> c.window() + c.mid(); // re-encoded on leaving the window and again on leaving the middle tier
                case KIVI -> c.window() + c.groupSize();
            };
        }
        return Integer.MAX_VALUE;
    }

    /** Bytes this mirror holds (its dense copies and read buffers). */
    public long bytes() {
        long b = 4L * (readK.length + readV.length);
        for (int l = 0; l < layers; l++) {
            for (int h = 0; h < heads; h++) {
                b += 4L * (k[l][h].length + v[l][h].length);
            }
        }
        return b;
    }

    /** Keys of one layer and KV head: at least {@code past x headDim} floats after {@link #refresh}. */
    public float[] keys(int layer, int head) {
        return k[layer][head];
    }

    public float[] values(int layer, int head) {
        return v[layer][head];
    }

    /** Brings the mirror up to {@code past} positions, re-reading only what may have changed. */
    public void refresh(int past) {
        if (past < mirrored) {
            mirrored = 0; // the cache was cleared
        }
        // Positions that were still in a residual window at the last refresh may have been
        // re-encoded since; everything before them is final.
        int from = unstableTail == Integer.MAX_VALUE ? 0 : Math.max(0, mirrored - unstableTail);
        int n = past - from;
        if (n > 0) {
            if (readK.length < heads * n * d) {
                readK = new float[heads * n * d];
                readV = new float[heads * n * d];
            }
            for (int l = 0; l < layers; l++) {
                cache.read(l, from, past, readK, readV);
                for (int h = 0; h < heads; h++) {
                    if (k[l][h].length < past * d) {
                        int cap = Math.max(past, k[l][h].length / d * 3 / 2) * d;
                        k[l][h] = Arrays.copyOf(k[l][h], cap);
                        v[l][h] = Arrays.copyOf(v[l][h], cap);
                    }
                    System.arraycopy(readK, h * n * d, k[l][h], from * d, n * d);
                    System.arraycopy(readV, h * n * d, v[l][h], from * d, n * d);
                }
            }
        }
        mirrored = past;
    }

    /** Checks the mirror against a full read of the cache (for tests): true when identical. */
    boolean matchesCache() {
        int past = cache.length(0);
        refresh(past);
        float[] kk = new float[heads * past * d];
        float[] vv = new float[heads * past * d];
        for (int l = 0; l < layers; l++) {
            if (past > 0) {
                cache.read(l, 0, past, kk, vv);
            }
            for (int h = 0; h < heads; h++) {
                if (!Arrays.equals(kk, h * past * d, (h + 1) * past * d, k[l][h], 0, past * d)
                        || !Arrays.equals(vv, h * past * d, (h + 1) * past * d, v[l][h], 0, past * d)) {
                    return false;
                }
            }
        }
        return true;
    }
}
