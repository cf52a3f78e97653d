package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The key mean μ of a centering cache ({@code center=on}): stored keys are k − μ, so a cache
 * continues exactly only with the same μ. Saved as little-endian fp32, [kvHeads][headDim].
 */
final class KeyMeanState implements ExtraState {

    static final String TAG = "KMU1";

    @Override
    public String tag() {
        return TAG;
    }

    @Override
    public byte[] save(LayeredKvCache cache, int layer) {
        return toBytes(cache.keyMean(layer));
    }

    @Override
    public void restore(LayeredKvCache cache, int layer, byte[] state) {
        cache.restoreKeyMean(layer, fromBytes(state));
    }

    /** The mean as bytes, or null for none. */
    static byte[] toBytes(float[] mu) {
        if (mu == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.allocate(4 * mu.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : mu) {
            b.putFloat(v);
        }
        return b.array();
    }

    static float[] fromBytes(byte[] state) {
        if (state.length % 4 != 0) {
            throw new IllegalArgumentException("a key mean of " + state.length + " bytes is not a whole number of floats");
        }
        float[] mu = new float[state.length / 4];
        ByteBuffer.wrap(state).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(mu);
        return mu;
    }
}
