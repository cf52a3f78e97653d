package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/** Key centering: exact for attention, reconstructs the original keys, and pays on keys with a large shared component. */
class KeyCenteringTest {

    private static final int HEADS = 2;
    private static final int Q_HEADS = 4;
    private static final int D = 64;

    /** Keys with a constant {@code bias} on channel 31 of every head (plus unit Gaussian noise), Gaussian values. */
    private static float[][] chunk(Random r, int tokens, float bias) {
        float[] k = new float[HEADS * tokens * D];
        float[] v = new float[HEADS * tokens * D];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) r.nextGaussian() + (i % D == 31 ? bias : 0f) + (i % D == 7 ? 1f : 0f);
            v[i] = (float) r.nextGaussian();
        }
        return new float[][] {k, v};
    }

    /**
     * Attention of {@code a} against {@code b} on the same chunks ({@link CacheAttentionDifference});
     * queries at 0.3: scores of a few units, attention neither flat nor one-hot.
     */
    private static double attentionDifference(LayeredKvCache a, LayeredKvCache b, int[] chunks, float bias, long seed) {
        return CacheAttentionDifference.of(b, a, chunks, seed, Q_HEADS, D, 0.3f, (r, n) -> chunk(r, n, bias));
    }

    @Test
    void centeringIsExactForAttentionWithFullStorage() {
        // a shared component of 100 (100x the noise per channel) on one channel: centered; one of 1: too weak, left alone
        try (LayeredKvCache plain = KvCaches.create("full", 1, HEADS, D);
             LayeredKvCache centered = KvCaches.create("full,center=on", 1, HEADS, D)) {
            double diff = attentionDifference(plain, centered, new int[] {40, 1, 1, 17, 1}, 100f, 11L);
            assertTrue(diff < 1e-5, "centered vs plain attention differ by " + diff + " (relative L2)");
            float[] mu = centered.keyMean(0);
            assertNotNull(mu);
            assertEquals(100f, mu[31], 0.5f);
            assertEquals(100f, mu[D + 31], 0.5f);
            assertEquals(0f, mu[D + 7], 0f);
            // read() adds the mean back: the original keys to float rounding
            int len = plain.length(0);
            float[] k0 = new float[HEADS * len * D];
            float[] v0 = new float[HEADS * len * D];
            float[] k1 = new float[HEADS * len * D];
            float[] v1 = new float[HEADS * len * D];
            plain.read(0, 0, len, k0, v0);
            centered.read(0, 0, len, k1, v1);
            assertArrayEquals(v0, v1);
            for (int i = 0; i < k0.length; i++) {
                assertEquals(k0[i], k1[i], 1e-5f * Math.max(1f, Math.abs(k0[i])), "key element " + i);
            }
            assertEquals(plain.bytesUsed() + 4L * HEADS * D, centered.bytesUsed(), "the means are counted");
        }
    }

    @Test
    void centeringRemovesTheOutlierComponentsCostForTurboQuant() {
        // keys whose norm is ~30x that of their varying part: bias 240 against sqrt(64) = 8 (key scaling
        // off: it would shrink the uncentered outlier channel too, see KeyScaleTest)
        double off;
        double on;
        try (LayeredKvCache exact = KvCaches.create("full", 1, HEADS, D);
             LayeredKvCache t = KvCaches.create("turbo3.5,window=0,center=off,kscale=off", 1, HEADS, D)) {
            off = attentionDifference(exact, t, new int[] {64, 1, 1, 1, 32, 1}, 240f, 5L);
        }
        try (LayeredKvCache exact = KvCaches.create("full", 1, HEADS, D);
             LayeredKvCache t = KvCaches.create("turbo3.5,window=0,center=on,kscale=off", 1, HEADS, D)) {
            on = attentionDifference(exact, t, new int[] {64, 1, 1, 1, 32, 1}, 240f, 5L);
        }
        double clean;
        try (LayeredKvCache exact = KvCaches.create("full", 1, HEADS, D);
             LayeredKvCache t = KvCaches.create("turbo3.5,window=0,center=off,kscale=off", 1, HEADS, D)) {
            clean = attentionDifference(exact, t, new int[] {64, 1, 1, 1, 32, 1}, 0f, 5L);
        }
        // uncentered, the codec spends its range on the bias: the error grows roughly with the key norm
        assertTrue(on * 5 < off, "attention error with centering " + on + ", without " + off + ", bias-free " + clean);
        // centered, the outlier costs (almost) nothing against the same keys without it
        assertTrue(on < 2 * clean, "centered " + on + " vs bias-free keys " + clean);
    }

    @Test
    void theMeanIsFrozenAfterTheFirstChunkAndRestorable() {
        Random r = new Random(3L);
        try (LayeredKvCache c = KvCaches.create("turbo4,center=on", 2, HEADS, D)) {
            assertNull(c.keyMean(0));
            float[][] a = chunk(r, 32, 20f);
            // a rejected chunk leaves no mean behind
            float[] bad = a[0].clone();
            bad[3] = Float.NaN;
            assertThrows(IllegalArgumentException.class, () -> c.append(0, bad, a[1], 32));
            assertNull(c.keyMean(0));
            c.append(0, a[0], a[1], 32);
            float[] mu = c.keyMean(0);
            float[][] b = chunk(r, 32, -50f);
            c.append(0, b[0], b[1], 32);
            assertArrayEquals(mu, c.keyMean(0), "frozen after the first chunk");
            assertNull(c.keyMean(1), "per layer");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.restoreKeyMean(0, new float[HEADS * D]));
            assertTrue(e.getMessage().contains("already"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> c.restoreKeyMean(1, new float[3]));
            assertTrue(e.getMessage().contains(Integer.toString(HEADS * D)), e.getMessage());
            c.restoreKeyMean(1, mu);
            assertArrayEquals(mu, c.keyMean(1));
            // the stored codes hold centered keys: a consumer decoding them itself is refused
            e = assertThrows(IllegalArgumentException.class, () -> c.copyRecords(0, true, 0, 0, 1, new byte[4096], 0));
            assertTrue(e.getMessage().contains("center=off"), e.getMessage());
            c.clear();
            assertNull(c.keyMean(0), "a new sequence estimates its own mean");
        }
        try (LayeredKvCache c = KvCaches.create("turbo4,center=off", 1, HEADS, D)) {
            float[][] a = chunk(r, 32, 20f);
            c.append(0, a[0], a[1], 32);
            assertNull(c.keyMean(0));
            assertThrows(IllegalArgumentException.class, () -> c.restoreKeyMean(0, new float[HEADS * D]));
        }
    }

    @Test
    void aChannelThatTurnsWithinTheChunkIsNotCentered() {
        // channel 5 flips sign a quarter into the first chunk (a fast rotary pair): its mean would
        // be wrong later, so it is left alone; channel 31's constant component is removed
        int n = 64;
        float[] k = new float[HEADS * n * D];
        Random r = new Random(9L);
        for (int h = 0; h < HEADS; h++) {
            for (int t = 0; t < n; t++) {
                for (int j = 0; j < D; j++) {
                    float x = (float) r.nextGaussian() * 0.1f;
                    if (j == 31) {
                        x += 10f;
                    }
                    if (j == 5) {
                        x += t < n / 4 ? 10f : -10f; // mean -5, halves +0 and -10: unstable
                    }
                    k[(h * n + t) * D + j] = x;
                }
            }
        }
        try (LayeredKvCache c = KvCaches.create("full,center=on", 1, HEADS, D)) {
            c.append(0, k, new float[k.length], n);
            float[] mu = c.keyMean(0);
            assertEquals(10f, mu[31], 0.05f);
            assertEquals(0f, mu[5], 0f);
            assertEquals(10f, mu[D + 31], 0.05f);
        }
        try (LayeredKvCache c = KvCaches.create("full,center=on", 1, HEADS, D)) {
            // too few tokens to estimate a mean: none is used
            c.append(0, java.util.Arrays.copyOf(k, HEADS * 4 * D), new float[HEADS * 4 * D], 4);
            for (float m : c.keyMean(0)) {
                assertEquals(0f, m, 0f);
            }
        }
    }
}
