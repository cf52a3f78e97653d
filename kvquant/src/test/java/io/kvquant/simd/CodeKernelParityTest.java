package io.kvquant.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The in-place code kernels of the Vector API backend against the scalar reference, on records
 * packed at the very end of a segment (the vector path must not read past it), odd part sizes
 * (vector groups plus a scalar tail) and 1 to 9 queries.
 */
class CodeKernelParityTest {

    private static final long SEED = 20261130L;
    private final VectorOps scalar = ScalarOps.INSTANCE;
    private final VectorOps vector = Simd.vectorOpsOrNull();

    /** A record: fp16 scale at 0, parts of the given bits/counts packed one after the other, a second scale. */
    private static CodeLayout layout(int[] bits, int[] count, Random r) {
        int n = bits.length;
        int[] so = new int[n];
        int[] co = new int[n];
        int[] fo = new int[n];
        float[][] tb = new float[n][];
        int pos = 4;
        int feat = 0;
        for (int p = 0; p < n; p++) {
            so[p] = p % 2 == 0 ? 0 : 2;
            co[p] = pos;
            fo[p] = feat;
            pos += (count[p] * bits[p] + 7) / 8;
            feat += count[p];
            tb[p] = new float[1 << bits[p]];
            for (int i = 0; i < tb[p].length; i++) {
                tb[p][i] = (float) r.nextGaussian();
            }
        }
        return new CodeLayout(pos, feat, so, co, bits, count, fo, tb);
    }

    /** {@code tokens} random records of {@code rb} bytes, each with two fp16 header values (a positive scale first). */
    private static MemorySegment records(Arena arena, int rb, int tokens, Random r) {
        MemorySegment seg = arena.allocate((long) rb * tokens);
        for (long b = 0; b < seg.byteSize(); b++) {
            seg.set(ValueLayout.JAVA_BYTE, b, (byte) r.nextInt());
        }
        for (int t = 0; t < tokens; t++) {
            seg.set(ValueLayout.JAVA_SHORT_UNALIGNED, (long) t * rb, Float.floatToFloat16((float) r.nextDouble() + 0.5f));
            seg.set(ValueLayout.JAVA_SHORT_UNALIGNED, (long) t * rb + 2, Float.floatToFloat16((float) r.nextDouble()));
        }
        return seg;
    }

    @Test
    void scoresAccumulateAndDecodeAgreeWithTheScalarReference() {
        assertNotNull(vector, "surefire runs with --add-modules jdk.incubator.vector");
        Random r = new Random(SEED);
        int[][][] shapes = {
                {{4, 3}, {64, 64}}, {{2, 1}, {64, 64}}, {{3}, {96}}, {{4}, {40}}, {{1}, {17}}, {{2, 3, 4}, {8, 24, 9}}, {{3}, {128}},
                // 5-bit codes (the middle tier's, 32 centroids: four table vectors at 8 lanes), whole
                // groups and a tail; 6 bits stay on the scalar path
                {{5}, {64}}, {{5}, {128}}, {{5, 4}, {24, 43}}, {{5}, {21}}, {{6}, {64}}};
        try (Arena arena = Arena.ofConfined()) {
            for (int[][] sh : shapes) {
                CodeLayout lay = layout(sh[0], sh[1], r);
                int rb = lay.recordBytes();
                int tokens = 13;
                MemorySegment seg = records(arena, rb, tokens, r); // last record ends at the segment's end
                int fs = lay.featureSize();
                for (int nq : new int[]{1, 2, 3, 4, 5, 9}) {
                    for (int first : new int[]{0, 5}) {
                        int n = tokens - first;
                        long off = (long) first * rb;
                        float[] g = new float[nq * (fs + 3) + 1];
                        for (int i = 0; i < g.length; i++) {
                            g[i] = (float) r.nextGaussian();
                        }
                        float[] s1 = new float[nq * 20 + 2];
                        float[] s2 = new float[nq * 20 + 2];
                        scalar.codeScores(lay, seg, off, n, g, 1, fs + 3, nq, s1, 2, 20);
                        vector.codeScores(lay, seg, off, n, g, 1, fs + 3, nq, s2, 2, 20);
                        for (int i = 0; i < s1.length; i++) {
                            assertEquals(s1[i], s2[i], 1e-4f * (1 + Math.abs(s1[i])), "scores " + lay.parts() + " parts nq=" + nq + " i=" + i);
                        }
                        float[] w = new float[nq * 16];
                        for (int i = 0; i < w.length; i++) {
                            w[i] = (float) r.nextDouble();
                        }
                        int as = fs + 5;
                        float[] a1 = new float[nq * as + 3];
                        for (int i = 0; i < a1.length; i++) {
                            a1[i] = (float) r.nextGaussian();
                        }
                        float[] a2 = a1.clone();
                        scalar.codeAccumulate(lay, seg, off, n, w, 1, 16, nq, a1, 3, as, new float[(nq + 1) * n]);
                        vector.codeAccumulate(lay, seg, off, n, w, 1, 16, nq, a2, 3, as, new float[(nq + 1) * n]);
                        for (int i = 0; i < a1.length; i++) {
                            assertEquals(a1[i], a2[i], 1e-4f * (1 + Math.abs(a1[i])), "accumulate nq=" + nq + " i=" + i);
                        }
                    }
                }
                for (int t = 0; t < tokens; t++) {
                    float[] d1 = new float[fs + 1];
                    float[] d2 = new float[fs + 1];
                    scalar.codeDecode(lay, seg, (long) t * rb, d1, 1);
                    vector.codeDecode(lay, seg, (long) t * rb, d2, 1);
                    for (int i = 0; i <= fs; i++) {
                        assertEquals(d1[i], d2[i], 0f, "decode token " + t + " i=" + i);
                    }
                }
            }
        }
    }

