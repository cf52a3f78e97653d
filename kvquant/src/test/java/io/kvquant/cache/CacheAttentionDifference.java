package io.kvquant.cache;

import io.kvquant.attention.DecodeAttention;
import java.util.Random;
import java.util.function.BiFunction;

/** The comparison KeyCenteringTest and KeyScaleTest share: two caches fed the same chunks, their attention compared. */
final class CacheAttentionDifference {

    private CacheAttentionDifference() {
    }

    /**
     * Appends the same chunks ({@code chunk.apply(random, tokens)} gives {keys, values}) to both
     * caches and after each compares decode (one query) or prefill (every query of the chunk)
     * attention of {@code qHeads} Gaussian queries scaled by {@code qScale}; returns the largest
     * relative L2 difference of {@code other}'s outputs from {@code ref}'s.
     */
    static double of(LayeredKvCache ref, LayeredKvCache other, int[] chunks, long seed, int qHeads, int d, float qScale,
                     BiFunction<Random, Integer, float[][]> chunk) {
        Random r = new Random(seed);
        float scale = 1f / (float) Math.sqrt(d);
        double worst = 0;
        try (DecodeAttention att = new DecodeAttention(1)) {
            for (int n : chunks) {
                float[][] kv = chunk.apply(r, n);
                ref.append(0, kv[0], kv[1], n);
                other.append(0, kv[0], kv[1], n);
                float[] q = new float[qHeads * n * d];
                for (int i = 0; i < q.length; i++) {
                    q[i] = (float) r.nextGaussian() * qScale;
                }
                float[] oRef = new float[q.length];
                float[] oOther = new float[q.length];
                if (n == 1) {
                    att.attend(ref, 0, q, qHeads, scale, oRef);
                    att.attend(other, 0, q, qHeads, scale, oOther);
                } else {
                    att.attendPrefill(ref, 0, q, qHeads, n, scale, oRef);
                    att.attendPrefill(other, 0, q, qHeads, n, scale, oOther);
                }
                worst = Math.max(worst, KvCacheTest.relErr(oRef, oOther));
            }
        }
        return Math.sqrt(worst);
    }
}
