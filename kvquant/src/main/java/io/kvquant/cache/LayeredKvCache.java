package io.kvquant.cache;

import java.lang.foreign.Arena;

/**
 * The {@link KvCache} implementation: one {@link LayerStore} per layer (dense, TurboQuant or
 * KIVI, boundary layers dense), all storage in one shared off-heap arena. Validates every call
 * before touching storage, so a rejected call leaves the cache exactly as it was.
 */
public final class LayeredKvCache implements KvCache {

    private final KvQuantConfig config;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final LayerStore[] stores;
    private final Arena arena;
    private boolean closed;

    LayeredKvCache(KvQuantConfig config, int layers, int kvHeads, int headDim, LayerStore[] stores, Arena arena) {
        this.config = config;
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.stores = stores;
        this.arena = arena;
    }

    @Override
    public KvQuantConfig config() {
        return config;
    }

    @Override
    public int layers() {
        return layers;
    }

    @Override
    public int kvHeads() {
        return kvHeads;
    }

    @Override
    public int headDim() {
        return headDim;
    }

    /**
     * Copies the stored records (codes and norm, the codec's record format) of tokens
     * {@code [from, to)} of one KV head into {@code dst}: for consumers that decode the codes
     * themselves (the in-graph dequantization mode). Only TurboQuant layers, only compressed
     * tokens (not the full-precision window).
     */
    public void copyRecords(int layer, boolean key, int head, int from, int to, byte[] dst, int dstOff) {
        checkOpen();
        checkLayer(layer);
        if (!(stores[layer] instanceof TurboStore ts)) {
            throw new IllegalArgumentException("layer " + layer + " is not a TurboQuant layer (" + config + ")");
        }
        ts.copyRecords(key, head, from, to, dst, dstOff);
    }

    /** The storage of one layer, for decode attention. */
    public LayerStore store(int layer) {
        checkOpen();
        checkLayer(layer);
        return stores[layer];
    }

    @Override
    public int length(int layer) {
        checkOpen();
        checkLayer(layer);
        return stores[layer].length();
    }

    @Override
    public void append(int layer, float[] keys, float[] values, int tokens) {
        checkOpen();
        checkLayer(layer);
        if (tokens < 1) {
            throw new IllegalArgumentException("tokens must be >= 1, got " + tokens);
        }
        long n = (long) kvHeads * tokens * headDim;
        if (keys == null || values == null) {
            throw new IllegalArgumentException("keys and values must not be null");
        }
        if (keys.length != n || values.length != n) {
            throw new IllegalArgumentException("layer " + layer + ": expected keys and values of " + n + " floats ([" + kvHeads
                    + " kv heads][" + tokens + " tokens][" + headDim + "]), got " + keys.length + " and " + values.length);
        }
        if ((long) stores[layer].length() + tokens > Integer.MAX_VALUE / 2) {
            throw new IllegalArgumentException("layer " + layer + ": cache would exceed " + Integer.MAX_VALUE / 2 + " tokens");
        }
        float limit = config.kind() == KvQuantConfig.Kind.FP16 || (config.kind() == KvQuantConfig.Kind.KIVI
                && !config.isBoundary(layer, layers)) ? 65504f : Float.MAX_VALUE;
        checkFinite(keys, "keys", layer, tokens, limit);
        checkFinite(values, "values", layer, tokens, limit);
        if (config.kind() == KvQuantConfig.Kind.TURBO && !config.isBoundary(layer, layers)) {
            checkNorms(keys, "keys", layer, tokens);
            checkNorms(values, "values", layer, tokens);
        }
        stores[layer].append(keys, values, tokens);
    }

    private void checkFinite(float[] x, String what, int layer, int tokens, float limit) {
        for (int i = 0; i < x.length; i++) {
            if (!Float.isFinite(x[i]) || Math.abs(x[i]) > limit) {
                int head = i / (tokens * headDim);
                int tok = (i / headDim) % tokens;
                throw new IllegalArgumentException("layer " + layer + " " + what + ": " + x[i] + " at kv head " + head
                        + ", token " + tok + ", channel " + i % headDim
                        + (Float.isFinite(x[i]) ? " exceeds the fp16 range of this cache" : " (NaN and infinite values are rejected)"));
            }
        }
    }

    /** TurboQuant stores each vector's norm in fp16: reject vectors it cannot represent, up front. */
    private void checkNorms(float[] x, String what, int layer, int tokens) {
        for (int v = 0; v < kvHeads * tokens; v++) {
            double s = 0;
            for (int j = 0; j < headDim; j++) {
                double e = x[v * headDim + j];
                s += e * e;
            }
            if (Math.sqrt(s) > 65504) {
                throw new IllegalArgumentException("layer " + layer + " " + what + ": the vector at kv head " + v / tokens
                        + ", token " + v % tokens + " has norm " + (float) Math.sqrt(s)
                        + ", beyond the fp16 range (65504) TurboQuant stores norms in");
            }
        }
    }

    @Override
    public void read(int layer, int from, int to, float[] keysOut, float[] valuesOut) {
        checkOpen();
        checkLayer(layer);
        int len = stores[layer].length();
        if (from < 0 || to > len || from > to) {
            throw new IllegalArgumentException("layer " + layer + ": range [" + from + ", " + to + ") is outside the "
                    + len + " stored tokens");
        }
        long n = (long) kvHeads * (to - from) * headDim;
        if (keysOut.length < n || valuesOut.length < n) {
            throw new IllegalArgumentException("output arrays need " + n + " floats, got " + keysOut.length + " and " + valuesOut.length);
        }
        stores[layer].read(from, to, keysOut, valuesOut);
    }

    @Override
    public long bytesUsed() {
        long b = 0;
        for (LayerStore s : stores) {
            b += s.bytesUsed();
        }
        return b;
    }

    /** Off-heap and window bytes reserved (pages are allocated whole). */
    public long bytesAllocated() {
        long b = 0;
        for (LayerStore s : stores) {
            b += s.bytesAllocated();
        }
        return b;
    }

    @Override
    public long fp16EquivalentBytes() {
        long tokens = 0;
        for (LayerStore s : stores) {
            tokens += s.length();
        }
        return tokens * kvHeads * headDim * 2L * 2L;
    }

    /** Bytes per token over all layers, both K and V (0 when empty). */
    public double bytesPerToken() {
        long tokens = 0;
        for (LayerStore s : stores) {
            tokens += s.length();
        }
        return tokens == 0 ? 0 : (double) bytesUsed() * layers / tokens;
    }

    @Override
    public void clear() {
        checkOpen();
        for (LayerStore s : stores) {
            s.clear();
        }
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            for (LayerStore s : stores) {
                s.close();
            }
            arena.close();
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the KV cache is closed");
        }
    }

    private void checkLayer(int layer) {
        if (layer < 0 || layer >= layers) {
            throw new IllegalArgumentException("layer " + layer + " is outside [0, " + layers + ")");
        }
    }

    @Override
    public String toString() {
        return "KvCache[" + config + ", " + layers + " layers x " + kvHeads + " kv heads x " + headDim + "]";
    }
}
