package io.kvquant.attention;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayerStore;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.codec.Codebook;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class DecodeAttentionTest {

    private static final long SEED = 2718L;

    /** Keys with 4 outlier channels (×6) and a few keys aligned with the query, as in real heads. */
    private static float[][] data(Random r, int heads, int len, int d, boolean outliers) {
        float[] k = new float[heads * len * d];
        float[] v = new float[heads * len * d];
        for (int i = 0; i < k.length; i++) {
            int ch = i % d;
            k[i] = (float) r.nextGaussian() * (outliers && ch % (d / 4) == 3 ? 6f : 1f);
            v[i] = (float) r.nextGaussian();
        }
        return new float[][]{k, v};
    }

    private static float[] reference(float[] q, float[] k, float[] v, int qHeads, int kvHeads, int len, int d, float scale) {
        float[] out = new float[qHeads * d];
        float[] kh = new float[len * d];
        float[] vh = new float[len * d];
        for (int h = 0; h < qHeads; h++) {
            int g = h / (qHeads / kvHeads);
            System.arraycopy(k, g * len * d, kh, 0, len * d);
            System.arraycopy(v, g * len * d, vh, 0, len * d);
            DecodeAttention.reference(q, h * d, kh, vh, len, d, scale, out, h * d);
        }
        return out;
    }

    private static double relErr(float[] ref, float[] got) {
        double e = 0;
        double n = 0;
        for (int i = 0; i < ref.length; i++) {
            e += (ref[i] - got[i]) * (double) (ref[i] - got[i]);
            n += (double) ref[i] * ref[i];
        }
        return Math.sqrt(e / n);
    }

    private static float[] run(String spec, float[][] kv, float[] q, int qHeads, int kvHeads, int len, int d, int threads) {
        try (LayeredKvCache c = KvCaches.create(spec, 1, kvHeads, d); DecodeAttention att = new DecodeAttention(threads)) {
            int chunk = 37;
            for (int t0 = 0; t0 < len; t0 += chunk) {
                int n = Math.min(chunk, len - t0);
                float[] k = new float[kvHeads * n * d];
                float[] v = new float[kvHeads * n * d];
                for (int h = 0; h < kvHeads; h++) {
                    System.arraycopy(kv[0], (h * len + t0) * d, k, h * n * d, n * d);
                    System.arraycopy(kv[1], (h * len + t0) * d, v, h * n * d, n * d);
                }
                c.append(0, k, v, n);
            }
            float[] out = new float[qHeads * d];
            att.attend(c, 0, q, qHeads, (float) (1 / Math.sqrt(d)), out);
            return out;
        }
    }

    /**
     * Quantizer quality, end to end (not the kernel check: that is {@link AttentionKernelTest},
     * against exact attention over the cache's own dequantized vectors at 1e-5): output error
     * against exact attention over the ORIGINAL vectors, GQA (8 query heads on 2 KV heads),
     * structured keys. Bound: the error of quantizing the output itself at the value bit width,
     * times 3 (score errors move the softmax weights too), from the Lloyd–Max distortion.
     */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"full,0", "fp16,16", "turbo4,4", "turbo3.5,3.5", "turbo3,3", "turbo2.5,2.5", "k4v3,3", "turbo3,3",
            "turbo4,4", "kivi4,4"})
    void quantizedAttentionStaysWithinTheDistortion(String spec, double bits) {
        int d = 64;
        int len = 700;
        Random r = new Random(SEED);
        float[][] kv = data(r, 2, len, d, true);
        float[] q = new float[8 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 0.8f;
        }
        float[] ref = reference(q, kv[0], kv[1], 8, 2, len, d, (float) (1 / Math.sqrt(d)));
        float[] got = run(spec, kv, q, 8, 2, len, d, 1);
        double err = relErr(ref, got);
        double bound;
        if (bits == 0) {
            bound = 1e-5;
        } else if (bits == 16) {
            bound = 2e-3;
        } else {
            double lo = Codebook.forDimension(d, (int) Math.floor(bits)).expectedMsePerVector();
            double hi = Codebook.forDimension(d, (int) Math.ceil(bits)).expectedMsePerVector();
            bound = 3 * Math.sqrt((lo + hi) / 2);
        }
        assertTrue(err < bound, spec + " seed=" + SEED + " relative error " + err + " bound " + bound);
    }

    @Test
    void moreBitsGiveSmallerErrors() {
        int d = 128;
        int len = 1500;
        Random r = new Random(SEED + 1);
        float[][] kv = data(r, 1, len, d, true);
        float[] q = new float[4 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        float[] ref = reference(q, kv[0], kv[1], 4, 1, len, d, (float) (1 / Math.sqrt(d)));
        double e2 = relErr(ref, run("turbo2", kv, q, 4, 1, len, d, 1));
        double e25 = relErr(ref, run("turbo2.5", kv, q, 4, 1, len, d, 1));
        double e3 = relErr(ref, run("turbo3", kv, q, 4, 1, len, d, 1));
        double e35 = relErr(ref, run("turbo3.5", kv, q, 4, 1, len, d, 1));
        double e4 = relErr(ref, run("turbo4", kv, q, 4, 1, len, d, 1));
        assertTrue(e2 > e25 && e25 > e3 && e3 > e35 && e35 > e4, e2 + " " + e25 + " " + e3 + " " + e35 + " " + e4);
    }

    @Test
    void threadsDoNotChangeTheResult() {
        int d = 64;
        Random r = new Random(SEED);
        float[][] kv = data(r, 4, 300, d, false);
        float[] q = new float[16 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        // Math.exp may differ by an ulp between interpreted and compiled code, so not bit-exact
        for (String spec : new String[]{"full", "turbo3.5,qjl=k", "kivi2"}) {
            assertArrayEquals(run(spec, kv, q, 16, 4, 300, d, 1), run(spec, kv, q, 16, 4, 300, d, 3), 1e-6f, spec);
        }
    }

    @Test
    void windowTokensAreReadExactly() {
        int d = 64;
        Random r = new Random(SEED);
        float[][] kv = data(r, 2, 100, d, true);
        float[] q = new float[4 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        float[] ref = reference(q, kv[0], kv[1], 4, 2, 100, d, (float) (1 / Math.sqrt(d)));
        // a window as large as the context: nothing is quantized (fp32 window: exact)
        assertTrue(relErr(ref, run("turbo2,window=128,winbits=32", kv, q, 4, 2, 100, d, 1)) < 1e-5);
        // the default fp16 window: exact attention over the fp16-rounded keys and values
        float[][] kv16 = {kv[0].clone(), kv[1].clone()};
        for (float[] a : kv16) {
            for (int i = 0; i < a.length; i++) {
                a[i] = Float.float16ToFloat(Float.floatToFloat16(a[i]));
            }
        }
        float[] ref16 = reference(q, kv16[0], kv16[1], 4, 2, 100, d, (float) (1 / Math.sqrt(d)));
        assertTrue(relErr(ref16, run("turbo2,window=128", kv, q, 4, 2, 100, d, 1)) < 1e-5);
        // a window of 60: a mix of both paths, better than no window
        double mixed = relErr(ref, run("turbo2,window=60", kv, q, 4, 2, 100, d, 1));
        double none = relErr(ref, run("turbo2,window=0", kv, q, 4, 2, 100, d, 1));
        assertTrue(mixed < none, mixed + " vs " + none);
    }

    @Test
    void qjlScoresAreUnbiasedInTheCache() {
        int d = 128;
        int len = 4000;
        Random r = new Random(SEED);
        float[][] kv = data(r, 1, len, d, false);
        float[] q = new float[d];
        for (int i = 0; i < d; i++) {
            q[i] = (float) r.nextGaussian();
        }
        try (LayeredKvCache c = KvCaches.create("turbo2,qjl=k", 1, 1, d)) {
            c.append(0, kv[0], kv[1], len);
            LayerStore s = c.store(0);
            float[] state = new float[s.queryStateSize()];
            s.prepareQuery(q, 0, state, 0);
            float[] sc = new float[len];
            s.scores(0, state, 1, 0, len, sc, len);
            double sum = 0;
            double sum2 = 0;
            for (int t = 0; t < len; t++) {
                double exact = 0;
                for (int j = 0; j < d; j++) {
                    exact += (double) q[j] * kv[0][t * d + j];
                }
                double e = sc[t] - exact;
                sum += e;
                sum2 += e * e;
            }
            double mean = sum / len;
            double se = Math.sqrt((sum2 / len - mean * mean) / len);
            assertTrue(Math.abs(mean) < 3 * se, "QJL score bias " + mean + " SE " + se + " seed=" + SEED);
        }
    }

    @Test
    void prefillFormMatchesDecodingOneQueryAtATime() {
        // 6 queries: one block; 37: two full blocks and a partial one (PREFILL_BLOCK = 16)
        for (int n : new int[] {6, 37}) {
            prefillMatchesDecoding(n);
        }
    }

    private static void prefillMatchesDecoding(int n) {
        int d = 64;
        int len = 50;
        Random r = new Random(SEED);
        float[][] kv = data(r, 2, len, d, true);
        float[] q = new float[4 * n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        // kscale=off: the step cache's first chunk is one token (no key scale), the other's 50 tokens;
        // window=0: both hold the same records (a token arriving past a window or middle tier in a long
        // append is encoded from its fp32 data, one leaving them from what they held)
        for (String spec : new String[]{"full", "turbo3,kscale=off,window=0", "kivi4"}) {
            try (LayeredKvCache all = KvCaches.create(spec, 1, 2, d); LayeredKvCache step = KvCaches.create(spec, 1, 2, d);
                 DecodeAttention att = new DecodeAttention(2)) {
                all.append(0, kv[0], kv[1], len);
                float[] outAll = new float[4 * n * d];
                att.attendPrefill(all, 0, q, 4, n, 0.125f, outAll);
                for (int t = 0; t < len; t++) {
                    float[] k = new float[2 * d];
                    float[] v = new float[2 * d];
                    for (int h = 0; h < 2; h++) {
                        System.arraycopy(kv[0], (h * len + t) * d, k, h * d, d);
                        System.arraycopy(kv[1], (h * len + t) * d, v, h * d, d);
                    }
                    step.append(0, k, v, 1);
                    int i = t - (len - n);
                    if (i >= 0) {
                        float[] qi = new float[4 * d];
                        for (int h = 0; h < 4; h++) {
                            System.arraycopy(q, (h * n + i) * d, qi, h * d, d);
                        }
                        float[] o = new float[4 * d];
                        att.attend(step, 0, qi, 4, 0.125f, o);
                        for (int h = 0; h < 4; h++) {
                            for (int j = 0; j < d; j++) {
                                assertEquals(outAll[(h * n + i) * d + j], o[h * d + j], 1e-5f, spec + " query " + i);
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void rejectsBadShapes() {
        try (LayeredKvCache c = KvCaches.create("turbo3", 1, 2, 64); DecodeAttention att = new DecodeAttention(1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> att.attend(c, 0, new float[3 * 64], 3, 1f, new float[3 * 64]));
            assertTrue(e.getMessage().contains("multiple"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> att.attend(c, 0, new float[4 * 64], 4, 1f, new float[4 * 64]));
            assertTrue(e.getMessage().contains("0 tokens"), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> new DecodeAttention(0));
        assertEquals(1, new DecodeAttention(1).threads());
    }
}
