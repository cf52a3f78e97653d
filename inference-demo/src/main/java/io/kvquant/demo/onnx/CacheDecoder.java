package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;

/** What every execution mode's decoder shares: its cache and its prefill chunk. */
abstract class CacheDecoder implements Decoder {
    protected final KvCache cache;
    protected final int prefillChunk;

    CacheDecoder(KvCache cache, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        this.cache = cache;
        this.prefillChunk = prefillChunk;
    }

    @Override
    public int prefillChunk() {
        return prefillChunk;
    }

    @Override
    public int position() {
        return cache.length(0);
    }

    @Override
    public KvCache cache() {
        return cache;
    }
}
