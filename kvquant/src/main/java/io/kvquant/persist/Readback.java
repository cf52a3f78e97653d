package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;
import java.util.ArrayList;
import java.util.List;

/**
 * How a few tokens read back (dequantized keys and values, every KV head) from the cache that
 * was saved. After a load the restored cache must read them back the same: this catches any
 * state a cache holds outside its records (for example a mean subtracted from keys) that the
 * saving build did not put in the file, instead of continuing from a silently wrong cache.
 * Compared with a relative tolerance of 1e-4 per vector, so a SIMD and a scalar build agree.
 */
record Readback(int token, float[] keys, float[] values) {

    static final int MAX = 4;

    /** The probe tokens of a cache of {@code n} tokens: the first and the last. */
    static int[] probes(int n) {
        return n == 0 ? new int[0] : n == 1 ? new int[] {0} : new int[] {0, n - 1};
    }

    static void write(Le.Writer w, LayeredKvCache cache, int layer, int[] tokens) {
        write(w, cache, layer, tokens, false);
    }

    /** With {@code asRecords}, middle-tier tokens as the records a prefix block stores for them. */
    static void write(Le.Writer w, LayeredKvCache cache, int layer, int[] tokens, boolean asRecords) {
        int hd = cache.kvHeads() * cache.headDim();
        w.i32(tokens.length);
        for (int t : tokens) {
            float[] k = new float[hd];
            float[] v = new float[hd];
            if (asRecords) {
                cache.readAsRecords(layer, t, t + 1, k, v);
            } else {
                cache.read(layer, t, t + 1, k, v);
            }
            w.i32(t);
            for (float x : k) {
                w.i32(Float.floatToRawIntBits(x));
            }
            for (float x : v) {
                w.i32(Float.floatToRawIntBits(x));
            }
        }
    }

    static List<Readback> read(Le.Reader r, int heads, int dim, int tokens) throws CacheRefusedException {
        int n = r.count(MAX, "readback count");
        List<Readback> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            int t = r.count(Math.max(0, tokens - 1), "readback token");
            float[] k = new float[heads * dim];
            float[] v = new float[heads * dim];
            r.need(8L * heads * dim);
            for (int j = 0; j < k.length; j++) {
                k[j] = Float.intBitsToFloat(r.i32());
            }
            for (int j = 0; j < v.length; j++) {
                v[j] = Float.intBitsToFloat(r.i32());
            }
            out.add(new Readback(t, k, v));
        }
        return out;
    }

    /** Null if {@code cache} reads this token back as saved, else a reason. */
    String check(LayeredKvCache cache, int layer) {
        int dim = cache.headDim();
        float[] k = new float[keys.length];
        float[] v = new float[values.length];
        cache.read(layer, token, token + 1, k, v);
        for (int h = 0; h < cache.kvHeads(); h++) {
            if (!close(keys, k, h * dim, dim) || !close(values, v, h * dim, dim)) {
                return "layer " + layer + " reads token " + token + " (kv head " + h + ") back differently after loading: "
                        + "the cache holds state this file does not";
            }
        }
        return null;
    }

    private static boolean close(float[] a, float[] b, int off, int n) {
        double d = 0;
        double s = 0;
        for (int i = off; i < off + n; i++) {
            d += (double) (a[i] - b[i]) * (a[i] - b[i]);
            s += (double) a[i] * a[i];
        }
        return Math.sqrt(d) <= 1e-4 * Math.sqrt(s) + 1e-6;
    }
}
