package io.kvquant.persist;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayerStore;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.codec.VectorCodec;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.zip.CRC32C;

/**
 * How one layer's records look: the store kind, the bytes per key and value record, and a
 * fingerprint of the codecs (a fixed probe vector encoded by the layer's key and value codecs),
 * so that a cache saved by a build whose rotation, codebook or seed derivation differs is refused
 * instead of being decoded wrongly.
 */
record LayerLayout(int kind, int keyRecordBytes, int valueRecordBytes, long fingerprint) {

    static final int DENSE32 = 1;
    static final int DENSE16 = 2;
    static final int TURBO = 3;

    /** Options of the canonical config text this format saves completely (anything else is refused). */
    private static final List<String> SAVED_OPTIONS = List.of("window", "mid", "winbits", "boundary", "center", "kscale", "trim", "qjl", "sjl", "rot", "normfix",
            "seed", "page");
    private static final Map<String, Long> FINGERPRINTS = new ConcurrentHashMap<>();

    static String kindName(int kind) {
        return switch (kind) {
            case DENSE32 -> "fp32";
            case DENSE16 -> "fp16";
            case TURBO -> "turboquant";
            default -> "unknown kind " + kind;
        };
    }

    /** Null if caches of {@code cfg} can be saved and loaded exactly, else a one-line reason. */
    static String unsupported(KvQuantConfig cfg) {
        if (cfg.kind() == KvQuantConfig.Kind.KIVI) {
            return "KIVI caches cannot be saved (their keys are quantized in groups of tokens, not per-token records); "
                    + "use a turbo or fp16 cache";
        }
        String text = cfg.toString();
        String[] parts = text.split(",");
        for (int i = 1; i < parts.length; i++) {
            String name = parts[i].substring(0, Math.max(0, parts[i].indexOf('=')));
            if (!SAVED_OPTIONS.contains(name)) {
                return "cache config '" + text + "' has option '" + name + "' whose state this cache format does not save";
            }
        }
        return null;
    }

    /** The layout of layer {@code l} of {@code cache}; throws {@link CacheRefusedException} if it cannot be saved. */
    static LayerLayout of(LayeredKvCache cache, int l) throws CacheRefusedException {
        KvQuantConfig cfg = cache.config();
        String why = unsupported(cfg);
        LayerStore s = cache.store(l);
        if (why == null && !s.rawRecords()) {
            why = "layer " + l + " of '" + cfg + "' has no raw records to save";
        }
        if (why != null) {
            throw new CacheRefusedException(why);
        }
        int kind;
        long fp = 0;
        if (cfg.kind() == KvQuantConfig.Kind.FP16) {
            kind = DENSE16;
        } else if (cfg.kind() == KvQuantConfig.Kind.FULL || cfg.isBoundary(l, cache.layers())) {
            kind = DENSE32;
        } else {
            kind = TURBO;
            fp = fingerprint(cfg, cache.headDim(), l);
        }
        return new LayerLayout(kind, s.recordBytes(true), s.recordBytes(false), fp);
    }

    /** Encodes a fixed probe vector with the layer's key and value codecs; CRC32C of both records. */
    private static long fingerprint(KvQuantConfig cfg, int dim, int layer) {
        return fingerprint(cfg, dim, layer, false);
    }

    /** The fingerprint of a layer's codecs, or with {@code midTier} of its middle tier's codecs ({@link MidTierState}). */
    static long fingerprint(KvQuantConfig cfg, int dim, int layer, boolean midTier) {
        return FINGERPRINTS.computeIfAbsent(cfg + "|" + dim + "|" + layer + (midTier ? "|mid" : ""), k -> {
            VectorCodec kc = midTier ? KvCaches.midCodec(cfg, dim, layer, true) : KvCaches.keyCodec(cfg, dim, layer);
            // every value rotation's codec (vrot=), in order; the middle tier has one
            VectorCodec[] vcs = midTier ? new VectorCodec[] {KvCaches.midCodec(cfg, dim, layer, false)}
                    : KvCaches.valueCodecs(cfg, dim, layer);
            float[] probe = new float[dim];
            for (int j = 0; j < dim; j++) {
                probe[j] = (float) Math.sin(0.37 * j + 1.0) * (1 + j % 3);
            }
            try (Arena a = Arena.ofConfined()) {
                MemorySegment rk = a.allocate(kc.recordBytes());
                MemorySegment rv = a.allocate(vcs[0].recordBytes());
                kc.encode(probe, 0, rk, 0);
                CRC32C ck = new CRC32C();
                ck.update(rk.asByteBuffer());
                CRC32C cv = new CRC32C();
                for (VectorCodec vc : vcs) {
                    vc.encode(probe, 0, rv, 0);
                    cv.update(rv.asByteBuffer());
                }
                return ck.getValue() << 32 | cv.getValue();
            }
        });
    }

    /** Null when {@code found} (read from a saved cache) matches this layout, else a one-line reason. */
    String mismatch(int layer, LayerLayout found) {
        if (kind != found.kind || keyRecordBytes != found.keyRecordBytes || valueRecordBytes != found.valueRecordBytes) {
            return "layer " + layer + " holds " + kindName(found.kind) + " records of " + found.keyRecordBytes + "/"
                    + found.valueRecordBytes + " bytes, this cache expects " + kindName(kind) + " records of "
                    + keyRecordBytes + "/" + valueRecordBytes + " bytes";
        }
        if (fingerprint != found.fingerprint) {
            return "layer " + layer + " was encoded by codecs (rotation, codebook or seed) that differ from this build's";
        }
        return null;
    }

    /** Bytes of the records of {@code tokens} tokens over {@code heads} heads, keys and values. */
    long recordsBytes(int heads, int tokens) {
        return (long) heads * tokens * (keyRecordBytes + valueRecordBytes);
    }

    /** Writes records [from, to) of layer {@code l}: keys {@code [head][n][kRB]}, then values; returns bytes written. */
    long exportRecords(LayeredKvCache cache, int l, int from, int to, MemorySegment dst, long off) {
        LayerStore s = cache.store(l);
        int n = to - from;
        long o = off;
        for (int h = 0; h < cache.kvHeads(); h++) {
            s.exportRecords(true, h, from, to, dst, o);
            o += (long) n * keyRecordBytes;
        }
        for (int h = 0; h < cache.kvHeads(); h++) {
            s.exportRecords(false, h, from, to, dst, o);
            o += (long) n * valueRecordBytes;
        }
        return o - off;
    }
}
