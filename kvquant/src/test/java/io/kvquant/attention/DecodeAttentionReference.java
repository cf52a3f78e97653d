package io.kvquant.attention;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.util.Random;

/** Shared pieces of the kernel tests: test data, a cache filled in uneven chunks, exact attention in double. */
final class DecodeAttentionReference {

    private DecodeAttentionReference() {
    }

    /** Keys with a few outlier channels, values Gaussian ([kvHeads][len][d] each). */
    static float[][] data(Random r, int kvHeads, int len, int d) {
        float[] k = new float[kvHeads * len * d];
        float[] v = new float[kvHeads * len * d];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) r.nextGaussian() * ((i % d) % 16 == 3 ? 4f : 1f);
            v[i] = (float) r.nextGaussian();
        }
        return new float[][]{k, v};
    }

    /** Appends [kvHeads][len][d] data in uneven chunks (so pages and windows are crossed mid-append). */
    static LayeredKvCache fill(String spec, float[][] kv, int kvHeads, int len, int d) {
        LayeredKvCache c = KvCaches.create(spec, 1, kvHeads, d);
        int[] chunks = {37, 1, 16, 5, 64};
        int t0 = 0;
        for (int ci = 0; t0 < len; ci++) {
            int n = Math.min(chunks[ci % chunks.length], len - t0);
            float[] k = new float[kvHeads * n * d];
            float[] v = new float[kvHeads * n * d];
            for (int h = 0; h < kvHeads; h++) {
                System.arraycopy(kv[0], (h * len + t0) * d, k, h * n * d, n * d);
                System.arraycopy(kv[1], (h * len + t0) * d, v, h * n * d, n * d);
            }
            c.append(0, k, v, n);
            t0 += n;
        }
        return c;
    }

    /**
     * Attention of query q[qo..qo+d) over the first {@code visible} tokens of KV head g of
     * [kvHeads][len][d] keys k and values v, into out[oo..oo+d).
     */
    static void exact(float[] q, int qo, float[] k, float[] v, int g, int len, int visible, int d, float scale, double[] out,
                      int oo) {
        double[] p = new double[visible];
        double max = Double.NEGATIVE_INFINITY;
        for (int t = 0; t < visible; t++) {
            double s = 0;
            for (int j = 0; j < d; j++) {
                s += (double) q[qo + j] * k[(g * len + t) * d + j];
            }
            p[t] = s * scale;
            max = Math.max(max, p[t]);
        }
        double sum = 0;
        for (int t = 0; t < visible; t++) {
            p[t] = Math.exp(p[t] - max);
            sum += p[t];
        }
        for (int j = 0; j < d; j++) {
            double a = 0;
            for (int t = 0; t < visible; t++) {
                a += p[t] * v[(g * len + t) * d + j];
            }
            out[oo + j] = a / sum;
        }
    }
}
