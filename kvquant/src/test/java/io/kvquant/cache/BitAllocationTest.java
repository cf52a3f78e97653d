package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class BitAllocationTest {

    private static final KvQuantConfig AUTO = KvQuantConfig.parse("auto:3.5");

    @Test
    void distortionFallsWithEveryHalfBitAndMatchesTheLloydMaxFigures() {
        double[] d = BitAllocation.distortions(AUTO.withWindow(0), 64); // untrimmed: the codec at its nominal rate
        assertEquals(13, d.length); // 2, 2.5, ..., 8
        for (int i = 1; i < d.length; i++) {
            assertTrue(d[i] < d[i - 1], "D must fall: " + java.util.Arrays.toString(d));
        }
        // Lloyd-Max for the rotated coordinates: 0.1160 at 2 bits, 0.0340 at 3, 0.00931 at 4 (d = 64 within 5%)
        assertEquals(0.1160, d[0], 0.1160 * 0.06);
        assertEquals(0.0340, d[2], 0.0340 * 0.06);
        assertEquals(0.00931, d[4], 0.00931 * 0.06);
        // with the window the presets trim 1/8 code bit at d = 64: more distortion at each nominal rate, still falling
        double[] t = BitAllocation.distortions(AUTO, 64);
        for (int i = 0; i < t.length; i++) {
            assertTrue(t[i] > d[i] && (i == 0 || t[i] < t[i - 1]), "trimmed " + java.util.Arrays.toString(t));
        }
    }

    @Test
    void theAllocationIsOptimalAndSpendsTheBudgetExactly() {
        double[] d = BitAllocation.distortions(AUTO, 64);
        double[] kk = {0.02, 0.001, 0.004, 0.0005};
        double[] vk = {0.01, 0.003, 0.0002, 0.006};
        BitAllocation.Plan p = BitAllocation.allocate(AUTO, kk, vk, d);
        double sum = 0;
        double cost = 0;
        double dProbe = d[0];
        for (int l = 0; l < 4; l++) {
            sum += p.keyBits()[l] + p.valueBits()[l];
            cost += kk[l] / dProbe * d[idx(p.keyBits()[l])] + vk[l] / dProbe * d[idx(p.valueBits()[l])];
        }
        assertEquals(8 * 3.5, sum, 1e-9, "average exactly the budget");
        assertEquals(cost, p.predictedKl(), 1e-12);
        // exhaustive search over every allocation with the same total: none is better
        double best = exhaustive(kk, vk, d, 0, 0, 24, dProbe); // 8 components x 1.5 bits above 2, in half bits
        assertEquals(best, p.predictedKl(), 1e-12);
        // the most sensitive component gets the most bits, the least sensitive the fewest
        assertTrue(p.keyBits()[0] >= p.keyBits()[1] && p.keyBits()[0] >= p.valueBits()[2], p.describe());
        assertEquals(p.setting().layerKeyBits(0), p.keyBits()[0]);
        assertEquals(p.setting().layerValueBits(3), p.valueBits()[3]);
        // the resolved setting builds a cache whose bytes equal the uniform 3.5-bit one's
        try (LayeredKvCache a = KvCaches.create(p.setting().withWindow(0).withMid(0).withCenter(false).withKeyScale(0), 4, 2, 64);
             LayeredKvCache u = KvCaches.create("turbo3.5,window=0,center=off", 4, 2, 64)) {
            java.util.Random r = new java.util.Random(1);
            for (int l = 0; l < 4; l++) {
                float[] k = KvCacheTest.gaussian(r, 2 * 50 * 64, 1f);
                a.append(l, k, k, 50);
                u.append(l, k, k, 50);
            }
            assertEquals(u.bytesUsed(), a.bytesUsed());
        }
    }

    private static int idx(double bits) {
        return (int) Math.round(2 * (bits - BitAllocation.MIN_BITS));
    }

    private static double exhaustive(double[] kk, double[] vk, double[] d, int c, int used, int total, double dp) {
        if (c == 2 * kk.length) {
            return used == total ? 0 : Double.POSITIVE_INFINITY;
        }
        double best = Double.POSITIVE_INFINITY;
        double s = (c % 2 == 0 ? kk[c / 2] : vk[c / 2]) / dp;
        for (int r = 0; r < d.length && used + r <= total; r++) {
            best = Math.min(best, s * d[r] + exhaustive(kk, vk, d, c + 1, used + r, total, dp));
        }
        return best;
    }

    @Test
    void planProbesEachComponentAloneAndFollowsTheSensitivity() {
        List<KvQuantConfig> seen = new ArrayList<>();
        List<KvQuantConfig> checked = new ArrayList<>();
        // a model whose layer 2 keys are very sensitive and everything else barely
        BitAllocation.Plan p = BitAllocation.plan(AUTO, 4, 64, s -> {
            assertEquals(KvQuantConfig.DEFAULT_TURBO_WINDOW, s.window(), "probed as the setting runs, window included");
            int quantized = 0;
            for (int l = 0; l < 4; l++) {
                quantized += s.layerKind(l, 4) == KvQuantConfig.Kind.TURBO ? 1 : 0;
            }
            if (quantized == 4) { // a candidate plan, checked after the probes: KL from the same model
                checked.add(s);
                double kl = 0;
                for (int l = 0; l < 4; l++) {
                    kl += (l == 2 ? 0.05 : 0.001) * Math.pow(2, -2 * (s.layerKeyBits(l) - 2)) + 0.001 * Math.pow(2, -2 * (s.layerValueBits(l) - 2));
                }
                return kl;
            }
            assertEquals(1, quantized, "one layer at a time: " + s);
            assertTrue(checked.isEmpty(), "components are probed before the candidates");
            seen.add(s);
            int layer = 0;
            while (s.layerKind(layer, 4) != KvQuantConfig.Kind.TURBO) {
                layer++;
            }
            boolean key = s.layerKeyBits(layer) == BitAllocation.PROBE_BITS;
            assertTrue(key ^ s.layerValueBits(layer) == BitAllocation.PROBE_BITS, s.toString());
            return layer == 2 && key ? 0.05 : 0.001;
        });
        assertEquals(8, seen.size());
        assertEquals(5, checked.size(), "the allocation, the 3 uniform settings and the boundary plan of the budget: " + checked);
        assertTrue(checked.stream().anyMatch(c -> {
                    for (int l = 0; l < 4; l++) {
                        if (c.layerKeyBits(l) != 3.5 || c.layerValueBits(l) != 3.5) {
                            return false;
                        }
                    }
                    return true;
                }), "the plain preset is a candidate: " + checked);
        assertTrue(p.keyBits()[2] > 3.5, p.describe());
        for (int l = 0; l < 4; l++) {
            if (l != 2) {
                assertTrue(p.keyBits()[l] <= p.keyBits()[2] && p.valueBits()[l] <= p.keyBits()[2], p.describe());
            }
        }
        assertTrue(p.describe().contains("L2 k") && p.describe().contains("allocated kept"), p.describe());
        assertTrue(!p.setting().needsCalibration() && p.setting().window() == KvQuantConfig.DEFAULT_TURBO_WINDOW);
        assertEquals(p.setting(), KvQuantConfig.parse(p.setting().toString()), "the plan's text form round-trips");
    }

    @Test
    void theCheckKeepsTheCandidateWithTheLowestMeasuredKl() {
        // the probes say values matter everywhere, keys nowhere; but measured on the whole plan, uniform k4v3 is best
        BitAllocation.Plan p = BitAllocation.plan(AUTO, 4, 64, s -> {
            int quantized = 0;
            for (int l = 0; l < 4; l++) {
                quantized += s.layerKind(l, 4) == KvQuantConfig.Kind.TURBO ? 1 : 0;
            }
            if (quantized == 4) {
                boolean k4v3 = true;
                for (int l = 0; l < 4; l++) {
                    k4v3 &= s.layerKeyBits(l) == 4 && s.layerValueBits(l) == 3;
                }
                return k4v3 ? 0.001 : 0.002;
            }
            int layer = 0;
            while (s.layerKind(layer, 4) != KvQuantConfig.Kind.TURBO) {
                layer++;
            }
            return s.layerKeyBits(layer) == BitAllocation.PROBE_BITS ? 0.0001 : 0.01;
        });
        for (int l = 0; l < 4; l++) {
            assertEquals(4, p.keyBits()[l], p.describe());
            assertEquals(3, p.valueBits()[l], p.describe());
            assertEquals(4, p.setting().layerKeyBits(l));
            assertEquals(3, p.setting().layerValueBits(l));
        }
        assertTrue(p.describe().contains("k4v3 0.00100") && p.describe().contains("k4v3 kept"), p.describe());
    }

    @Test
    void theBoundaryPlanSpendsTheSameBudgetAndBytesAndCanWin() {
        for (int layers : new int[] {4, 12, 32}) {
            double[][] p = BitAllocation.boundaryPlan(layers, 3.5);
            double sum = 0;
            for (int l = 0; l < layers; l++) {
                sum += p[0][l] + p[1][l];
                assertTrue(p[0][l] >= BitAllocation.MIN_BITS && p[1][l] >= BitAllocation.MIN_BITS, layers + " layers");
            }
            assertEquals(2 * layers * 3.5, sum, 1e-9, layers + " layers");
            assertEquals(4.5, p[0][0]);
            assertEquals(4.5, p[1][layers - 1]);
        }
        assertEquals(null, BitAllocation.boundaryPlan(2, 3.5));
        assertEquals(null, BitAllocation.boundaryPlan(3, 3.5), "the middle layer would go below 2 bits");
        // a model where only the end layers matter: the boundary plan is measured best and kept
        BitAllocation.Plan p = BitAllocation.plan(AUTO, 4, 64, s -> {
            int quantized = 0;
            for (int l = 0; l < 4; l++) {
                quantized += s.layerKind(l, 4) == KvQuantConfig.Kind.TURBO ? 1 : 0;
            }
            if (quantized == 4) {
                return s.layerKeyBits(0) == 4.5 && s.layerValueBits(3) == 4.5 && s.layerKeyBits(1) == 2.5 ? 0.001 : 0.002;
            }
            return 0.001; // the probes see every component alike: the allocation is uniform
        });
        assertTrue(p.describe().contains("ends+1 0.00100") && p.describe().contains("ends+1 kept"), p.describe());
        try (LayeredKvCache a = KvCaches.create(p.setting(), 4, 2, 64);
             LayeredKvCache u = KvCaches.create("turbo3.5", 4, 2, 64)) {
            java.util.Random r = new java.util.Random(2);
            for (int l = 0; l < 4; l++) {
                float[] k = KvCacheTest.gaussian(r, 2 * 300 * 64, 1f);
                a.append(l, k, k, 300);
                u.append(l, k, k, 300);
            }
            assertEquals(u.bytesUsed(), a.bytesUsed(), "same bytes as the plain preset");
            assertEquals(u.bytesAllocated(), a.bytesAllocated());
        }
    }

    @Test
    void anUnresolvedAutoSettingCannotBuildACache() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvCaches.create("auto:3.5", 4, 2, 64));
        assertTrue(e.getMessage().contains("calibration"), e.getMessage());
    }
}
