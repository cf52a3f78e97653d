package io.kvquant.cache;

/**
 * A model's key/value cache: layers x KV heads x tokens x head dim, append-only per layer.
 *
 * <p>Tensor layout used by every bulk method: for one layer, {@code [kvHeads][tokens][headDim]}
 * row-major in a flat {@code float[]} (the layout of an ONNX {@code present.i.key} tensor with
 * batch 1). A call that fails (wrong shape, NaN/Inf, out of range) throws
 * {@link IllegalArgumentException} naming the problem and leaves the cache exactly as before.
 */
public interface KvCache extends AutoCloseable {

    /** The configuration this cache was built from. */
    KvQuantConfig config();

    int layers();

    int kvHeads();

    int headDim();

    /** Tokens stored so far in {@code layer}. */
    int length(int layer);

    /**
     * Appends {@code tokens} new positions to {@code layer}.
     *
     * @param keys   {@code [kvHeads][tokens][headDim]}
     * @param values {@code [kvHeads][tokens][headDim]}
     */
    void append(int layer, float[] keys, float[] values, int tokens);

    /**
     * Reconstructs (dequantizes) positions {@code [from, to)} of {@code layer} into
     * {@code keysOut}/{@code valuesOut}, each {@code [kvHeads][to-from][headDim]}. This is the
     * round-trip path; decode attention reads the compressed form directly instead.
     */
    void read(int layer, int from, int to, float[] keysOut, float[] valuesOut);

    /** Exact bytes held by the cache's storage (codes, norms, scales, windows), all layers. */
    long bytesUsed();

    /** Bytes the same tokens would take in a dense fp16 cache (2 bytes x K and V x elements). */
    long fp16EquivalentBytes();

    /** Drops every token (keeps allocated pages for reuse where the implementation can). */
    void clear();

    /** Releases off-heap storage. The cache is unusable afterwards. */
    @Override
    void close();
}
