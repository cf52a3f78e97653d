package io.kvquant.cache;

/**
 * The storage of one layer (all KV heads) and the read operations decode attention needs.
 * Attention never asks for bulk dequantization: it prepares a query per head, gets scores for
 * a token range, and accumulates probability-weighted values, each store in its own format.
 * Implementations are safe for concurrent readers on different heads while no append runs.
 */
public interface LayerStore extends AutoCloseable {

    int kvHeads();

    int headDim();

    int length();

    /** Appends tokens ({@code [kvHeads][tokens][headDim]}); inputs already validated. Atomic on failure. */
    void append(float[] keys, float[] values, int tokens);

    /** Reconstructs positions [from, to) into {@code [kvHeads][to-from][headDim]} arrays. */
    void read(int from, int to, float[] keysOut, float[] valuesOut);

    long bytesUsed();

    long bytesAllocated();

    void clear();

    @Override
    void close();

    /** Size of one query's state for {@link #prepareQuery}. */
    int queryStateSize();

    /** Prepares query q[qo..qo+headDim) into state[so..so+queryStateSize()). */
    void prepareQuery(float[] q, int qo, float[] state, int so);

    /**
     * Scores of {@code nq} prepared queries (states back to back, queryStateSize() apart) against
     * KV head {@code head}: out[i·stride + t − from] = ⟨q_i, k_t⟩ for t in [from, to). Reading
     * each key once for all queries of a grouped-query group is the point.
     */
    void scores(int head, float[] states, int nq, int from, int to, float[] out, int stride);

    /** Size of one query's value accumulator. */
    int accumulatorSize();

    /**
     * For each query i < nq: acc[i·accumulatorSize() ..] += Σ_t p[i·stride + t − from] · v_t for t
     * in [from, to), KV head {@code head}, in the store's internal domain (start zeroed).
     */
    void accumulate(int head, float[] p, int stride, int nq, int from, int to, float[] acc);

    /** Converts one accumulator acc[ao..) to the output vector out[oo..oo+headDim). */
    void finish(float[] acc, int ao, float[] out, int oo);

    // ---- tile expansion, for the blocked prefill kernel (io.kvquant.attention) ----
    // A token's key (value) is stored in one of a store's forms (e.g. codes, or a full-precision
    // window); in each form the score is a dot product of a slice of the prepared query state
    // with a row of floats (and the value sum an axpy into a slice of the accumulator). Prefill
    // expands a tile of rows once and multiplies it with a whole block of queries.

    /** True if this store implements the expansion methods below. */
    default boolean expands() {
        return false;
    }

    /** End (exclusive, at most {@code to}) of the run of tokens from {@code from} stored in one form. */
    default int formEnd(int from, int to) {
        return to;
    }

    /** Width of the key rows of token {@code t}'s form. */
    default int keyWidth(int t) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    /** Where, in a prepared query state, the slice that meets {@link #keyWidth} rows of token t's form starts. */
    default int keyStateOffset(int t) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    /** Width of the value rows of token {@code t}'s form. */
    default int valueWidth(int t) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    /** Where, in an accumulator, the slice that sums {@link #valueWidth} rows of token t's form starts. */
    default int valueAccOffset(int t) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    /**
     * Rows of the keys of tokens [from, to) (one form) of KV head {@code head}: row t − from at
     * dst[(t − from)·ld ..), {@link #keyWidth} floats, such that the score of a prepared query is
     * the dot product of its state slice at {@link #keyStateOffset} with the row.
     */
    default void expandKeys(int head, int from, int to, float[] dst, int ld) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    /** Rows of the values of tokens [from, to) (one form), as {@link #expandKeys}; accumulate into the slice at {@link #valueAccOffset}. */
    default void expandValues(int head, int from, int to, float[] dst, int ld) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not expand tiles");
    }

    // ---- raw records, for saving and loading caches (io.kvquant.persist) ----

    /** True if this store can hand out and take back its raw records (false: KIVI). */
    default boolean rawRecords() {
        return false;
    }

    /** Tokens [0, recordTokens()) are held as fixed-size raw records; the rest, in a full-precision window. */
    default int recordTokens() {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no raw records");
    }

    /**
     * Tokens [0, blockTokens()) can be exported as records ({@link #exportRecords}): the records,
     * and in a TurboQuant store with a middle tier also the tier's tokens, as the records they
     * become on leaving it (for prefix blocks, whose content must not depend on when they were saved).
     */
    default int blockTokens() {
        return recordTokens();
    }

    /** Bytes of one token's record for one KV head (keys or values). */
    default int recordBytes(boolean key) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no raw records");
    }

    /**
     * Copies the raw records of tokens [from, to) of one head to {@code dst} at {@code off}, back to
     * back; {@code to} at most {@link #blockTokens()}.
     */
    default void exportRecords(boolean key, int head, int from, int to, java.lang.foreign.MemorySegment dst, long off) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no raw records");
    }

    /**
     * Appends {@code n} tokens given as raw records ({@code [head][n][recordBytes]} at kOff in
     * {@code k} and vOff in {@code v}, no re-encoding), then {@code w} tokens in full precision
     * ({@code [head][w][dim]}). The records stay records (read back exactly as saved), even where a
     * cache computing those tokens would still hold them in its window. Needs a
     * store holding no window tokens ({@code length() == recordTokens()}); atomic on failure.
     */
    default void importRecords(java.lang.foreign.MemorySegment k, long kOff, java.lang.foreign.MemorySegment v, long vOff,
                               int n, float[] winK, float[] winV, int w) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no raw records");
    }
}
