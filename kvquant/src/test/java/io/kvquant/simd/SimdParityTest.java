package io.kvquant.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

class SimdParityTest {

    private static final long SEED = 20261128L;
    private final VectorOps scalar = ScalarOps.INSTANCE;
    private final VectorOps vector = Simd.vectorOpsOrNull();

    private static float[] rand(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }

    @Test
    void vectorPathIsAvailableInTests() {
        assertNotNull(vector, "surefire runs with --add-modules jdk.incubator.vector");
        if (Boolean.getBoolean("kvquant.simd.require")) {
            assertTrue(Simd.vectorized(), "kvquant.simd.require=true but backend is " + Simd.describe());
        }
    }

    @Test
    void kernelsAgreeOnOddLengthsAndOffsets() {
        Random r = new Random(SEED);
        for (int n : new int[]{0, 1, 3, 7, 8, 15, 17, 31, 33, 127, 1021}) {
            for (int off : new int[]{0, 3}) {
                float[] a = rand(r, n + off + 5);
                float[] b = rand(r, n + off + 5);
                float tol = 1e-5f * (float) Math.sqrt(n + 1) * 4;
                assertEquals(scalar.dot(a, off, b, 1, n), vector.dot(a, off, b, 1, n), tol, "dot n=" + n);
                assertEquals(scalar.sumOfSquares(a, off, n), vector.sumOfSquares(a, off, n), tol * 4, "ss n=" + n);
                float[] y1 = b.clone();
                float[] y2 = b.clone();
                scalar.axpy(0.37f, a, off, y1, 2, n);
                vector.axpy(0.37f, a, off, y2, 2, n);
                assertArrayClose(y1, y2, 1e-6f, "axpy n=" + n);
                float[] m1 = new float[n + 2];
                float[] m2 = new float[n + 2];
                scalar.multiply(a, off, b, 0, m1, 1, n);
                vector.multiply(a, off, b, 0, m2, 1, n);
                assertArrayClose(m1, m2, 0f, "multiply n=" + n);
                float[] s1 = a.clone();
                float[] s2 = a.clone();
                scalar.scale(s1, off, n, -1.5f);
                vector.scale(s2, off, n, -1.5f);
                assertArrayClose(s1, s2, 0f, "scale n=" + n);
            }
        }
    }

    @Test
    void fwhtAgreesAndIsAnInvolutionUpToN() {
        Random r = new Random(SEED + 1);
        for (int n = 1; n <= 1024; n <<= 1) {
            float[] a = rand(r, n + 3);
            float[] x1 = a.clone();
            float[] x2 = a.clone();
            scalar.fwht(x1, 3, n);
            vector.fwht(x2, 3, n);
            assertArrayClose(x1, x2, 0f, "fwht n=" + n); // same butterflies in the same order: bit-identical
            vector.fwht(x2, 3, n);
            for (int i = 0; i < n; i++) {
                assertEquals(a[3 + i] * n, x2[3 + i], 1e-3f * n, "H·H = n·I at n=" + n);
            }
        }
    }

    /** The fused Hadamard round equals multiply, fwht, multiply bit for bit (in-vector and fallback sizes, in place or not). */
    @Test
    void hadamardRoundIsBitIdenticalToMultiplyFwhtMultiply() {
        Random r = new Random(SEED + 7);
        for (int n = 1; n <= 512; n <<= 1) {
            float[] pre = rand(r, n);
            float[] post = rand(r, n);
            float[] x = rand(r, n + 5);
            float[] ref = new float[n + 4];
            scalar.multiply(x, 2, pre, 0, ref, 4, n);
            scalar.fwht(ref, 4, n);
            scalar.multiply(ref, 4, post, 0, ref, 4, n);
            for (VectorOps ops : new VectorOps[]{scalar, vector}) {
                float[] y = new float[n + 4];
                ops.hadamardRound(x, 2, y, 4, n, pre, post);
                assertArrayClose(ref, y, 0f, ops.name() + " hadamardRound n=" + n);
                float[] z = new float[n + 4];
                System.arraycopy(x, 2, z, 4, n);
                ops.hadamardRound(z, 4, z, 4, n, pre, post);
                assertArrayClose(ref, z, 0f, ops.name() + " in-place hadamardRound n=" + n);
            }
        }
    }

    /** The round without a pre-multiply equals fwht, multiply bit for bit (and the round with pre = ones). */
    @Test
    void hadamardRoundWithoutPreIsBitIdenticalToFwhtMultiply() {
        Random r = new Random(SEED + 9);
        for (int n = 1; n <= 512; n <<= 1) {
            float[] post = rand(r, n);
            float[] ones = new float[n];
            java.util.Arrays.fill(ones, 1f);
            float[] x = rand(r, n + 5);
            float[] ref = new float[n + 4];
            System.arraycopy(x, 2, ref, 4, n);
            scalar.fwht(ref, 4, n);
            scalar.multiply(ref, 4, post, 0, ref, 4, n);
            for (VectorOps ops : new VectorOps[]{scalar, vector}) {
                float[] y = new float[n + 4];
                ops.hadamardRound(x, 2, y, 4, n, post);
                assertArrayClose(ref, y, 0f, ops.name() + " hadamardRound without pre n=" + n);
                float[] z = new float[n + 4];
                System.arraycopy(x, 2, z, 4, n);
                ops.hadamardRound(z, 4, z, 4, n, post);
                assertArrayClose(ref, z, 0f, ops.name() + " in-place hadamardRound without pre n=" + n);
                float[] w = new float[n + 4];
                ops.hadamardRound(x, 2, w, 4, n, ones, post);
                assertArrayClose(ref, w, 0f, ops.name() + " hadamardRound with pre = ones n=" + n);
            }
        }
    }

