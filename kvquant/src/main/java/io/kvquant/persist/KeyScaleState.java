package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;

/**
 * The per-channel key scale s of a key-scaling cache ({@code kscale}): stored keys are (k − μ) ⊘ s
 * and queries are multiplied by s, so a cache continues exactly only with the same s. Saved as
 * little-endian fp32, [headDim]. A file without it (written before key scaling, or by a cache
 * without it) restores layers without a scale, and the cache then keeps s = 1 for them.
 */
final class KeyScaleState implements ExtraState {

    static final String TAG = "KSC1";

    @Override
    public String tag() {
        return TAG;
    }

    @Override
    public byte[] save(LayeredKvCache cache, int layer) {
        return KeyMeanState.toBytes(cache.keyScale(layer));
    }

    @Override
    public void restore(LayeredKvCache cache, int layer, byte[] state) {
        cache.restoreKeyScale(layer, KeyMeanState.fromBytes(state));
    }
}
