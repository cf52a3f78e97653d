package io.kvquant.simd;

import java.lang.foreign.MemorySegment;

/**
 * A row vector times a weight matrix, the one product of a one-token decode step's dense layers:
 * {@code y[yo + n] = Σ_{k < kn} x[xo + k] · W[k][n]} for {@code n0 <= n < n1}, where {@code W} is
 * row-major fp32 in native byte order, row {@code k} starting at float index {@code wo + k·ldw} of
 * {@code w} (a weight mapped from a model file, or a heap array through
 * {@link MemorySegment#ofArray(float[])}). Each output is summed over {@code k} in order, one
 * fused multiply-add per term, on both backends: the Vector API path gives the scalar reference's
 * results bit for bit.
 */
public interface GemvOps {

    void gemv(float[] x, int xo, int kn, MemorySegment w, long wo, long ldw, float[] y, int yo, int n0, int n1);

    /** The backend matching {@link Simd#ops()}. */
    static GemvOps get() {
        return Simd.vectorized() ? Holder.VECTOR : Scalar.INSTANCE;
    }

    /** The plain-Java reference. */
    static GemvOps scalar() {
        return Scalar.INSTANCE;
    }

    /** The Vector API backend when jdk.incubator.vector is present (for parity tests), else null. */
    static GemvOps vectorOrNull() {
        return ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() ? Holder.VECTOR : null;
    }

    /** Loads the Vector API class only when it is asked for. */
    final class Holder {
        static final GemvOps VECTOR = new PanamaGemv();

        private Holder() {
        }
    }

    /** The reference: one column at a time, terms in order of k. */
    final class Scalar implements GemvOps {
        static final Scalar INSTANCE = new Scalar();

        private Scalar() {
        }

        @Override
        public void gemv(float[] x, int xo, int kn, MemorySegment w, long wo, long ldw, float[] y, int yo, int n0, int n1) {
            for (int n = n0; n < n1; n++) {
                float s = 0f;
                for (int k = 0; k < kn; k++) {
                    s = Math.fma(x[xo + k], w.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, wo + k * ldw + n), s);
                }
                y[yo + n] = s;
            }
        }
    }
}
