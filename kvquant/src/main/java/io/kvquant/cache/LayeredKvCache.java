package io.kvquant.cache;

import java.lang.foreign.Arena;

/**
 * The {@link KvCache} implementation: one {@link LayerStore} per layer (dense, TurboQuant or
 * KIVI, boundary layers dense), all storage in one shared off-heap arena. Validates every call
 * before touching storage, so a rejected call leaves the cache exactly as it was.
 *
 * <p><b>Key centering</b> ({@code center=on}): for each layer and KV head the cache keeps a mean
 * key μ, estimated from the first chunk appended to that layer (the mean of its tokens' keys,
 * per channel, where that mean is stable across the chunk: see {@link #mean}) and frozen from then on; every key is stored as k − μ, whatever the store.
 * Attention reads the stores directly, so a query q scores ⟨q, k_t − μ⟩ = ⟨q, k_t⟩ − ⟨q, μ⟩:
 * every score of that query, over quantized tokens and full-precision window alike, moves by
 * the same constant, and softmax is invariant to a constant shift, so attention is unchanged
 * exactly. The condition is that every token of a layer and head is centered with the same μ —
 * hence μ is frozen after the first append, and {@link #restoreKeyMean} refuses to change a mean
 * that is set. What centering buys: the quantizers normalize each vector, so a large component
 * shared by all keys (constant key biases, as in Qwen2's projections) would eat their range; the
 * centered keys are small. {@link #read} adds μ back, so reconstructed keys estimate the
 * originals. Values are not centered (their mean would have to be added to attention outputs).
 *
 * <p><b>Key scaling</b> ({@code kscale}, TurboQuant layers): keys are also divided by a per-layer,
 * per-channel power-of-two scale s (from the first chunk, frozen; how: the private {@code scale}) and the store
 * multiplies every query by s ({@code TurboStore.prepareQuery}): ⟨q ∘ s, (k − μ) ⊘ s⟩ = ⟨q, k − μ⟩
 * bit for bit, while the quantizer, which spreads its error over the channels in proportion to the
 * key's norm, loses less on keys whose spread is dominated by a few channels.
 */
public final class LayeredKvCache implements KvCache {

    private final KvQuantConfig config;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final LayerStore[] stores;
    private final Arena arena;
    /** Per layer: the frozen key mean [kvHeads][headDim], or null before the layer's first append (centering only). */
    private final float[][] keyMean;
    /** Per layer: the frozen per-channel key scale [headDim], or null before the layer's first append (kscale only). */
    private final float[][] keyScale;
    private boolean closed;

    LayeredKvCache(KvQuantConfig config, int layers, int kvHeads, int headDim, LayerStore[] stores, Arena arena) {
        this.config = config;
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.stores = stores;
        this.arena = arena;
        this.keyMean = new float[layers][];
        this.keyScale = new float[layers][];
    }

    /** True when keys are stored centered on a per-layer, per-head mean ({@code center=on}). */
    public boolean centered() {
        return config.center();
    }

    /**
     * The key mean of {@code layer} ([kvHeads][headDim], a copy), or null when the cache does
     * not center keys or the layer has not been appended to yet. With {@link #restoreKeyMean},
     * what a saved cache must keep besides its stores' pages.
     */
    public float[] keyMean(int layer) {
        checkOpen();
        checkLayer(layer);
        return keyMean[layer] == null ? null : keyMean[layer].clone();
    }

