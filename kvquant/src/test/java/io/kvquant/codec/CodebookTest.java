package io.kvquant.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Lloyd–Max codebooks against the values in shared/design/ALGORITHM.md. */
class CodebookTest {

    @Test
    void gaussianLimitCentroidsMatchTheTable() {
        assertPositiveHalf(Codebook.gaussian(1), 0.7979);
        assertPositiveHalf(Codebook.gaussian(2), 0.4528, 1.5104);
        assertPositiveHalf(Codebook.gaussian(3), 0.2451, 0.7560, 1.3439, 2.1519);
        assertPositiveHalf(Codebook.gaussian(4), 0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326);
        float[] b3 = Codebook.gaussian(3).boundaries();
        assertEquals(0.5005, b3[4], 2e-3);
        assertEquals(1.0500, b3[5], 2e-3);
        assertEquals(1.7479, b3[6], 2e-3);
        double[] mse = {0.3634, 0.1175, 0.03455, 0.0095};
        for (int b = 1; b <= 4; b++) {
            assertEquals(mse[b - 1], Codebook.gaussian(b).expectedMsePerVector(), mse[b - 1] * 0.01, "gaussian b=" + b);
        }
    }

    @Test
    void exactDensityMseMatchesTheTableAtD128AndD64() {
        double[] d128 = {0.3609, 0.1160, 0.0340, 0.00931};
        double[] d64 = {0.3584, 0.1145, 0.0334, 0.00913};
        for (int b = 1; b <= 4; b++) {
            assertEquals(d128[b - 1], Codebook.forDimension(128, b).expectedMsePerVector(), d128[b - 1] * 0.005, "d=128 b=" + b);
            assertEquals(d64[b - 1], Codebook.forDimension(64, b).expectedMsePerVector(), d64[b - 1] * 0.005, "d=64 b=" + b);
        }
    }

    @Test
    void allWidthsOneToEightAreSymmetricSortedAndCached() {
        for (int b = 1; b <= 8; b++) {
            Codebook cb = Codebook.forDimension(128, b);
            float[] c = cb.centroids();
            assertEquals(1 << b, c.length);
            for (int i = 0; i < c.length; i++) {
                assertEquals(-c[c.length - 1 - i], c[i], 1e-6f, "symmetric b=" + b);
                if (i > 0) {
                    assertTrue(c[i] > c[i - 1], "ascending b=" + b);
                }
            }
            // the paper's bounds: 4^-b <= D_mse <= (sqrt(3)·pi/2)·4^-b
            double mse = cb.expectedMsePerVector();
            assertTrue(mse >= Math.pow(4, -b) && mse <= Math.sqrt(3) * Math.PI / 2 * Math.pow(4, -b), "b=" + b + " mse=" + mse);
            assertSame(cb, Codebook.forDimension(128, b));
        }
    }

    @Test
    void quantizeIsNearestCentroid() {
        Codebook cb = Codebook.forDimension(128, 3);
        float[] c = cb.centroids();
        java.util.Random r = new java.util.Random(7);
        for (int i = 0; i < 10_000; i++) {
            float v = (float) (r.nextGaussian() / Math.sqrt(128) * 1.5);
            int best = 0;
            for (int k = 1; k < c.length; k++) {
                if (Math.abs(v - c[k]) < Math.abs(v - c[best])) {
                    best = k;
                }
            }
            assertEquals(Math.abs(v - c[best]), Math.abs(v - c[cb.quantize(v)]), 1e-7f, "v=" + v);
        }
    }

    /**
     * The codebooks are the ones every stored cache was written with, to the last bit: hashes of
     * the float bits of centroids and boundaries, and the MSE's double bits, as the on-heap
     * computation of session 6 gave them (the prefix sums moved off the heap in session 7;
     * the same sums in the same order must give the same numbers).
     */
    @Test
    void sameBitsAsTheCodebooksCachesWereWrittenWith() {
        long[][] golden = {
            {64, 2, -868342537L, 4592916871162726924L},
            {64, 3, 1939337377L, 4584972947495406067L},
            {64, 4, -594322793L, 4576417585943782322L},
            {96, 3, -1707417841L, 4585028092284158916L},
            {128, 3, 383090113L, 4585055827029002178L},
            {128, 4, -482394981L, 4576523236615802385L},
            {0, 3, -383448867L, 4585139678671633550L},
        };
        for (long[] g : golden) {
            int dim = (int) g[0];
            int bits = (int) g[1];
            Codebook cb = dim == 0 ? Codebook.gaussian(bits) : Codebook.forDimension(dim, bits);
            int h = 1;
            for (float f : cb.centroids()) {
                h = 31 * h + Float.floatToIntBits(f);
            }
            for (float f : cb.boundaries()) {
                h = 31 * h + Float.floatToIntBits(f);
            }
            assertEquals((int) g[2], h, "centroid and boundary bits, d " + dim + ", " + bits + " bits");
            assertEquals(g[3], Double.doubleToLongBits(cb.expectedMsePerVector()), "MSE bits, d " + dim + ", " + bits + " bits");
        }
    }

    @Test
    void rejectsUnsupportedWidths() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Codebook.forDimension(128, 9));
        assertTrue(e.getMessage().contains("9"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Codebook.gaussian(0));
        assertThrows(IllegalArgumentException.class, () -> Codebook.forDimension(1, 2));
    }

    private static void assertPositiveHalf(Codebook cb, double... expected) {
        float[] c = cb.centroids();
        int half = c.length / 2;
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i], c[half + i], 1.5e-3, "b=" + cb.bits() + " centroid " + i);
        }
    }
}
