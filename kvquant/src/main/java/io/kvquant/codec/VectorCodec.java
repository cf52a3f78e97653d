package io.kvquant.codec;

import java.lang.foreign.MemorySegment;

/**
 * A trained, immutable vector quantizer that writes one fixed-size record per vector and can
 * compute attention directly on records: inner products with an unquantized query
 * ({@link #prepareQuery} once, then {@link #score} per record) and weighted sums of records
 * ({@link #accumulate} per record, then {@link #finish} once). Implementations are thread-safe;
 * the caller owns the state and accumulator arrays.
 */
public interface VectorCodec {

    /** Vector dimension. */
    int dim();

    /** Bytes of one encoded vector, everything included (codes, norms, residual norms, signs). */
    int recordBytes();

    /** Real bits per element: {@code 8 · recordBytes() / dim()}. */
    default double bitsPerElement() {
        return 8.0 * recordBytes() / dim();
    }

    /**
     * Encodes x[xo..xo+dim) into dst at byte offset {@code off}.
     *
     * @throws IllegalArgumentException if a component is NaN or infinite, or the norm does not fit fp16
     */
    void encode(float[] x, int xo, MemorySegment dst, long off);

    /** Reconstructs the vector stored at {@code off} into out[oo..oo+dim). */
    void decode(MemorySegment src, long off, float[] out, int oo);

    /** Length of the per-query state array. */
    int queryStateSize();

    /**
     * Prepares query q[qo..qo+dim) for {@link #score} into state[so..so+queryStateSize()):
     * rotation, look-up tables, projections.
     */
    void prepareQuery(float[] q, int qo, float[] state, int so);

    /** Estimate of ⟨q, x⟩ for the record at {@code off}, read straight from its codes. */
    float score(float[] state, int so, MemorySegment src, long off);

    /** Length of the accumulator used by {@link #accumulate}. */
    int accumulatorSize();

    /**
     * acc[ao..) += w · x (in the codec's internal, e.g. rotated, domain) for the record at
     * {@code off}. The accumulator must start zeroed.
     */
    void accumulate(float w, MemorySegment src, long off, float[] acc, int ao);

    /** Converts the accumulator acc[ao..) to the output vector out[oo..oo+dim) (overwrites it). */
    void finish(float[] acc, int ao, float[] out, int oo);

    // ---- The feature form used by the cache's decode attention --------------------------------
    // Every codec's estimate is linear in a per-record feature vector f(x) in its internal
    // (rotated) domain: ⟨q, x̂⟩ = ⟨g(q), f(x)⟩ and Σ w·x̂ = finishFeatures(Σ w·f(x)). Attention
    // computes g(q) once per query, f(x) per record on the fly from the codes (never stored),
    // and uses SIMD dot products and axpys; with grouped-query attention one f(x) serves every
    // query head of the group.

    /** Length of f(x) and g(q). */
    int featureSize();

    /** g(q) for query q[qo..qo+dim) into out[oo..oo+featureSize). */
    void queryFeatures(float[] q, int qo, float[] out, int oo);

    /**
     * f(x) of the record at buf[off..off+recordBytes) into out[oo..oo+featureSize). The buffer
     * must have at least 8 readable bytes past the end of the record (word-wide code reads).
     */
    void features(byte[] buf, int off, float[] out, int oo);

    /**
     * Scores of one record for a group of queries: out[oo + i·os] = ⟨g_i, f(x)⟩ for i &lt; nq,
     * where g_i = g[go + i·gs ..]. Implementations fuse the code expansion with the products.
     */
    default void scoreMany(byte[] buf, int off, float[] g, int go, int gs, int nq, float[] out, int oo, int os) {
        float[] f = new float[featureSize()];
        features(buf, off, f, 0);
        for (int i = 0; i < nq; i++) {
            out[oo + i * os] = io.kvquant.simd.Simd.ops().dot(g, go + i * gs, f, 0, f.length);
        }
    }

    /**
     * Where the codes of a record sit, for kernels that compute features straight from the
     * record's bytes ({@link io.kvquant.simd.VectorOps#codeScores}); null when the record is not a
     * list of scaled table codes.
     */
    default io.kvquant.simd.CodeLayout codeLayout() {
        return null;
    }

    /** Turns Σ w·f(x) (acc[ao..ao+featureSize)) into Σ w·x̂ in out[oo..oo+dim). */
    void finishFeatures(float[] acc, int ao, float[] out, int oo);

    /** Short description, e.g. {@code mse(b=3,d=128,hadamard)}. */
    String describe();

    /** Checks x[xo..xo+n) for NaN/Inf and returns Σ x² in double. */
    static double checkedSumOfSquares(float[] x, int xo, int n) {
        if (x.length - xo < n || xo < 0) {
            throw new IllegalArgumentException("vector has " + Math.max(0, x.length - xo)
                    + " components from offset " + xo + ", expected dimension " + n);
        }
        double s = 0;
        for (int i = 0; i < n; i++) {
            float v = x[xo + i];
            if (!Float.isFinite(v)) {
                throw new IllegalArgumentException("component " + i + " is " + v + " (NaN or infinite values cannot be quantized)");
            }
            s += (double) v * v;
        }
        return s;
    }

    /**
     * (float) sqrt(checkedSumOfSquares(x, xo, n)), bit for bit, but with the sum taken by the
     * backend in any order: the reordered sum is within 2·(n−1)·2^-53 of the sequential one, so
     * when both ends of a wider interval round to the same float norm that is the sequential
     * sum's norm too (sqrt and the float rounding are monotone); otherwise, and for NaN/Inf
     * (reported by the checked sum), the sequential sum decides.
     */
    static float norm(io.kvquant.simd.VectorOps ops, float[] x, int xo, int n) {
        if (x.length - xo < n || xo < 0) {
            return (float) Math.sqrt(checkedSumOfSquares(x, xo, n)); // throws the dimension message
        }
        double fast = ops.sumOfSquaresDouble(x, xo, n);
        if (Double.isFinite(fast)) {
            double margin = fast * (n + 2) * 0x1p-50; // 8x the bound above
            float lo = (float) Math.sqrt(fast - margin);
            float hi = (float) Math.sqrt(fast + margin);
            if (lo == hi) {
                return lo;
            }
        }
        return (float) Math.sqrt(checkedSumOfSquares(x, xo, n));
    }

    /** Rounds a non-negative norm to fp16 and back, rejecting values beyond the fp16 range. */
    static float toFp16(float v, String what) {
        short h = Float.floatToFloat16(v);
        float r = Float.float16ToFloat(h);
        if (Float.isInfinite(r)) {
            throw new IllegalArgumentException(what + " " + v + " exceeds the fp16 range (max 65504)");
        }
        return r;
    }
}
