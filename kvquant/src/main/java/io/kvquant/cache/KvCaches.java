package io.kvquant.cache;

import io.kvquant.codec.Codecs;
import io.kvquant.codec.VectorCodec;
import java.lang.foreign.Arena;

/** Creates caches from a {@link KvQuantConfig}. */
public final class KvCaches {

    private KvCaches() {
    }

    public static LayeredKvCache create(String spec, int layers, int kvHeads, int headDim) {
        return create(KvQuantConfig.parse(spec), layers, kvHeads, headDim);
    }

    public static LayeredKvCache create(KvQuantConfig cfg, int layers, int kvHeads, int headDim) {
        if (layers < 1 || kvHeads < 1 || headDim < 2) {
            throw new IllegalArgumentException("cache shape must be >= 1 layer, >= 1 kv head, head dim >= 2; got "
                    + layers + " x " + kvHeads + " x " + headDim);
        }
        if (cfg.needsCalibration()) {
            throw new IllegalArgumentException("'" + cfg + "' chooses per-layer bits with a calibration probe: resolve it "
                    + "first (BitAllocation.plan, or a command that runs the probe such as kvq eval)");
        }
        cfg.checkLayers(layers);
        Arena arena = Arena.ofShared();
        LayerStore[] stores = new LayerStore[layers];
        try {
            for (int l = 0; l < layers; l++) {
                stores[l] = switch (cfg.layerKind(l, layers)) {
                    case FULL -> new DenseStore(arena, kvHeads, headDim, false, cfg.pageTokens());
                    case FP16 -> new DenseStore(arena, kvHeads, headDim, true, cfg.pageTokens());
                    case TURBO -> new TurboStore(arena, kvHeads, headDim, keyCodec(cfg, headDim, l), valueCodec(cfg, headDim, l),
                            cfg.window(), cfg.pageTokens());
                    case KIVI -> new KiviStore(arena, kvHeads, headDim, (int) cfg.keyBits(), cfg.groupSize(), cfg.window(),
                            cfg.pageTokens());
                };
            }
        } catch (IllegalArgumentException e) {
            arena.close();
            throw new IllegalArgumentException("cannot build '" + cfg + "' for head dim " + headDim + ": " + e.getMessage(), e);
        }
        return new LayeredKvCache(cfg, layers, kvHeads, headDim, stores, arena);
    }

    /**
     * The key codec a TurboQuant cache of {@code cfg} uses for {@code layer} (same seed, same
     * rotation; the layer's own bits where a {@code layers=} override gives them).
     */
    public static VectorCodec keyCodec(KvQuantConfig cfg, int headDim, int layer) {
        return Codecs.turbo(headDim, cfg.layerKeyBits(layer), cfg.keyQjl(), cfg.rotation(), cfg.qjlKind(),
                cfg.seed() * 1_000_003L + layer * 2L, cfg.normCorrection());
    }

    /** The value codec a TurboQuant cache of {@code cfg} uses for {@code layer}. */
    public static VectorCodec valueCodec(KvQuantConfig cfg, int headDim, int layer) {
        return Codecs.turbo(headDim, cfg.layerValueBits(layer), cfg.valueQjl(), cfg.rotation(), cfg.qjlKind(),
                cfg.seed() * 1_000_003L + layer * 2L + 1, cfg.normCorrection());
    }
}
