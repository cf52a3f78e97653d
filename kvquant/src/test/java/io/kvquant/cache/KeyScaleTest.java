package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.DecodeAttention;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Per-channel key scaling ({@code kscale}): keys stored as (k − μ) ⊘ s, queries multiplied by s.
 * Exact for attention, reconstructs the original keys, and lowers TurboQuant's attention error on
 * keys with a few dominant channels.
 */
class KeyScaleTest {

    private static final int HEADS = 2;
    private static final int Q_HEADS = 4;
    private static final int D = 64;

    /** Keys whose rotary pair (3, 35) has {@code big} times the spread of the other channels; Gaussian values. */
    private static float[][] chunk(Random r, int tokens, float big) {
        float[] k = new float[HEADS * tokens * D];
        float[] v = new float[HEADS * tokens * D];
        for (int i = 0; i < k.length; i++) {
            int j = i % D;
            k[i] = (float) r.nextGaussian() * (j == 3 || j == 35 ? big : 1f);
            v[i] = (float) r.nextGaussian();
        }
        return new float[][] {k, v};
    }

    /** Attention of {@code b} against {@code a} on the same chunks ({@link CacheAttentionDifference}). */
    private static double attentionDifference(LayeredKvCache a, LayeredKvCache b, int[] chunks, float big, long seed) {
        return CacheAttentionDifference.of(a, b, chunks, seed, Q_HEADS, D, 0.5f, (r, n) -> chunk(r, n, big));
    }

    @Test
    void scalingIsExactForAttentionWithFullPrecisionStorage() {
        // every token in the fp32 window: TurboStore holds the keys as given, so only the transform differs
        String base = "turbo3.5,window=4096,winbits=32";
        try (LayeredKvCache plain = KvCaches.create(base + ",kscale=off", 1, HEADS, D);
             LayeredKvCache scaled = KvCaches.create(base + ",kscale=on", 1, HEADS, D)) {
            double diff = attentionDifference(plain, scaled, new int[] {48, 1, 1, 20, 1}, 10f, 3L);
            assertTrue(diff < 1e-5, "scaled vs plain attention differ by " + diff + " (relative L2)");
            float[] s = scaled.keyScale(0);
            assertNotNull(s);
            // s = (RMS / geometric mean)^½ rounded to a power of two, RMS averaged over the rotary pair:
            // (10 / 1.075)^½ = 3.05 → 4 for the loud pair, (1 / 1.075)^½ = 0.96 → 1 for the others
            assertEquals(4f, s[3], 0f);
            assertEquals(4f, s[35], 0f, "one scale per rotary pair");
            assertEquals(1f, s[10], 0f);
            assertNull(plain.keyScale(0));
            // read() multiplies the scale back: the original keys to float rounding
            int len = plain.length(0);
            float[] k0 = new float[HEADS * len * D];
            float[] v0 = new float[HEADS * len * D];
            float[] k1 = new float[HEADS * len * D];
            float[] v1 = new float[HEADS * len * D];
            plain.read(0, 0, len, k0, v0);
            scaled.read(0, 0, len, k1, v1);
            assertArrayEquals(v0, v1);
            assertArrayEquals(k0, k1, "powers of two: the keys come back bit for bit");
            assertEquals(plain.bytesUsed() + 4L * D, scaled.bytesUsed(), "the scale is counted");
        }
        // with centering too (the mean is taken first, the scale from the centered keys)
        try (LayeredKvCache plain = KvCaches.create(base + ",kscale=off,center=off", 1, HEADS, D);
             LayeredKvCache scaled = KvCaches.create(base + ",kscale=on,center=on", 1, HEADS, D)) {
            assertTrue(attentionDifference(plain, scaled, new int[] {32, 1, 9, 1}, 6f, 4L) < 1e-5);
        }
    }

