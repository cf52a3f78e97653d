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

    /** max of x[o..o+n), n ≥ 1. */
    float max(float[] x, int o, int n);

    /** x[o+i] = exp(x[o+i] − m) for i in [0, n); returns the sum of the new values. */
    float expSum(float[] x, int o, int n, float m);

    /**
     * Scores of {@code n} consecutive records read in place from {@code seg} (record t at byte
     * off + t·recordBytes, all inside {@code seg}) against {@code nq} queries in feature form:
     * out[oo + i·os + t] = Σ_p scale_p(t) · Σ_j table_p[code_{t,p,j}] · g[go + i·gs + featOff_p + j].
     */
    void codeScores(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] g, int go, int gs, int nq,
                    float[] out, int oo, int os);

    /**
     * Weighted sums of {@code n} consecutive records in feature form, read in place:
     * acc[ao + i·as + featOff_p + j] += Σ_t w[wo + i·ws + t] · scale_p(t) · table_p[code_{t,p,j}] for i &lt; nq.
     * {@code scratch} must hold at least (nq + 1)·n floats.
     */
    void codeAccumulate(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] w, int wo, int ws, int nq,
                        float[] acc, int ao, int as, float[] scratch);

    /** Features of one record: out[oo + featOff_p + j] = scale_p · table_p[code_j] (other entries untouched). */
    void codeDecode(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, float[] out, int oo);

    /**
     * Quantizes and packs: code_j = the number of {@code boundaries} (sorted ascending, 2^bits − 1
     * of them) strictly below y[yo+j]·scale, which is the nearest-centroid index that
     * {@code Codebook.quantize} finds by binary search; the n codes are packed LSB first into
     * exactly (n·bits + 7)/8 bytes of {@code dst} from {@code off}. The product y·scale is rounded
     * to float before comparing, as in the reference encoder.
     */
    void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, int bits, java.lang.foreign.MemorySegment dst,
                      long off);

    /**
     * Same as {@link #quantizePack(float[], int, int, float, float[], int, java.lang.foreign.MemorySegment, long)}
     * with the boundaries' {@link #searchTable} precomputed (the vector path's branch-free binary search reads it).
     */
    void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, float[] search, int bits,
                      java.lang.foreign.MemorySegment dst, long off);

    /**
     * The thresholds of a branch-free binary search over 2^bits − 1 sorted {@code boundaries}
     * (bits 1..4): step s (s &lt; bits) compares against entry [16·s + p] where p is the s-bit
     * prefix of the code found so far, i.e. boundaries[p·2^(bits−s) + 2^(bits−s−1) − 1]. After
     * {@code bits} steps the prefix is the number of boundaries strictly below the value. Returns
     * null for other bit widths or boundary counts.
     */
    static float[] searchTable(float[] boundaries, int bits) {
        if (bits < 1 || bits > 5 || boundaries.length != (1 << bits) - 1) {
            return null;
        }
        float[] t = new float[16 * bits];
        for (int s = 0; s < bits; s++) {
            for (int p = 0; p < (1 << s); p++) {
                t[16 * s + p] = boundaries[(p << (bits - s)) + (1 << (bits - s - 1)) - 1];
            }
        }
        return t;
    }

    /**
     * One round of the randomized Hadamard transform on a block of n floats (n a power of two):
     * y[yo+i] = post[i] · (H·(pre ⊙ x[xo..xo+n)))_i with H the unnormalized ±1 Walsh–Hadamard
     * matrix ({@code pre} and {@code post} hold at least n entries, indexed from 0). Bit-identical
     * to multiply, {@link #fwht}, multiply on every backend (the same float operations per
     * element, in the same order); {@code y} may alias {@code x} at the same offset.
     */
    void hadamardRound(float[] x, int xo, float[] y, int yo, int n, float[] pre, float[] post);

    /**
     * {@link #hadamardRound} with pre = ones: y[yo+i] = post[i] · (H·x[xo..xo+n))_i, bit-identical
     * to it (a multiply by one is exact) without the multiply.
     */
    default void hadamardRound(float[] x, int xo, float[] y, int yo, int n, float[] post) {
        if (x != y || xo != yo) {
            System.arraycopy(x, xo, y, yo, n);
        }
        fwht(y, yo, n);
        multiply(y, yo, post, 0, y, yo, n);
    }

    /**
     * Σ (double) x[o+i]² in an order of the backend's choosing: each square is exact in double,
     * so it differs from the sequential sum by at most 2·(n−1)·2^-53 of the sum (finite inputs).
     * Non-finite inputs give a non-finite sum.
     */
    double sumOfSquaresDouble(float[] x, int o, int n);

    /**
     * Reads {@code bytes} bytes of {@code seg} from {@code off} sequentially (as floats, 4 accumulators)
     * and returns their sum: the memory-bandwidth probe the attention benchmark compares kernels with.
     */
    float readProbe(java.lang.foreign.MemorySegment seg, long off, long bytes);

    /** Name shown in logs and run metadata. */
    String name();
}
