package io.kvquant.attention;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Score modifiers ({@link ScoreMods}: sliding window, logit softcap, ALiBi, attention sinks) in
 * the attention kernel, decode (split-K 1–8 blocks, 1 and 2 threads) and prefill, against exact
 * double-precision attention with the same modifiers over the cache's own dequantized vectors
 * ({@link LayeredKvCache#read}). As in {@link AttentionKernelTest}, both sides see the same
 * quantized keys and values, so the bound is the kernel's float arithmetic: 1e-5 relative.
 * Contexts and windows cross 16/32-token pages and the 256-token tile.
 */
class ScoreModsKernelTest {

    private static final long SEED = 4242L;
    static final double BOUND = 1e-5;

    static final String[] CODECS = {"full", "fp16", "turbo3.5", "turbo2.5,qjl=k", "kivi2"};
    static final String[] KINDS = {"window", "softcap", "alibi", "sinks", "all"};

    /** The modifiers of one kind for {@code qHeads} heads; softcap small enough to bite on these scores. */
    static ScoreMods mods(String kind, int qHeads, int window) {
        float[] slopes = new float[qHeads];
        float[] sinks = new float[qHeads];
        for (int h = 0; h < qHeads; h++) {
            slopes[h] = (float) Math.pow(2, -8.0 * (h + 1) / qHeads); // ALiBi's geometric slopes
            sinks[h] = -2f + 2.5f * (h % 5); // from negligible to dominant over hundreds of keys scoring ~±3
        }
        boolean all = kind.equals("all");
        return ScoreMods.of(kind.equals("window") || all ? window : 0, kind.equals("softcap") || all ? 1.5f : 0f,
                kind.equals("alibi") || all ? slopes : null, kind.equals("sinks") || all ? sinks : null);
    }

    /**
     * Exact attention with modifiers, in double, written from the definitions (not from the
     * kernel): query head h at position p over keys t of KV head g, p − window < t ≤ p; score
     * scale·q·k, then c·tanh(s/c), then + slope·(t − p); softmax whose denominator also holds
     * e^sink.
     */
    static void exact(float[] q, int qo, float[] k, float[] v, int g, int len, int p, int d, float scale, int h,
                      int window, double softcap, float[] slopes, float[] sinks, double[] out, int oo) {
        int lo = window > 0 ? Math.max(0, p - window + 1) : 0;
        double[] s = new double[p + 1];
        double max = sinks != null ? sinks[h] : Double.NEGATIVE_INFINITY;
        for (int t = lo; t <= p; t++) {
            double x = 0;
            for (int j = 0; j < d; j++) {
                x += (double) q[qo + j] * k[(g * len + t) * d + j];
            }
            x *= scale;
            if (softcap > 0) {
                x = softcap * Math.tanh(x / softcap);
            }
            if (slopes != null) {
                x += (double) slopes[h] * (t - p);
            }
            s[t] = x;
            max = Math.max(max, x);
        }
        double sum = sinks != null ? Math.exp(sinks[h] - max) : 0;
        for (int t = lo; t <= p; t++) {
            s[t] = Math.exp(s[t] - max);
            sum += s[t];
        }
        for (int j = 0; j < d; j++) {
            double a = 0;
            for (int t = lo; t <= p; t++) {
                a += s[t] * v[(g * len + t) * d + j];
            }
            out[oo + j] = a / sum;
        }
    }

    private static double relErr(double[] ref, float[] got) {
        double e = 0;
        double n = 0;
        for (int i = 0; i < ref.length; i++) {
            e += (ref[i] - got[i]) * (ref[i] - got[i]);
            n += ref[i] * ref[i];
        }
        return Math.sqrt(e / n);
    }

    static Stream<Arguments> decodeCases() {
        Stream.Builder<Arguments> b = Stream.builder();
        int i = 0;
        for (String codec : CODECS) {
            for (String kind : KINDS) {
                int d = new int[]{64, 128}[i % 2];
                int group = new int[]{1, 4, 8}[i % 3];
                int len = new int[]{700, 17, 1100, 300, 513}[i % 5];
                // windows: shorter than a page, across the 256-token tile, the whole context and more
                int window = new int[]{300, 5, 257, 1000, 40, 512}[i % 6];
                int splits = 1 + i % 8;
                int threads = 1 + i % 2;
                String spec = codec.startsWith("kivi") ? codec + ",page=32"
                        : codec + ",page=16" + (codec.startsWith("turbo") && i % 2 == 0 ? ",window=24" : "");
                b.add(Arguments.of(spec, kind, d, group, len, window, splits, threads));
                i++;
            }
        }
        return b.build();
    }

    @ParameterizedTest(name = "{0} {1} d={2} group={3} len={4} window={5} splits={6} threads={7}")
    @MethodSource("decodeCases")
    void attendWithModifiersMatchesExactAttention(String spec, String kind, int d, int group, int len, int window,
                                                  int splits, int threads) {
        Random r = new Random(SEED + len * 7L + d + kind.hashCode());
        int kvHeads = group == 8 ? 1 : 2;
        int qHeads = kvHeads * group;
        float[][] kv = DecodeAttentionReference.data(r, kvHeads, len, d);
        float[] q = new float[qHeads * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 1.2f;
        }
        float scale = (float) (1 / Math.sqrt(d));
        ScoreMods m = mods(kind, qHeads, window);
        try (LayeredKvCache c = DecodeAttentionReference.fill(spec, kv, kvHeads, len, d); DecodeAttention att = new DecodeAttention(threads, splits)) {
            float[] k = new float[kvHeads * len * d];
            float[] v = new float[kvHeads * len * d];
            c.read(0, 0, len, k, v);
            double[] ref = new double[qHeads * d];
            for (int h = 0; h < qHeads; h++) {
                exact(q, h * d, k, v, h / group, len, len - 1, d, scale, h, m.window(), m.softcap(), m.slopes(), m.sinks(),
                        ref, h * d);
            }
            float[] out = new float[qHeads * d];
            att.attend(c, 0, q, qHeads, scale, out, m);
            double err = relErr(ref, out);
            assertTrue(err <= BOUND, spec + " " + m + " seed=" + SEED + " relative error " + err);
        }
    }

    static Stream<Arguments> prefillCases() {
        Stream.Builder<Arguments> b = Stream.builder();
        int i = 0;
        for (String codec : CODECS) {
            for (String kind : KINDS) {
                int d = new int[]{64, 128}[(i + 1) % 2];
                int group = new int[]{1, 4, 8}[(i + 1) % 3];
                int n = new int[]{1, 16, 37, 70}[i % 4];
                int past = new int[]{0, 50, 301, 600, 240}[(i + 2) % 5];
                int window = new int[]{4, 257, 20, 300, 33}[i % 5];
                String spec = codec.startsWith("kivi") ? codec + ",page=32"
                        : codec + ",page=16" + (i % 2 == 0 && codec.startsWith("turbo") ? ",window=20" : "");
                b.add(Arguments.of(spec, kind, d, group, past, n, window, 1 + i % 2));
                i++;
            }
        }
        return b.build();
    }

    @ParameterizedTest(name = "{0} {1} d={2} group={3} past={4} chunk={5} window={6} threads={7}")
    @MethodSource("prefillCases")
    void prefillWithModifiersMatchesExactAttention(String spec, String kind, int d, int group, int past, int n, int window,
                                                   int threads) {
        Random r = new Random(SEED + past * 13L + n + kind.hashCode());
        int kvHeads = group == 8 ? 1 : 2;
        int qHeads = kvHeads * group;
        int len = past + n;
        float[][] kv = DecodeAttentionReference.data(r, kvHeads, len, d);
        float[] q = new float[qHeads * n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 1.2f;
        }
        float scale = (float) (1 / Math.sqrt(d));
        ScoreMods m = mods(kind, qHeads, window);
        try (LayeredKvCache c = DecodeAttentionReference.fill(spec, kv, kvHeads, len, d); DecodeAttention att = new DecodeAttention(threads)) {
            float[] k = new float[kvHeads * len * d];
            float[] v = new float[kvHeads * len * d];
            c.read(0, 0, len, k, v);
            double[] ref = new double[qHeads * n * d];
            for (int h = 0; h < qHeads; h++) {
                for (int i = 0; i < n; i++) {
                    exact(q, (h * n + i) * d, k, v, h / group, len, past + i, d, scale, h, m.window(), m.softcap(),
                            m.slopes(), m.sinks(), ref, (h * n + i) * d);
                }
            }
            float[] out = new float[qHeads * n * d];
            att.attendPrefill(c, 0, q, qHeads, n, scale, out, m);
            double err = relErr(ref, out);
            assertTrue(err <= BOUND, spec + " " + m + " seed=" + SEED + " relative error " + err);
        }
    }

    /** The modifiers really change the result (so the tests above cannot pass by ignoring them). */
    @Test
    void everyModifierChangesTheOutput() {
        int d = 64;
        int len = 600;
        Random r = new Random(SEED);
        float[][] kv = DecodeAttentionReference.data(r, 2, len, d);
        float[] q = new float[8 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 1.2f;
        }
        try (LayeredKvCache c = DecodeAttentionReference.fill("full", kv, 2, len, d); DecodeAttention att = new DecodeAttention(1)) {
            float[] plain = new float[q.length];
            att.attend(c, 0, q, 8, 0.125f, plain);
            for (String kind : KINDS) {
                float[] out = new float[q.length];
                att.attend(c, 0, q, 8, 0.125f, out, mods(kind, 8, 100));
                double diff = 0;
                double norm = 0;
                for (int i = 0; i < out.length; i++) {
                    diff += (out[i] - plain[i]) * (double) (out[i] - plain[i]);
                    norm += plain[i] * (double) plain[i];
                }
                assertTrue(Math.sqrt(diff / norm) > 1e-2, kind + " changes the output by only " + Math.sqrt(diff / norm));
            }
        }
    }

    /** A window covering the whole context is no window: the same arithmetic, bit for bit. */
    @Test
    void aWindowCoveringTheContextChangesNothing() {
        int d = 128;
        int len = 530;
        Random r = new Random(SEED + 1);
        float[][] kv = DecodeAttentionReference.data(r, 2, len, d);
        float[] q = new float[4 * 3 * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        try (LayeredKvCache c = DecodeAttentionReference.fill("turbo3.5", kv, 2, len, d); DecodeAttention att = new DecodeAttention(2, 3)) {
            float[] a = new float[4 * d];
            float[] b = new float[4 * d];
            float[] qd = java.util.Arrays.copyOf(q, 4 * d);
            att.attend(c, 0, qd, 4, 0.09f, a);
            att.attend(c, 0, qd, 4, 0.09f, b, ScoreMods.of(len, 0, null, null));
            assertArrayEquals(a, b);
            float[] pa = new float[q.length];
            float[] pb = new float[q.length];
            att.attendPrefill(c, 0, q, 4, 3, 0.09f, pa);
            att.attendPrefill(c, 0, q, 4, 3, 0.09f, pb, ScoreMods.of(len + 7, 0, null, null));
            assertArrayEquals(pa, pb);
        }
    }

    @Test
    void modifiersAreValidatedAndImmutable() {
        assertSame(ScoreMods.NONE, ScoreMods.of(0, 0f, null, null));
        assertThrows(IllegalArgumentException.class, () -> ScoreMods.of(-1, 0f, null, null));
        assertThrows(IllegalArgumentException.class, () -> ScoreMods.of(0, -2f, null, null));
        assertThrows(IllegalArgumentException.class, () -> ScoreMods.of(0, Float.NaN, null, null));
        assertThrows(IllegalArgumentException.class, () -> ScoreMods.of(0, 0f, null, new float[]{Float.NaN}));
        float[] sinks = {1f, 2f};
        ScoreMods m = ScoreMods.of(4, 30f, null, sinks);
        sinks[0] = 9f;
        assertEquals(1f, m.sinks()[0]);
        m.sinks()[1] = 9f;
        assertEquals(2f, m.sinks()[1]);
        assertEquals(ScoreMods.of(4, 30f, null, new float[]{1f, 2f}), m);
        assertEquals(3, m.firstVisible(6)); // keys 3, 4, 5, 6
        assertEquals(0, m.firstVisible(2));
        try (LayeredKvCache c = KvCaches.create("full", 1, 1, 8); DecodeAttention att = new DecodeAttention(1)) {
            c.append(0, new float[8], new float[8], 1);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> att.attend(c, 0, new float[24], 3, 1f, new float[24], m));
            assertEquals("score modifiers hold 2 per-head values for 3 query heads", e.getMessage());
        }
    }
}
