package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.codec.VectorCodec;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Value rotations ({@code vrot=}): token t's value record is encoded with the value codec number
 * (t / 128) mod K. Attention over such a cache is checked against exact attention over its own
 * decodings in AttentionKernelTest and BlockedPrefillTest (the presets have K = 4).
 */
class ValueRotationTest {

    static final int D = 64;
    static final int B = KvQuantConfig.VALUE_ROTATION_BLOCK;
    // a small window and tier, no centering: the records start at token 24
    static final String SPEC = "turbo3.5,window=8,mid=16,center=off";

    @Test
    void eachBlockOfTokensUsesItsRotationsCodec() {
        int n = 5 * B + 40;
        Random r = new Random(3);
        float[] k = KvCacheTest.gaussian(r, n * D, 1f);
        float[] v = KvCacheTest.gaussian(r, n * D, 1f);
        try (LayeredKvCache c = KvCaches.create(SPEC, 1, 1, D)) {
            KvQuantConfig cfg = c.config();
            assertEquals(4, cfg.valueRotations(), "the presets' value rotations");
            VectorCodec[] vcs = KvCaches.valueCodecs(cfg, D, 0);
            assertEquals(4, vcs.length);
            c.append(0, k, v, n); // one long append: records are encoded from the data they arrived with
            float[] rk = new float[n * D];
            float[] rv = new float[n * D];
            c.read(0, 0, n, rk, rv);
            int records = n - 8 - 16;
            for (int t = 0; t < records; t++) {
                float[] want = MidTierTest.roundTrip(vcs[(t / B) % 4], v, t * D);
                assertArrayEquals(want, Arrays.copyOfRange(rv, t * D, (t + 1) * D), 0f, "token " + t);
            }
        }
    }

    @Test
    void identicalValuesGetIndependentRoundingAcrossRotations() {
        // the same value vector at every position: one rotation rounds every copy the same way, K
        // rotations round the copies of different blocks independently, so their average is closer
        int vectors = 40;
        int n = 5 * B + 24;
        Random r = new Random(11);
        double single = 0;
        double averaged = 0;
        for (int i = 0; i < vectors; i++) {
            float[] x = KvCacheTest.gaussian(r, D, 1f);
            float[] v = new float[n * D];
            float[] k = KvCacheTest.gaussian(r, n * D, 1f);
            for (int t = 0; t < n; t++) {
                System.arraycopy(x, 0, v, t * D, D);
            }
            try (LayeredKvCache one = KvCaches.create(SPEC + ",vrot=1", 1, 1, D);
                 LayeredKvCache four = KvCaches.create(SPEC, 1, 1, D)) {
                one.append(0, k, v, n);
                four.append(0, k, v, n);
                float[] rk = new float[n * D];
                float[] r1 = new float[n * D];
                float[] r4 = new float[n * D];
                one.read(0, 0, n, rk, r1);
                four.read(0, 0, n, rk, r4);
                // tokens 0, 128, 256, 384: one per block, all records
                double[] m1 = new double[D];
                double[] m4 = new double[D];
                for (int b = 0; b < 4; b++) {
                    for (int j = 0; j < D; j++) {
                        m1[j] += r1[b * B * D + j] / 4.0;
                        m4[j] += r4[b * B * D + j] / 4.0;
                    }
                }
                assertArrayEquals(Arrays.copyOfRange(r1, 0, D), Arrays.copyOfRange(r1, B * D, (B + 1) * D), 0f,
                        "one rotation: identical values, identical records");
                assertFalse(Arrays.equals(Arrays.copyOfRange(r4, 0, D), Arrays.copyOfRange(r4, B * D, (B + 1) * D)),
                        "another block, another rotation");
                assertArrayEquals(Arrays.copyOfRange(r4, 0, D), Arrays.copyOfRange(r4, 4 * B * D, (4 * B + 1) * D), 0f,
                        "rotations repeat every 4 blocks");
                single += err(m1, x);
                averaged += err(m4, x);
            }
        }
        // independent errors of equal size: the mean of 4 has about half the RMS error
        double ratio = averaged / single;
        assertTrue(ratio < 0.65 && ratio > 0.35, "error of the 4-block mean, 4 rotations vs 1: " + ratio);
    }

    private static double err(double[] m, float[] x) {
        double e = 0;
        double n = 0;
        for (int j = 0; j < D; j++) {
            e += (m[j] - x[j]) * (m[j] - x[j]);
            n += x[j] * x[j];
        }
        return Math.sqrt(e / n);
    }

    @Test
    void optionParsesAndDefaults() {
        assertEquals(4, KvQuantConfig.parse("turbo3.5").valueRotations());
        assertEquals(4, KvQuantConfig.parse("k4v3").valueRotations());
        assertEquals(1, KvQuantConfig.parse("turbo3.5,window=0,center=off").valueRotations(), "the bare codec");
        assertEquals(1, KvQuantConfig.parse("full").valueRotations());
        assertEquals("turbo3.5,vrot=1", KvQuantConfig.parse("turbo3.5,vrot=1").toString());
        assertEquals("turbo3.5", KvQuantConfig.parse("turbo3.5,vrot=4").toString());
        assertEquals(KvQuantConfig.parse("turbo2.5,vrot=8"), KvQuantConfig.parse(KvQuantConfig.parse("turbo2.5,vrot=8").toString()));
        for (String bad : new String[] {"turbo3.5,vrot=0", "turbo3.5,vrot=17", "kivi2,vrot=2", "full,vrot=2"}) {
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> KvQuantConfig.parse(bad), bad);
            assertTrue(e.getMessage().contains("vrot"), e.getMessage());
        }
    }
}