    /** The reordered double sum of squares stays within its stated bound of the sequential sum. */
    @Test
    void sumOfSquaresDoubleIsWithinItsBound() {
        Random r = new Random(SEED + 8);
        for (int n : new int[]{0, 1, 5, 8, 64, 96, 128, 131, 1000}) {
            for (int rep = 0; rep < 50; rep++) {
                float[] a = rand(r, n + 3);
                for (int i = 0; i < a.length; i += 7) {
                    a[i] *= (float) Math.pow(10, r.nextInt(20) - 10); // wide dynamic range
                }
                double seq = 0;
                for (int i = 0; i < n; i++) {
                    seq += (double) a[3 + i] * a[3 + i];
                }
                for (VectorOps ops : new VectorOps[]{scalar, vector}) {
                    double got = ops.sumOfSquaresDouble(a, 3, n);
                    assertEquals(seq, got, 2.0 * Math.max(n - 1, 0) * 0x1p-53 * seq, ops.name() + " n=" + n);
                }
            }
        }
        float[] bad = {1f, Float.NaN, 2f, 3f, 4f, 5f, 6f, 7f, 8f};
        assertTrue(Double.isNaN(vector.sumOfSquaresDouble(bad, 0, 9)));
        bad[1] = Float.POSITIVE_INFINITY;
        assertTrue(Double.isInfinite(vector.sumOfSquaresDouble(bad, 0, 9)));
    }

    @Test
    void codeDecodingAgreesForEveryWidthAndOddCounts() {
        Random r = new Random(SEED + 2);
        for (int bits = 1; bits <= 8; bits++) {
            float[] table = rand(r, Math.max(16, 1 << bits));
            for (int n : new int[]{1, 7, 8, 9, 31, 64, 96, 127}) {
                byte[] buf = new byte[n + 16];
                r.nextBytes(buf);
                float[] a = new float[n + 1];
                float[] b = new float[n + 1];
                scalar.decodeCodes(buf, 3, bits, table, n, 0.7f, a, 1);
                vector.decodeCodes(buf, 3, bits, table, n, 0.7f, b, 1);
                assertArrayClose(a, b, 0f, "decodeCodes bits=" + bits + " n=" + n);
                // the scalar reference against plain bit arithmetic
                for (int j = 0; j < n; j++) {
                    long bit = (long) j * bits;
                    int v = (int) ((((buf[3 + (int) (bit >>> 3)] & 0xFF) | ((buf[4 + (int) (bit >>> 3)] & 0xFF) << 8)) >>> (bit & 7))
                            & ((1 << bits) - 1));
                    assertEquals(0.7f * table[v], a[1 + j], 0f);
                }
            }
        }
    }

    @Test
    void fusedDecodeDotAgreesWithDecodeThenDot() {
        Random r = new Random(SEED + 3);
        for (int bits = 1; bits <= 5; bits++) {
            float[] table = rand(r, Math.max(16, 1 << bits));
            for (int n : new int[]{8, 13, 64, 96}) {
                for (int nq : new int[]{1, 3, 4, 6}) {
                    byte[] buf = new byte[n + 16];
                    r.nextBytes(buf);
                    float[] q = rand(r, 2 + nq * (n + 5));
                    float[] dec = new float[n];
                    scalar.decodeCodes(buf, 1, bits, table, n, 1f, dec, 0);
                    for (VectorOps ops : new VectorOps[]{scalar, vector}) {
                        float[] out = new float[3 * nq + 1];
                        java.util.Arrays.fill(out, 0.5f);
                        ops.decodeDot(buf, 1, bits, table, n, 0.7f, q, 2, n + 5, nq, out, 1, 3);
                        for (int i = 0; i < nq; i++) {
                            float want = 0.5f + 0.7f * scalar.dot(dec, 0, q, 2 + i * (n + 5), n);
                            assertEquals(want, out[1 + 3 * i], 1e-4f * n, ops.name() + " decodeDot bits=" + bits + " n=" + n + " q" + i);
                        }
                    }
                }
            }
        }
    }

    static void assertArrayClose(float[] e, float[] a, float tol, String msg) {
        assertEquals(e.length, a.length, msg);
        for (int i = 0; i < e.length; i++) {
            assertEquals(e[i], a[i], tol, msg + " at " + i);
        }
    }
}