    /**
     * The vector kernels read a run of records through one bulk copy: a run must give what the
     * same records give one call at a time (scores are per token; a value sum adds the tokens in
     * the same order either way), including the last record of a segment, over more records than
     * one bulk copy takes. Equal up to float rounding, not bit for bit: the two calls can meet the
     * kernels in different JIT states (the Vector API's Java fallback reduces lanes in order,
     * compiled code as a tree), and this test ran green or 1 ulp apart depending on which tests
     * ran before it. A wrong record would be off by the size of the scores themselves.
     */
    @Test
    void aRunOfRecordsEqualsTheRecordsOneAtATime() {
        Random r = new Random(SEED + 2);
        int[][][] shapes = {{{4, 3}, {64, 64}}, {{3, 2}, {64, 64}}, {{3}, {96}}, {{2, 3, 4}, {8, 24, 9}}, {{4, 1}, {128, 128}},
                {{5}, {64}}};
        try (Arena arena = Arena.ofConfined()) {
            for (int[][] sh : shapes) {
                CodeLayout lay = layout(sh[0], sh[1], r);
                int rb = lay.recordBytes();
                int tokens = 300; // more than one copied run (256 records)
                MemorySegment seg = records(arena, rb, tokens, r);
                int fs = lay.featureSize();
                for (int nq : new int[]{1, 3, 8}) {
                    float[] g = new float[nq * fs];
                    for (int i = 0; i < g.length; i++) {
                        g[i] = (float) r.nextGaussian();
                    }
                    float[] run = new float[nq * tokens];
                    float[] one = new float[nq * tokens];
                    vector.codeScores(lay, seg, 0, tokens, g, 0, fs, nq, run, 0, tokens);
                    for (int t = 0; t < tokens; t++) {
                        vector.codeScores(lay, seg, (long) t * rb, 1, g, 0, fs, nq, one, t, tokens);
                    }
                    for (int i = 0; i < run.length; i++) {
                        assertEquals(one[i], run[i], 1e-5f * Math.max(1f, Math.abs(one[i])), "scores nq=" + nq + " i=" + i);
                    }
                    float[] w = new float[nq * tokens];
                    for (int i = 0; i < w.length; i++) {
                        w[i] = (float) r.nextDouble();
                    }
                    float[] accRun = new float[nq * fs];
                    float[] accOne = new float[nq * fs];
                    vector.codeAccumulate(lay, seg, 0, tokens, w, 0, tokens, nq, accRun, 0, fs, new float[(nq + 1) * tokens]);
                    for (int t = 0; t < tokens; t++) {
                        vector.codeAccumulate(lay, seg, (long) t * rb, 1, w, t, tokens, nq, accOne, 0, fs, new float[nq + 1]);
                    }
                    for (int i = 0; i < accRun.length; i++) {
                        assertEquals(accOne[i], accRun[i], 1e-5f * Math.max(1f, Math.abs(accOne[i])),
                                "accumulate nq=" + nq + " i=" + i);
                    }
                }
            }
        }
    }

    @Test
    void maxAndExpSumAgree() {
        Random r = new Random(SEED + 1);
        for (int n : new int[]{1, 7, 8, 9, 33, 256}) {
            float[] x = new float[n + 3];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) r.nextGaussian() * 5;
            }
            assertEquals(scalar.max(x, 2, n), vector.max(x, 2, n), 0f, "max n=" + n);
            float m = scalar.max(x, 2, n);
            float[] y1 = x.clone();
            float[] y2 = x.clone();
            float e1 = scalar.expSum(y1, 2, n, m);
            float e2 = vector.expSum(y2, 2, n, m);
            assertEquals(e1, e2, 1e-6f * n, "expSum n=" + n);
            for (int i = 0; i < x.length; i++) {
                assertEquals(y1[i], y2[i], 2e-7f, "exp n=" + n + " i=" + i);
            }
        }
    }
}