    @Test
    void compressedTokensAreScoredWithTheScaledQuery() {
        // the quantized path: attention equals exact attention over the cache's own reconstruction
        // (read() = s ∘ stored + μ), so the query transform matches the key transform
        Random r = new Random(8L);
        try (LayeredKvCache c = KvCaches.create("turbo3.5,window=8,kscale=on", 1, HEADS, D);
             DecodeAttention att = new DecodeAttention(1)) {
            float[][] kv = chunk(r, 80, 8f);
            c.append(0, kv[0], kv[1], 80);
            float[] q = KvCacheTest.gaussian(r, Q_HEADS * D, 0.5f);
            float scale = 1f / (float) Math.sqrt(D);
            float[] out = new float[q.length];
            att.attend(c, 0, q, Q_HEADS, scale, out);
            int n = c.length(0);
            float[] k = new float[HEADS * n * D];
            float[] v = new float[HEADS * n * D];
            c.read(0, 0, n, k, v);
            float[] ref = new float[q.length];
            for (int qh = 0; qh < Q_HEADS; qh++) {
                int h = qh / (Q_HEADS / HEADS);
                double[] p = new double[n];
                double max = Double.NEGATIVE_INFINITY;
                for (int t = 0; t < n; t++) {
                    double sc = 0;
                    for (int j = 0; j < D; j++) {
                        sc += (double) q[qh * D + j] * k[(h * n + t) * D + j];
                    }
                    p[t] = sc * scale;
                    max = Math.max(max, p[t]);
                }
                double sum = 0;
                for (int t = 0; t < n; t++) {
                    p[t] = Math.exp(p[t] - max);
                    sum += p[t];
                }
                for (int j = 0; j < D; j++) {
                    double o = 0;
                    for (int t = 0; t < n; t++) {
                        o += p[t] / sum * v[(h * n + t) * D + j];
                    }
                    ref[qh * D + j] = (float) o;
                }
            }
            double err = Math.sqrt(KvCacheTest.relErr(ref, out));
            assertTrue(err < 1e-5, "attention vs exact attention over the reconstruction: " + err);
        }
    }

    /** RMS over isotropic random queries and all tokens of the score error q·(k̂ − k), k̂ what the cache reconstructs. */
    private static double scoreError(String spec, float big, long seed) {
        Random r = new Random(seed);
        int n = 256;
        float[][] kv = chunk(r, n, big);
        try (LayeredKvCache c = KvCaches.create(spec, 1, HEADS, D)) {
            c.append(0, kv[0], kv[1], n);
            float[] k = new float[HEADS * n * D];
            float[] v = new float[HEADS * n * D];
            c.read(0, 0, n, k, v);
            double e = 0;
            int count = 0;
            for (int qi = 0; qi < 64; qi++) {
                float[] q = KvCacheTest.gaussian(r, D, 1f);
                for (int t = 0; t < HEADS * n; t++) {
                    double s = 0;
                    for (int j = 0; j < D; j++) {
                        s += q[j] * ((double) k[t * D + j] - kv[0][t * D + j]);
                    }
                    e += s * s;
                    count++;
                }
            }
            return Math.sqrt(e / count);
        }
    }

    @Test
    void scalingLowersTheScoreErrorWhenAFewChannelsDominate() {
        // one rotary pair at 10x the spread of the 62 other channels. The rotation spreads a key's
        // error evenly over the channels in proportion to its norm, so for isotropic queries the
        // score error's variance is ∝ ‖k ⊘ s‖²·‖q ∘ s‖²: with s = 4 on the loud pair and 1 elsewhere
        // (above) that is (200/16 + 62)·(2·16 + 62) against (200 + 62)·64, 2.4x less, and the error's
        // RMS falls by √2.4 ≈ 1.55
        double off = scoreError("turbo3.5,window=0,kscale=off", 10f, 5L);
        double on = scoreError("turbo3.5,window=0,kscale=on", 10f, 5L);
        assertTrue(off / on > 1.4 && off / on < 1.8, "score error with key scaling " + on + ", without " + off);
        // keys without dominant channels: s ≈ 1, the same error within the estimate's noise
        off = scoreError("turbo3.5,window=0,kscale=off", 1f, 6L);
        on = scoreError("turbo3.5,window=0,kscale=on", 1f, 6L);
        assertTrue(off / on > 0.9 && off / on < 1.1, "isotropic keys: " + on + " vs " + off);
    }

