package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;

/**
 * What a saved cache must match to be loaded: the model file's SHA-256, the canonical cache
 * config text, and the cache geometry. Two caches with equal identities hold interchangeable
 * records.
 */
public record CacheIdentity(String modelSha256, String config, int layers, int kvHeads, int headDim) {

    public CacheIdentity {
        if (modelSha256 == null || !modelSha256.matches("[0-9a-f]{64}")) {
            throw new IllegalArgumentException("model sha256 must be 64 lower-case hex digits");
        }
    }

    /** The identity of {@code cache} for the model whose file hashes to {@code modelSha256}. */
    public static CacheIdentity of(String modelSha256, LayeredKvCache cache) {
        return new CacheIdentity(modelSha256, cache.config().toString(), cache.layers(), cache.kvHeads(), cache.headDim());
    }

    /** Null when {@code found} (read from a saved cache) matches this one, else a one-line reason. */
    public String mismatch(CacheIdentity found) {
        if (!modelSha256.equals(found.modelSha256)) {
            return "it was made for a different model (sha256 " + found.modelSha256.substring(0, 12) + "..., this model "
                    + modelSha256.substring(0, 12) + "...)";
        }
        if (!config.equals(found.config)) {
            return "it was made with cache config '" + found.config + "', this run uses '" + config + "'";
        }
        if (layers != found.layers || kvHeads != found.kvHeads || headDim != found.headDim) {
            return "its geometry " + found.layers + "x" + found.kvHeads + "x" + found.headDim + " (layers x kv heads x head dim)"
                    + " differs from this model's " + layers + "x" + kvHeads + "x" + headDim;
        }
        return null;
    }
}
