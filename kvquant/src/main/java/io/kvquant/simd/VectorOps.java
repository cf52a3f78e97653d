package io.kvquant.simd;

/**
 * The numeric kernels kvquant's codecs and attention are built on. Two implementations:
 * {@link ScalarOps} (plain Java, the reference) and a Vector API one, chosen once by {@link Simd}.
 * All methods work on array slices and never allocate.
 */
public interface VectorOps {

    /** Σ a[ao+i]·b[bo+i] for i in [0, n). */
    float dot(float[] a, int ao, float[] b, int bo, int n);

    /** y[yo+i] += alpha·x[xo+i]. */
    void axpy(float alpha, float[] x, int xo, float[] y, int yo, int n);

    /** x[o+i] *= s. */
    void scale(float[] x, int o, int n, float s);

    /** Σ x[o+i]². */
    float sumOfSquares(float[] x, int o, int n);

    /** out[oo+i] = x[xo+i]·y[yo+i] (out may alias x). */
    void multiply(float[] x, int xo, float[] y, int yo, float[] out, int oo, int n);

    /**
     * In-place unnormalized fast Walsh–Hadamard transform of x[o..o+n), n a power of two.
     * The result is H·x with H the ±1 Sylvester–Hadamard matrix (H·H = n·I).
     */
    void fwht(float[] x, int o, int n);

    /**
     * out[oo+j] = scale · table[code_j] for j in [0, n), where code_j is the j-th {@code bits}-bit
     * code packed least-significant-bit first from buf[bo] (bits 1..8). The buffer must have 8
     * readable bytes past the last code byte. Pass tables padded to at least 16 entries so the
     * vector path can hold them in registers (it falls back to scalar code otherwise).
     */
    void decodeCodes(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] out, int oo);

    /**
     * Fused decode and dot products for a group of queries: for i &lt; nq,
     * out[oo + i·os] += scale · Σ_{j&lt;n} table[code_j] · q[qo + i·qs + j]. Same code layout and
     * padding rules as {@link #decodeCodes}.
     */
    void decodeDot(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] q, int qo, int qs, int nq,
                   float[] out, int oo, int os);

    /** Name shown in logs and run metadata. */
    String name();
}