    @Test
    void theScaleIsFrozenRestorableAndOnlyForTurboLayers() {
        Random r = new Random(12L);
        try (LayeredKvCache c = KvCaches.create("turbo3.5,kscale=on,layers=1:full", 3, HEADS, D)) {
            assertNull(c.keyScale(0));
            float[][] a = chunk(r, 32, 5f);
            float[] bad = a[0].clone();
            bad[7] = Float.NaN;
            assertThrows(IllegalArgumentException.class, () -> c.append(0, bad, a[1], 32));
            assertNull(c.keyScale(0), "a rejected chunk leaves no scale behind");
            c.append(0, a[0], a[1], 32);
            float[] s = c.keyScale(0);
            float[][] b = chunk(r, 32, 0.1f);
            c.append(0, b[0], b[1], 32);
            assertArrayEquals(s, c.keyScale(0), "frozen after the first chunk");
            c.append(1, b[0], b[1], 32);
            assertNull(c.keyScale(1), "a full-precision layer is not scaled");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.restoreKeyScale(1, s));
            assertTrue(e.getMessage().contains("does not scale keys"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> c.restoreKeyScale(0, s));
            assertTrue(e.getMessage().contains("already"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> c.restoreKeyScale(2, new float[3]));
            assertTrue(e.getMessage().contains(Integer.toString(D)), e.getMessage());
            float[] zero = s.clone();
            zero[0] = 0f;
            assertThrows(IllegalArgumentException.class, () -> c.restoreKeyScale(2, zero));
            c.restoreKeyScale(2, s);
            assertArrayEquals(s, c.keyScale(2));
            c.clear();
            assertNull(c.keyScale(0), "a new sequence estimates its own scale");
        }
    }

    @Test
    void aLayerRestoredWithoutAScaleKeepsScaleOne() throws Exception {
        // records saved by a cache that did not scale (an older file) continue exactly: s = 1 from then on
        Random r = new Random(13L);
        try (LayeredKvCache old = KvCaches.create("turbo3.5,window=0,kscale=off", 1, HEADS, D);
             LayeredKvCache now = KvCaches.create("turbo3.5,window=0,kscale=on", 1, HEADS, D);
             Arena arena = Arena.ofConfined()) {
            float[][] a = chunk(r, 40, 10f);
            old.append(0, a[0], a[1], 40);
            LayerStore src = old.store(0);
            int kb = src.recordBytes(true);
            int vb = src.recordBytes(false);
            MemorySegment k = arena.allocate((long) HEADS * 40 * kb);
            MemorySegment v = arena.allocate((long) HEADS * 40 * vb);
            for (int h = 0; h < HEADS; h++) {
                src.exportRecords(true, h, 0, 40, k, (long) h * 40 * kb);
                src.exportRecords(false, h, 0, 40, v, (long) h * 40 * vb);
            }
            now.store(0).importRecords(k, 0, v, 0, 40, new float[0], new float[0], 0);
            float[][] b = chunk(r, 16, 10f);
            now.append(0, b[0], b[1], 16);
            for (float x : now.keyScale(0)) {
                assertEquals(1f, x, 0f);
            }
        }
    }

    @Test
    void theOptionParsesAndRoundTrips() {
        assertEquals(KvQuantConfig.KEY_SCALE_ON, KvQuantConfig.parse("turbo3.5,kscale=on").keyScale());
        assertEquals(0, KvQuantConfig.parse("turbo3.5,kscale=off").keyScale());
        assertEquals(KvQuantConfig.DEFAULT_KEY_SCALE, KvQuantConfig.parse("turbo2.5").keyScale());
        assertEquals(0.25, KvQuantConfig.parse("k4v3,kscale=0.25").keyScale());
        for (String s : new String[] {"turbo3.5,kscale=on", "turbo3.5,kscale=off", "k4v3,kscale=0.25", "auto:3.5,kscale=on"}) {
            KvQuantConfig c = KvQuantConfig.parse(s);
            assertEquals(c, KvQuantConfig.parse(c.toString()), s);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvQuantConfig.parse("turbo3.5,kscale=2"));
        assertTrue(e.getMessage().contains("kscale must be on, off or an exponent in [0, 1], not '2'"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> KvQuantConfig.parse("kivi2,kscale=on"));
        assertTrue(e.getMessage().contains("kscale"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> KvQuantConfig.parse("full,kscale=on"));
        assertTrue(e.getMessage().contains("kscale"), e.getMessage());
    }
}
