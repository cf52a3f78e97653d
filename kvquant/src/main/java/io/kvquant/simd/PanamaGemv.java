package io.kvquant.simd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link GemvOps} on the Vector API, streaming the weights row by row: four rows of W at a time
 * are read front to back (contiguous, so the hardware prefetchers keep up when the weights come
 * from memory rather than cache), each FMA'd into the output columns, which stay in L1. Measured
 * with two threads on column halves (the engine's split): 13–14 GB/s from memory against 8 GB/s
 * for column blocks that walk down the rows, and 25–28 against 22–24 GB/s on the bundled model's
 * 14 MB (docs/engine.md). Each lane sums its column over k in order with one FMA per term, as the
 * scalar reference does: bit for bit the same results. Columns past the last whole vector are
 * summed one at a time.
 */
final class PanamaGemv implements GemvOps {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int L = F.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    @Override
    public void gemv(float[] x, int xo, int kn, MemorySegment w, long wo, long ldw, float[] y, int yo, int n0, int n1) {
        int nv = n0 + (n1 - n0) / L * L;
        java.util.Arrays.fill(y, yo + n0, yo + nv, 0f);
        long rb = ldw * 4;
        int k = 0;
        for (; k + 4 <= kn; k += 4) {
            FloatVector x0 = FloatVector.broadcast(F, x[xo + k]);
            FloatVector x1 = FloatVector.broadcast(F, x[xo + k + 1]);
            FloatVector x2 = FloatVector.broadcast(F, x[xo + k + 2]);
            FloatVector x3 = FloatVector.broadcast(F, x[xo + k + 3]);
            long p = (wo + k * ldw + n0) * 4;
            for (int n = n0; n < nv; n += L, p += 4L * L) {
                FloatVector acc = FloatVector.fromArray(F, y, yo + n);
                acc = FloatVector.fromMemorySegment(F, w, p, NATIVE).fma(x0, acc);
                acc = FloatVector.fromMemorySegment(F, w, p + rb, NATIVE).fma(x1, acc);
                acc = FloatVector.fromMemorySegment(F, w, p + 2 * rb, NATIVE).fma(x2, acc);
                acc = FloatVector.fromMemorySegment(F, w, p + 3 * rb, NATIVE).fma(x3, acc);
                acc.intoArray(y, yo + n);
            }
        }
        for (; k < kn; k++) {
            FloatVector xk = FloatVector.broadcast(F, x[xo + k]);
            long p = (wo + k * ldw + n0) * 4;
            for (int n = n0; n < nv; n += L, p += 4L * L) {
                FloatVector.fromMemorySegment(F, w, p, NATIVE).fma(xk, FloatVector.fromArray(F, y, yo + n)).intoArray(y, yo + n);
            }
        }
        for (int n = nv; n < n1; n++) {
            float s = 0f;
            for (int kk = 0; kk < kn; kk++) {
                s = Math.fma(x[xo + kk], w.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, wo + kk * ldw + n), s);
            }
            y[yo + n] = s;
        }
    }
}
