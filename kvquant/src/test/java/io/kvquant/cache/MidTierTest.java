package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.codec.VectorCodec;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The middle tier ({@code mid=}): a token leaving the window is held as the tier codec's record of
 * its window row, and on leaving the tier as the store codec's record of the tier's decoding; a
 * token that skips a tier in a long append is encoded from the data it arrived with. Attention
 * over the three tiers is checked against exact attention over the cache's own decodings in
 * AttentionKernelTest and BlockedPrefillTest (specs with {@code mid=}).
 */
class MidTierTest {

    static final int D = 64;
    static final int HEADS = 2;
    static final String SPEC = "turbo3.5,window=4,mid=6,center=off"; // no centering: the store sees the keys as given

    /** What codec {@code c} reconstructs from x[xo..xo+D). */
    static float[] roundTrip(VectorCodec c, float[] x, int xo) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment rec = a.allocate(c.recordBytes());
            c.encode(x, xo, rec, 0);
            float[] out = new float[D];
            c.decode(rec, 0, out, 0);
            return out;
        }
    }

    static float[] fp16(float[] x, int xo) {
        float[] out = new float[D];
        for (int j = 0; j < D; j++) {
            out[j] = Float.float16ToFloat(Float.floatToFloat16(x[xo + j]));
        }
        return out;
    }

    @Test
    void tokensMoveThroughTheTiersAsEachCodecDecodesThem() {
        int n = 23;
        Random r = new Random(17);
        float[] k = KvCacheTest.gaussian(r, HEADS * n * D, 1.5f);
        float[] v = KvCacheTest.gaussian(r, HEADS * n * D, 1f);
        try (LayeredKvCache one = KvCaches.create(SPEC, 1, HEADS, D)) {
            KvQuantConfig cfg = one.config();
            VectorCodec kc = KvCaches.keyCodec(cfg, D, 0);
            VectorCodec vc = KvCaches.valueCodec(cfg, D, 0);
            VectorCodec mk = KvCaches.midCodec(cfg, D, 0, true);
            VectorCodec mv = KvCaches.midCodec(cfg, D, 0, false);
            assertEquals(5 * D / 8 + 2, mk.recordBytes(), "5-bit middle-tier records for turbo3.5");
            for (int t = 0; t < n; t++) { // token by token, as decoding appends
                float[] kt = new float[HEADS * D];
                float[] vt = new float[HEADS * D];
                for (int h = 0; h < HEADS; h++) {
                    System.arraycopy(k, (h * n + t) * D, kt, h * D, D);
                    System.arraycopy(v, (h * n + t) * D, vt, h * D, D);
                }
                one.append(0, kt, vt, 1);
                int len = t + 1;
                float[] rk = new float[HEADS * len * D];
                float[] rv = new float[HEADS * len * D];
                one.read(0, 0, len, rk, rv);
                for (int h = 0; h < HEADS; h++) {
                    for (int s = 0; s < len; s++) {
                        int age = len - 1 - s;
                        int xo = (h * n + s) * D;
                        float[] ek = fp16(k, xo);
                        float[] ev = fp16(v, xo);
                        if (age >= 4) {
                            ek = roundTrip(mk, ek, 0);
                            ev = roundTrip(mv, ev, 0);
                        }
                        if (age >= 10) {
                            ek = roundTrip(kc, ek, 0);
                            ev = roundTrip(vc, ev, 0);
                        }
                        int o = (h * len + s) * D;
                        String what = "token " + s + " of " + len + ", head " + h + " (age " + age + ")";
                        assertArrayEquals(ek, java.util.Arrays.copyOfRange(rk, o, o + D), what + " key");
                        assertArrayEquals(ev, java.util.Arrays.copyOfRange(rv, o, o + D), what + " value");
                    }
                }
                // bytes: records, the tier's records, the fp16 window
                long low = Math.max(0, len - 10);
                long midHeld = Math.max(0, Math.min(6, len - 4));
                long win = Math.min(4, len);
                assertEquals(HEADS * (low * (kc.recordBytes() + vc.recordBytes()) + midHeld * (mk.recordBytes() + mv.recordBytes())
                        + win * 2 * D * 2), one.bytesUsed(), "bytes at " + len + " tokens");
            }
        }
        // one long append: the oldest tokens skip both tiers and the next ones the window, each
        // encoded from the data it arrived with
        try (LayeredKvCache all = KvCaches.create(SPEC, 1, HEADS, D)) {
            all.append(0, k, v, n);
            float[] rk = new float[HEADS * n * D];
            float[] rv = new float[HEADS * n * D];
            all.read(0, 0, n, rk, rv);
            KvQuantConfig cfg = all.config();
            for (int h = 0; h < HEADS; h++) {
                for (int s = 0; s < n; s++) {
                    int xo = (h * n + s) * D;
                    float[] ek = s >= n - 4 ? fp16(k, xo) : roundTrip(s >= n - 10 ? KvCaches.midCodec(cfg, D, 0, true)
                            : KvCaches.keyCodec(cfg, D, 0), k, xo);
                    assertArrayEquals(ek, java.util.Arrays.copyOfRange(rk, xo, xo + D), "token " + s + " head " + h);
                }
            }
        }
    }

    /** The tier is between the store's codec and the window in error: a 5-bit record of every token after the window. */
    @Test
    void theTierHoldsRecentTokensCloserThanTheRecords() {
        int n = 600;
        Random r = new Random(3);
        float[] k = KvCacheTest.gaussian(r, HEADS * n * D, 1f);
        try (LayeredKvCache c = KvCaches.create("turbo3.5,center=off", 1, HEADS, D);
             LayeredKvCache bare = KvCaches.create("turbo3.5,center=off,mid=0", 1, HEADS, D)) {
            for (int t = 0; t < n; t += 50) {
                float[] kk = new float[HEADS * 50 * D];
                for (int h = 0; h < HEADS; h++) {
                    System.arraycopy(k, (h * n + t) * D, kk, h * 50 * D, 50 * D);
                }
                c.append(0, kk, kk, 50);
                bare.append(0, kk, kk, 50);
            }
            float[] a = new float[HEADS * n * D];
            float[] b = new float[HEADS * n * D];
            c.read(0, 0, n, a, new float[a.length]);
            bare.read(0, 0, n, b, new float[b.length]);
            // tokens [88, 536) are in the tier of c and records of bare: 5 against 3.5 bits
            double ec = 0;
            double eb = 0;
            double norm = 0;
            for (int h = 0; h < HEADS; h++) {
                for (int i = (h * n + 88) * D; i < (h * n + 536) * D; i++) {
                    ec += (a[i] - k[i]) * (a[i] - k[i]);
                    eb += (b[i] - k[i]) * (b[i] - k[i]);
                    norm += k[i] * k[i];
                }
            }
            // Lloyd-Max at d = 64: 5 bits ~0.0025, the 3.5-bit records ~0.02
            assertTrue(ec / norm < 0.0035 && eb / norm > 0.012 && eb / ec > 4, "tier " + ec / norm + ", records " + eb / norm);
        }
    }
}
