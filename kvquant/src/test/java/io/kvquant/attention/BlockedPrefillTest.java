package io.kvquant.attention;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The blocked prefill kernel ({@link BlockedPrefill}) against exact double-precision causal
 * attention over the cache's own dequantized vectors, per query (not only in aggregate), with
 * chunks that span several 64-token tiles, several query blocks and tasks, pages of 16 tokens,
 * the switch from codes to the full-precision window inside a tile, and 1 and 2 threads. The
 * per-query tile path (the decode kernel's, still used by KIVI) must agree with it as well.
 */
class BlockedPrefillTest {

    private static final long SEED = 4242L;
    private static final double BOUND = 1e-5;

    static Stream<Arguments> cases() {
        return Stream.of(
                Arguments.of("full,page=16", 64, 1, 0, 200, 1),
                Arguments.of("fp16,page=16", 128, 4, 61, 63, 2),
                Arguments.of("turbo3.5,page=16", 128, 1, 700, 200, 2),
                Arguments.of("turbo3.5,page=16,window=20", 96, 4, 301, 130, 1),
                Arguments.of("turbo3.5,page=16,window=20,mid=50", 96, 4, 301, 130, 2),
                Arguments.of("turbo3.5,page=16", 64, 8, 700, 1, 2),
                Arguments.of("turbo2.5,page=16", 64, 4, 129, 97, 2),
                Arguments.of("turbo2.5,page=16,window=64", 128, 8, 500, 70, 2),
                Arguments.of("turbo4,page=16", 96, 1, 0, 150, 2),
                Arguments.of("turbo3.5,qjl=k,page=16", 128, 4, 333, 65, 1),
                Arguments.of("turbo2.5,qjl=kv,page=16", 64, 1, 90, 300, 2),
                Arguments.of("turbo3.5,page=16,window=64,center=on", 128, 4, 450, 100, 2),
                // value rotations over many 128-token blocks, tiles starting off a block boundary
                Arguments.of("turbo3.5,page=16,window=20,mid=50,vrot=4", 64, 4, 1037, 150, 2),
                Arguments.of("turbo2.5,page=16,window=20,mid=50,vrot=1", 64, 2, 700, 60, 1));
    }

    @ParameterizedTest(name = "{0} d={1} group={2} past={3} chunk={4} threads={5}")
    @MethodSource("cases")
    void blockedPrefillMatchesExactCausalAttentionPerQuery(String spec, int d, int group, int past, int n, int threads) {
        Random r = new Random(SEED + past * 31L + n * 7L + d);
        int kvHeads = group == 8 ? 1 : 2;
        int qHeads = kvHeads * group;
        int len = past + n;
        float[] keys = new float[kvHeads * len * d];
        float[] vals = new float[kvHeads * len * d];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = (float) r.nextGaussian() * ((i % d) % 16 == 3 ? 4f : 1f) + ((i % d) == 5 ? 3f : 0f);
            vals[i] = (float) r.nextGaussian();
        }
        float[] q = new float[qHeads * n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 0.7f;
        }
        float scale = (float) (1 / Math.sqrt(d));
        try (LayeredKvCache c = KvCaches.create(spec, 1, kvHeads, d);
             DecodeAttention blocked = new DecodeAttention(threads);
             DecodeAttention tiles = new DecodeAttention(threads).blockedPrefill(false)) {
            // the past in one append, the chunk in another (as the engine does)
            append(c, keys, vals, kvHeads, len, d, 0, past);
            append(c, keys, vals, kvHeads, len, d, past, len);
            float[] k = new float[kvHeads * len * d];
            float[] v = new float[kvHeads * len * d];
            c.read(0, 0, len, k, v);
            float[] out = new float[qHeads * n * d];
            blocked.attendPrefill(c, 0, q, qHeads, n, scale, out);
            float[] viaTiles = new float[qHeads * n * d];
            tiles.attendPrefill(c, 0, q, qHeads, n, scale, viaTiles);
            double[] ref = new double[d];
            double worst = 0;
            double worstTiles = 0;
            for (int h = 0; h < qHeads; h++) {
                for (int i = 0; i < n; i++) {
                    int o = (h * n + i) * d;
                    DecodeAttentionReference.exact(q, o, k, v, h / group, len, past + i + 1, d, scale, ref, 0);
                    worst = Math.max(worst, relErr(ref, out, o));
                    worstTiles = Math.max(worstTiles, relErr(ref, viaTiles, o));
                }
            }
            assertTrue(worst <= BOUND, spec + ": blocked prefill, worst per-query relative error " + worst);
            assertTrue(worstTiles <= BOUND, spec + ": tile path, worst per-query relative error " + worstTiles);
        }
    }

    private static void append(LayeredKvCache c, float[] keys, float[] vals, int kvHeads, int len, int d, int from, int to) {
        int n = to - from;
        if (n == 0) {
            return;
        }
        float[] k = new float[kvHeads * n * d];
        float[] v = new float[kvHeads * n * d];
        for (int h = 0; h < kvHeads; h++) {
            System.arraycopy(keys, (h * len + from) * d, k, h * n * d, n * d);
            System.arraycopy(vals, (h * len + from) * d, v, h * n * d, n * d);
        }
        c.append(0, k, v, n);
    }

    private static double relErr(double[] ref, float[] got, int o) {
        double e = 0;
        double m = 0;
        for (int j = 0; j < ref.length; j++) {
            e += (ref[j] - got[o + j]) * (ref[j] - got[o + j]);
            m += ref[j] * ref[j];
        }
        return Math.sqrt(e / m);
    }
}