    /**
     * Sets the key mean of {@code layer} when restoring a saved cache (its stored keys were
     * centered with it). Refused if the cache does not center keys, if the mean is already set
     * (changing it would break the exactness condition), or if the shape is wrong.
     */
    public void restoreKeyMean(int layer, float[] mean) {
        checkOpen();
        checkLayer(layer);
        if (!config.center()) {
            throw new IllegalArgumentException("this cache (" + config + ") does not center keys: no key mean to restore");
        }
        if (mean == null || mean.length != kvHeads * headDim) {
            throw new IllegalArgumentException("layer " + layer + ": a key mean has " + kvHeads * headDim + " floats ([" + kvHeads
                    + " kv heads][" + headDim + "]), got " + (mean == null ? "null" : mean.length));
        }
        for (float v : mean) {
            if (!Float.isFinite(v)) {
                throw new IllegalArgumentException("layer " + layer + ": the key mean holds " + v);
            }
        }
        if (keyMean[layer] != null) {
            throw new IllegalArgumentException("layer " + layer + " already has a key mean; every key of a layer must be "
                    + "centered with the same mean");
        }
        keyMean[layer] = mean.clone();
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
        if (key && config.center()) {
            throw new IllegalArgumentException("the stored key codes are centered (center=on in '" + config + "'); a consumer "
                    + "that decodes them itself must use center=off");
        }
        if (key && config.keyScale() > 0) {
            throw new IllegalArgumentException("the stored key codes are scaled per channel (kscale in '" + config + "'); a "
                    + "consumer that decodes them itself must use kscale=off");
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
        KvQuantConfig.Kind kind = config.layerKind(layer, layers);
        float limit = kind == KvQuantConfig.Kind.FP16 || kind == KvQuantConfig.Kind.KIVI
                || (kind == KvQuantConfig.Kind.TURBO && config.windowBits() == 16 && config.window() > 0) ? 65504f : Float.MAX_VALUE;
        checkFinite(keys, "keys", layer, tokens, limit);
        checkFinite(values, "values", layer, tokens, limit);
        float[] mean = keyMean[layer];
        float[] stored = keys;
        if (config.center()) {
            if (mean == null) {
                mean = mean(keys, tokens);
            }
            stored = centered(keys, mean, tokens);
            checkFinite(stored, "centered keys", layer, tokens, limit);
        }
        float[] scale = keyScale[layer];
        boolean scaling = config.keyScale() > 0 && kind == KvQuantConfig.Kind.TURBO;
        if (scaling) {
            if (scale == null) {
                // estimated on the layer's first chunk; a layer that holds tokens without a scale (restored
                // from a cache saved without one) keeps s = 1, as its stored keys were not scaled
                scale = stores[layer].length() == 0 ? scale(stored, tokens) : ones();
            }
            stored = scaled(stored, scale, tokens, stored == keys);
            checkFinite(stored, "scaled keys", layer, tokens, limit);
        }
        if (kind == KvQuantConfig.Kind.TURBO) {
            checkNorms(stored, config.center() ? "centered keys" : "keys", layer, tokens);
            checkNorms(values, "values", layer, tokens);
        }
        stores[layer].append(stored, values, tokens);
        if (config.center() && keyMean[layer] == null) {
            keyMean[layer] = mean; // frozen: every later key of this layer is centered with it
        }
        if (scaling && keyScale[layer] == null) {
            keyScale[layer] = scale; // frozen: every later key of this layer is divided by it, every query multiplied
            ((TurboStore) stores[layer]).queryScale(scale);
        }
    }

    /**
     * The per-channel key scale of {@code layer} ([headDim], a copy), or null when the cache does
     * not scale keys ({@code kscale=off}, or a layer that is not TurboQuant) or the layer has not
     * been appended to yet. Keys are stored as (k − μ) ⊘ s and queries multiplied by s.
     */
    public float[] keyScale(int layer) {
        checkOpen();
        checkLayer(layer);
        return keyScale[layer] == null ? null : keyScale[layer].clone();
    }

    /**
     * The records of {@code layer}'s middle tier ({@code mid=}) as saved by a cache file: keys then
     * values, [head][token][record bytes], for the tokens the tier holds now; null when the layer
     * has no middle tier or it holds no token.
     */
    public byte[] midRecords(int layer) {
        checkOpen();
        checkLayer(layer);
        return stores[layer] instanceof TurboStore ts ? ts.exportMidRecords() : null;
    }

    /** Bytes of a key ({@code key}) or value record of {@code layer}'s middle tier; 0 without one. */
    public int midRecordBytes(int layer, boolean key) {
        checkOpen();
        checkLayer(layer);
        if (stores[layer] instanceof TurboStore ts && ts.midTokens() > 0) {
            return (key ? ts.midKeyCodec() : ts.midValueCodec()).recordBytes();
        }
        return 0;
    }

    /**
     * Restores {@code layer} from a saved cache whose layer has a middle tier: {@code n} raw
     * records, then the first {@code midUse} middle-tier records of {@code midRecords} (as
     * {@link #midRecords} gave them), then {@code w} decoded window tokens; see
     * {@link LayerStore#importRecords}. Refused if the layer has no middle tier or the sizes differ.
     */
    public void importTiers(int layer, java.lang.foreign.MemorySegment k, long kOff, java.lang.foreign.MemorySegment v, long vOff,
                            int n, byte[] midRecords, int midUse, float[] wk, float[] wv, int w) {
        checkOpen();
        checkLayer(layer);
        if (!(stores[layer] instanceof TurboStore ts) || ts.midTokens() == 0) {
            throw new IllegalArgumentException("layer " + layer + " of this cache (" + config + ") has no middle tier: no "
                    + "middle-tier records to restore");
        }
        try {
            ts.importTiers(k, kOff, v, vOff, n, midRecords, midUse, wk, wv, w);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("layer " + layer + ": " + e.getMessage());
        }
    }

    /**
     * Sets the key scale of {@code layer} when restoring a saved cache (its stored keys were
     * divided by it). Refused if the layer does not scale keys, if the scale is already set, or if
     * it is not {@code headDim} positive finite floats.
     */
    public void restoreKeyScale(int layer, float[] scale) {
        checkOpen();
        checkLayer(layer);
        if (!(config.keyScale() > 0 && config.layerKind(layer, layers) == KvQuantConfig.Kind.TURBO)) {
            throw new IllegalArgumentException("layer " + layer + " of this cache (" + config + ") does not scale keys: no key "
                    + "scale to restore");
        }
        if (scale == null || scale.length != headDim) {
            throw new IllegalArgumentException("layer " + layer + ": a key scale has " + headDim + " floats, got "
                    + (scale == null ? "null" : scale.length));
        }
        for (float v : scale) {
            if (!(Float.isFinite(v) && v > 0)) {
                throw new IllegalArgumentException("layer " + layer + ": the key scale holds " + v);
            }
        }
        if (keyScale[layer] != null) {
            throw new IllegalArgumentException("layer " + layer + " already has a key scale; every key of a layer must be "
                    + "scaled with the same scale");
        }
        keyScale[layer] = scale.clone();
        ((TurboStore) stores[layer]).queryScale(keyScale[layer]);
    }

    /** Bounds of a channel's key scale, relative to the channels' geometric mean: 2^±3. */
    static final int MAX_LOG2_SCALE = 3;

    /**
     * The per-channel key scale of a layer from its first chunk's (centered) keys, over all KV heads:
     * s_j = (r_j / g)^α rounded to a power of two, r_j the RMS of channel j over the chunk (averaged
     * with its rotary partner j ± d/2, so that a pair whose energy turns from one channel to the other
     * later keeps one scale), g their geometric mean and α the setting's exponent; clamped to [1/8, 8]. Why it pays: the
     * rotation spreads a key's error evenly over the channels, in proportion to its norm, so the
     * error of a score is ∝ ‖k ⊘ s‖·‖q ∘ s‖; with a few dominant channels, dividing them down
     * shrinks the first factor more than the query's growth costs (for isotropic queries, α = ½
     * minimises the product's expectation). Any fixed s keeps attention exact: ⟨q ∘ s, k ⊘ s⟩ = ⟨q, k⟩.
     */
    private float[] scale(float[] keys, int tokens) {
        float[] s = new float[headDim];
        java.util.Arrays.fill(s, 1f);
        if (tokens < MIN_MEAN_TOKENS) {
            return s;
        }
        double[] r = new double[headDim];
        for (int v = 0; v < kvHeads * tokens; v++) {
            for (int j = 0; j < headDim; j++) {
                double e = keys[v * headDim + j];
                r[j] += e * e;
            }
        }
        double[] rr = new double[headDim];
        double max = 0;
        for (int j = 0; j < headDim; j++) {
            int p = headDim % 2 == 0 ? (j + headDim / 2) % headDim : j;
            rr[j] = Math.sqrt((r[j] + r[p]) / 2);

            max = Math.max(max, rr[j]);
        }
        if (max == 0) {
            return s;
        }
        double logMean = 0;
        for (int j = 0; j < headDim; j++) {
            rr[j] = Math.max(rr[j], max * 1e-6);
            logMean += Math.log(rr[j]);
        }
        double g = Math.exp(logMean / headDim);
        for (int j = 0; j < headDim; j++) {
            // a power of two: k ⊘ s and q ∘ s are then exact in floating point (and in the fp16 window),
            // so scores are bit-identical and read() gives the stored keys back bit for bit
            double e = Math.rint(config.keyScale() * Math.log(rr[j] / g) / Math.log(2));
            s[j] = (float) Math.scalb(1.0, (int) Math.max(-MAX_LOG2_SCALE, Math.min(MAX_LOG2_SCALE, e)));
        }
        return s;
    }

    private float[] ones() {
        float[] s = new float[headDim];
        java.util.Arrays.fill(s, 1f);
        return s;
    }

    private float[] scaled(float[] keys, float[] s, int tokens, boolean copy) {
        float[] c = copy ? new float[keys.length] : keys;
        for (int v = 0; v < kvHeads * tokens; v++) {
            for (int j = 0; j < headDim; j++) {
                c[v * headDim + j] = keys[v * headDim + j] / s[j];
            }
        }
        return c;
    }

    /** Fewest tokens in a layer's first chunk for its key mean to be estimated (else the mean is 0: no centering). */
    static final int MIN_MEAN_TOKENS = 16;
    /**
     * A channel's mean is used only if the means of the chunk's two halves differ by at most this
     * share of it. For a component turning at θ per position, the halves of a T-token chunk differ
     * by about θT/2 of it, so 0.02 admits θ ≤ 0.04/T: over 25 chunk lengths of context the frozen
     * mean stays within one radian of the component. With per-token noise σ, the halves' means
     * differ by about 2σ/√T, so only components above roughly 6σ (for T = 256) pass: strong,
     * constant components — outliers — are centered, ordinary channels are left alone (measured:
     * with 0.25, ordinary channels were centered too and the bundled model's KL at window=0 rose 10–27%).
     */
    static final double STABLE_SHARE = 0.02;

    /**
     * Per-head key means of {@code [kvHeads][tokens][headDim]} keys, channel by channel, kept only
     * where they are stable: the means of the chunk's first and second halves must agree within
     * {@link #STABLE_SHARE} of the mean. Keys arrive after the rotary embedding, so a constant
     * component of the projection turns with position at its pair's frequency: on the lowest
     * frequencies it is nearly constant over the context and centering removes it; on a channel that
     * turns noticeably within the first chunk, a frozen mean would be wrong at later positions (it
     * could double the component), so that channel is not centered. Any fixed μ keeps attention
     * exact; this rule only decides where centering pays.
     */
    private float[] mean(float[] keys, int tokens) {
        float[] mu = new float[kvHeads * headDim];
        if (tokens < MIN_MEAN_TOKENS) {
            return mu;
        }
        int half = tokens / 2;
        double[] s1 = new double[headDim];
        double[] s2 = new double[headDim];
        for (int h = 0; h < kvHeads; h++) {
            java.util.Arrays.fill(s1, 0);
            java.util.Arrays.fill(s2, 0);
            for (int t = 0; t < tokens; t++) {
                int o = (h * tokens + t) * headDim;
                double[] s = t < half ? s1 : s2;
                for (int j = 0; j < headDim; j++) {
                    s[j] += keys[o + j];
                }
            }
            for (int j = 0; j < headDim; j++) {
                double m = (s1[j] + s2[j]) / tokens;
                double d = s1[j] / half - s2[j] / (tokens - half);
                mu[h * headDim + j] = Math.abs(d) <= STABLE_SHARE * Math.abs(m) ? (float) m : 0f;
            }
        }
        return mu;
    }

    private float[] centered(float[] keys, float[] mu, int tokens) {
        float[] c = new float[keys.length];
        for (int h = 0; h < kvHeads; h++) {
            for (int t = 0; t < tokens; t++) {
                int o = (h * tokens + t) * headDim;
                for (int j = 0; j < headDim; j++) {
                    c[o + j] = keys[o + j] - mu[h * headDim + j];
                }
            }
        }
        return c;
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
        read(layer, from, to, keysOut, valuesOut, false);
    }

    /**
     * As {@link #read}, but tokens in a middle tier read back as the records they become on leaving
     * it ({@link LayerStore#blockTokens}): how a cache restored from prefix blocks reads them.
     */
    public void readAsRecords(int layer, int from, int to, float[] keysOut, float[] valuesOut) {
        read(layer, from, to, keysOut, valuesOut, true);
    }

    private void read(int layer, int from, int to, float[] keysOut, float[] valuesOut, boolean asRecords) {
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
        if (asRecords && stores[layer] instanceof TurboStore ts) {
            ts.readAsRecords(from, to, keysOut, valuesOut);
        } else {
            stores[layer].read(from, to, keysOut, valuesOut);
        }
        float[] ks = keyScale[layer];
        if (ks != null) {
            for (int v = 0; v < kvHeads * (to - from); v++) {
                for (int j = 0; j < headDim; j++) {
                    keysOut[v * headDim + j] *= ks[j];
                }
            }
        }
        float[] mu = keyMean[layer];
        if (mu != null) {
            int count = to - from;
            for (int h = 0; h < kvHeads; h++) {
                for (int t = 0; t < count; t++) {
                    int o = (h * count + t) * headDim;
                    for (int j = 0; j < headDim; j++) {
                        keysOut[o + j] += mu[h * headDim + j];
                    }
                }
            }
        }
    }

    @Override
    public long bytesUsed() {
        long b = 0;
        for (LayerStore s : stores) {
            b += s.bytesUsed();
        }
        for (float[] mu : keyMean) {
            b += mu == null ? 0 : 4L * mu.length; // the key means (fp32) are part of what the cache holds
        }
        for (float[] ks : keyScale) {
            b += ks == null ? 0 : 4L * ks.length; // and the key scales
        }
        return b;
    }

    /** Off-heap, window and key-mean bytes reserved (pages are allocated whole). */
    public long bytesAllocated() {
        long b = 0;
        for (LayerStore s : stores) {
            b += s.bytesAllocated();
        }
        for (float[] mu : keyMean) {
            b += mu == null ? 0 : 4L * mu.length; // held too (kv_bytes counts everything held)
        }
        for (float[] ks : keyScale) {
            b += ks == null ? 0 : 4L * ks.length;
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
        java.util.Arrays.fill(keyMean, null); // a new sequence estimates its own means
        java.util.Arrays.fill(keyScale, null); // and scales
        for (LayerStore s : stores) {
            if (s instanceof TurboStore ts) {
                ts.queryScale(null);
            }
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
