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

    /** Size of the per-query state array for {@link #prepareQuery}. */
    int queryStateSize();

    /** Prepares query q[qo..qo+headDim) for scoring against KV head {@code head}. */
    void prepareQuery(int head, float[] q, int qo, float[] state);

    /** out[oo + t - from] = ⟨q, k_t⟩ for t in [from, to), KV head {@code head}. */
    void scores(int head, float[] state, int from, int to, float[] out, int oo);

    /** Size of the value accumulator. */
    int accumulatorSize();

    /**
     * acc += Σ_t p[po + t - from] · v_t for t in [from, to), KV head {@code head}, in the store's
     * internal domain (the accumulator must start zeroed).
     */
    void accumulate(int head, float[] p, int po, int from, int to, float[] acc);

    /** Converts the accumulator to the output vector out[oo..oo+headDim). */
    void finish(int head, float[] acc, float[] out, int oo);
}
