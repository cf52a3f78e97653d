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
                    case TURBO -> new TurboStore(arena, kvHeads, headDim, keyCodec(cfg, headDim, l), valueCodecs(cfg, headDim, l),
                            cfg.window(), cfg.pageTokens(), cfg.windowBits() == 16, cfg.mid(),
                            cfg.mid() > 0 ? midCodec(cfg, headDim, l, true) : null, cfg.mid() > 0 ? midCodec(cfg, headDim, l, false) : null);
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
     * rotation; the layer's own bits where a {@code layers=} override gives them, trimmed as
     * {@link #codeBits} says).
     */
    public static VectorCodec keyCodec(KvQuantConfig cfg, int headDim, int layer) {
        return Codecs.turbo(headDim, codeBits(cfg, headDim, layer, true), cfg.keyQjl(),
                cfg.rotation(), cfg.qjlKind(), cfg.seed() * 1_000_003L + layer * 2L, cfg.normCorrection());
    }

    /**
     * The key ({@code key}) or value codec of the middle tier ({@code mid=}) of {@code layer}:
     * {@link KvQuantConfig#layerMidBits} bits, untrimmed, with its own rotation seed.
     */
    public static VectorCodec midCodec(KvQuantConfig cfg, int headDim, int layer, boolean key) {
        return Codecs.turbo(headDim, cfg.layerMidBits(layer, key), key ? cfg.keyQjl() : cfg.valueQjl(), cfg.rotation(),
                cfg.qjlKind(), cfg.seed() * 1_000_003L + layer * 2L + (key ? 0 : 1) + 500_009L, cfg.normCorrection());
    }

    /**
     * The value codecs of a TurboQuant layer, one per value rotation ({@code vrot=}): the first is
     * {@link #valueCodec}, the others the same codec with other rotation seeds. Token t's value
     * record uses number (t / {@link KvQuantConfig#VALUE_ROTATION_BLOCK}) mod their count.
     */
    public static VectorCodec[] valueCodecs(KvQuantConfig cfg, int headDim, int layer) {
        VectorCodec[] vcs = new VectorCodec[cfg.valueRotations()];
        for (int k = 0; k < vcs.length; k++) {
            vcs[k] = valueCodec(cfg, headDim, layer, k);
        }
        return vcs;
    }

    /** The value codec a TurboQuant cache of {@code cfg} uses for {@code layer} (its first value rotation). */
    public static VectorCodec valueCodec(KvQuantConfig cfg, int headDim, int layer) {
        return valueCodec(cfg, headDim, layer, 0);
    }

    /** Value rotation {@code k}'s codec: the same bits and rotation kind, its own seed. */
    private static VectorCodec valueCodec(KvQuantConfig cfg, int headDim, int layer, int k) {
        return Codecs.turbo(headDim, codeBits(cfg, headDim, layer, false), cfg.valueQjl(), cfg.rotation(), cfg.qjlKind(),
                cfg.seed() * 1_000_003L + layer * 2L + 1 + 700_001L * k, cfg.normCorrection());
    }

    /**
     * The code bits per coordinate the key ({@code key}) or value codec of {@code layer} spends.
     * Normally the layer's nominal bits b. With a {@code trim=} mode (the presets' default:
     * {@code v}, chosen by measurement: docs/quality.md) and a full-precision window, a record (codes plus the fp16 norm) is held to
     * {@code b + 1/8} bits per element in whole bytes: what it costs at head dim 128, where the norm
     * is 1/8 bit. Below d = 128 the norm costs more (1/4 bit at d = 64) and the codec gives up the
     * difference in code bits: {@code kv} trims keys and values alike (3.5 → 3.375 at d = 64:
     * 24 coordinates at 4 bits and 40 at 3, 29-byte records instead of 30), {@code v} keeps the keys
     * whole and takes the keys' share from the values too (3.25: 28-byte value records). Either way
     * the window's cost fits at long context: at d = 64 and 16K tokens {@code turbo3.5} holds 3.74
     * bits per element instead of 3.86. (Keys carry most of the attention error, so {@code v} costs
     * less: on the Jargon File {@code kv} raised the KL by 18%, {@code v} left it unchanged.) At d ≥ 128, for QJL codecs and without a window, nothing changes.
     */
    public static double codeBits(KvQuantConfig cfg, int headDim, int layer, boolean key) {
        double kb = cfg.layerKeyBits(layer);
        double vb = cfg.layerValueBits(layer);
        double bits = key ? kb : vb;
        if (cfg.trim() == KvQuantConfig.Trim.OFF || cfg.window() == 0 || (key ? cfg.keyQjl() : cfg.valueQjl())) {
            return bits;
        }
        if (cfg.trim() == KvQuantConfig.Trim.V && !cfg.keyQjl()) {
            if (key) {
                return bits;
            }
            long budget = budgetBits(kb, headDim) + budgetBits(vb, headDim) - recordBits(headDim, (long) Math.rint(kb * headDim));
            return fit(headDim, vb, budget);
        }
        return fit(headDim, bits, budgetBits(bits, headDim));
    }

    /** Code bits per coordinate for nominal {@code bits} at head dim {@code headDim}, trimmed as {@code cfg} says ({@code trim=kv}). */
    public static double codeBits(KvQuantConfig cfg, int headDim, double bits, boolean qjl) {
        if (cfg.trim() == KvQuantConfig.Trim.OFF || cfg.window() == 0 || qjl) {
            return bits;
        }
        return fit(headDim, bits, budgetBits(bits, headDim));
    }

    private static long budgetBits(double bits, int headDim) {
        return (long) Math.floor((bits + 0.125) * headDim + 1e-9);
    }

    /** The most code bits (≤ the nominal) whose record fits {@code budget} bits. */
    private static double fit(int headDim, double bits, long budget) {
        long nominal = (long) Math.rint(bits * headDim);
        if (recordBits(headDim, nominal) <= budget) {
            return bits;
        }
        for (long c = Math.min(nominal, budget - 16); c >= headDim; c--) {
            if (recordBits(headDim, c) <= budget) {
                return c / headDim + (double) (c % headDim) / headDim;
            }
        }
        return bits;
    }

    /** Bits of a TurboQuant_mse record with {@code codeBits} code bits over d coordinates (segments byte-aligned). */
    private static long recordBits(int d, long codeBits) {
        long lo = codeBits / d;
        long hi = codeBits % d;
        return 8 * (2 + (hi * (lo + 1) + 7) / 8 + ((d - hi) * lo + 7) / 8);
    }
}
