package io.kvquant.simd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link GemvOps} on the Vector API: columns in blocks of eight vectors (eight independent
 * fused multiply-add chains, enough to keep both FMA pipes of a Zen or Skylake core busy while
 * the weights stream in row by row), then single vectors, then a scalar tail. Each lane sums its
 * column over k in order with one FMA per term, as the scalar reference does.
 */
final class PanamaGemv implements GemvOps {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int L = F.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    @Override
    public void gemv(float[] x, int xo, int kn, MemorySegment w, long wo, long ldw, float[] y, int yo, int n0, int n1) {
        long rowBytes = ldw * 4;
        int n = n0;
        for (; n + 8 * L <= n1; n += 8 * L) {
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = a0;
            FloatVector a2 = a0;
            FloatVector a3 = a0;
            FloatVector a4 = a0;
            FloatVector a5 = a0;
            FloatVector a6 = a0;
            FloatVector a7 = a0;
            long p = (wo + n) * 4;
            for (int k = 0; k < kn; k++, p += rowBytes) {
                FloatVector xk = FloatVector.broadcast(F, x[xo + k]);
                a0 = FloatVector.fromMemorySegment(F, w, p, NATIVE).fma(xk, a0);
                a1 = FloatVector.fromMemorySegment(F, w, p + 4L * L, NATIVE).fma(xk, a1);
                a2 = FloatVector.fromMemorySegment(F, w, p + 8L * L, NATIVE).fma(xk, a2);
                a3 = FloatVector.fromMemorySegment(F, w, p + 12L * L, NATIVE).fma(xk, a3);
                a4 = FloatVector.fromMemorySegment(F, w, p + 16L * L, NATIVE).fma(xk, a4);
                a5 = FloatVector.fromMemorySegment(F, w, p + 20L * L, NATIVE).fma(xk, a5);
                a6 = FloatVector.fromMemorySegment(F, w, p + 24L * L, NATIVE).fma(xk, a6);
                a7 = FloatVector.fromMemorySegment(F, w, p + 28L * L, NATIVE).fma(xk, a7);
            }
            int o = yo + n;
            a0.intoArray(y, o);
            a1.intoArray(y, o + L);
            a2.intoArray(y, o + 2 * L);
            a3.intoArray(y, o + 3 * L);
            a4.intoArray(y, o + 4 * L);
            a5.intoArray(y, o + 5 * L);
            a6.intoArray(y, o + 6 * L);
            a7.intoArray(y, o + 7 * L);
        }
        for (; n + L <= n1; n += L) {
            FloatVector a = FloatVector.zero(F);
            long p = (wo + n) * 4;
            for (int k = 0; k < kn; k++, p += rowBytes) {
                a = FloatVector.fromMemorySegment(F, w, p, NATIVE).fma(FloatVector.broadcast(F, x[xo + k]), a);
            }
            a.intoArray(y, yo + n);
        }
        for (; n < n1; n++) {
            float s = 0f;
            for (int k = 0; k < kn; k++) {
                s = Math.fma(x[xo + k], w.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, wo + k * ldw + n), s);
            }
            y[yo + n] = s;
        }
    }
}
