package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import java.util.function.IntConsumer;

/**
 * The KV hook in round-trip mode, the reference (quality simulation): before each step the dense past is what the {@link KvCache}
 * reconstructs ({@code read(layer, 0, len)}), after it the step's new keys and values (the last
 * positions of {@code present}) are appended to the cache. With a lossless cache ({@code full})
 * the logits equal plain ONNX Runtime decoding exactly. It holds a dense copy of the past
 * ({@link DenseMirror}) and hands ONNX Runtime a dense past every step, so it uses more memory
 * than plain ONNX Runtime decoding; the engine ({@link JavaAttentionDecoder}) is what saves it.
 */
public final class KvHookDecoder extends CacheDecoder {

    private final DecoderModel model;
    private final DenseMirror mirror;

    public KvHookDecoder(DecoderModel model, KvCache cache, int prefillChunk) {
        super(cache, prefillChunk);
        if (cache.layers() != model.layers() || cache.kvHeads() != model.kvHeads() || cache.headDim() != model.headDim()) {
            throw new IllegalArgumentException("cache shape " + cache.layers() + "x" + cache.kvHeads() + "x" + cache.headDim()
                    + " does not match the model's " + model.layers() + "x" + model.kvHeads() + "x" + model.headDim());
        }
        this.model = model;
        this.mirror = new DenseMirror(cache);
    }

    /** One model call: the dense past rebuilt from the cache, the new positions appended after. */
    @Override
    public float[] feed(long[] ids, int off, int len) {
        int past = cache.length(0);
        for (int l = 1; l < model.layers(); l++) {
            if (cache.length(l) != past) {
                throw new IllegalStateException("cache layers out of step: layer " + l + " holds " + cache.length(l)
                        + " tokens, layer 0 holds " + past);
            }
        }
        mirror.refresh(past);
        DecoderModel.Step s = model.run(ids, off, len, past, (layer, key, heads, offsets) -> {
            for (int h = 0; h < heads.length; h++) {
                heads[h] = key ? mirror.keys(layer, h) : mirror.values(layer, h);
                offsets[h] = 0;
            }
        });
        for (int l = 0; l < model.layers(); l++) {
            cache.append(l, s.keys()[l], s.values()[l], len);
        }
        return s.logits();
    }

    /** The dense mirror plus the dense past input buffers of ONNX Runtime: round-trip holds both. */
    @Override
    public long heldBytes() {
        return mirror.bytes() + model.inputBufferBytes();
    }

    /** Checks the mirror against a full read of the cache (for tests): true when identical. */
    boolean mirrorMatchesCache() {
        return mirror.matchesCache();
    }
}
