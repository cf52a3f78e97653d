package io.kvquant.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The Vector API row-vector-times-matrix against the scalar reference, for every tail (column
 * ranges that are not multiples of the eight-vector block or of one vector, a range that starts
 * inside a row, a leading dimension wider than the range): both sum each column over k in order
 * with one FMA per term, so they must agree bit for bit; and both against a double-precision sum
 * within float rounding (k ulps of the sum of |terms|).
 */
class GemvParityTest {

    @ParameterizedTest(name = "k={0} ld={1} n0={2} n1={3}")
    @CsvSource({"1,1,0,1", "7,9,0,9", "64,256,0,256", "256,768,0,768", "256,4096,0,4096", "33,131,5,130", "512,300,17,300",
        "3,70,64,70", "128,1000,0,999"})
    void vectorMatchesScalarBitForBit(int kn, int ld, int n0, int n1) {
        GemvOps vec = GemvOps.vectorOrNull();
        assertNotNull(vec, "these tests run with jdk.incubator.vector (see the pom's surefire arguments)");
        Random r = new Random(31L * kn + ld * 7L + n0);
        int wo = 3;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment w = arena.allocate((long) (wo + kn * ld) * 4, 64);
            for (long i = 0; i < wo + (long) kn * ld; i++) {
                w.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) r.nextGaussian());
            }
            int xo = 2;
            float[] x = new float[xo + kn];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) r.nextGaussian();
            }
            float[] yv = new float[n1 + 4];
            float[] ys = new float[n1 + 4];
            java.util.Arrays.fill(yv, Float.NaN);
            java.util.Arrays.fill(ys, Float.NaN);
            vec.gemv(x, xo, kn, w, wo, ld, yv, 1, n0, n1);
            GemvOps.scalar().gemv(x, xo, kn, w, wo, ld, ys, 1, n0, n1);
            for (int n = 0; n < yv.length; n++) {
                assertEquals(Float.floatToRawIntBits(ys[n]), Float.floatToRawIntBits(yv[n]), "column " + (n - 1));
            }
            for (int n = n0; n < n1; n++) {
                double s = 0;
                double mag = 0;
                for (int k = 0; k < kn; k++) {
                    double t = (double) x[xo + k] * w.getAtIndex(ValueLayout.JAVA_FLOAT, wo + (long) k * ld + n);
                    s += t;
                    mag += Math.abs(t);
                }
                assertEquals(s, yv[1 + n], kn * 1.2e-7 * mag + 1e-30, "column " + n);
            }
        }
    }
}
