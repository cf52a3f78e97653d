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
}
