package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;
import java.util.Arrays;

/**
 * The middle tier's records ({@code mid=}) of a TurboQuant layer, saved as the layer entry
 * {@code MID1}: a fingerprint of the tier's codecs (i64, see {@link LayerLayout}), the tokens it
 * holds (i32), and the records' bytes, keys then values, [head][token][record bytes]. The file's
 * decoded tokens after the layer's records cover these tokens too (so the layout of a layer is the
 * same with and without a middle tier), but a decoding cannot be encoded back to the same codes:
 * a load restores the tier from these records ({@link LayeredKvCache#importTiers}) and the window
 * from the decoded tokens after them.
 */
final class MidTierState {

    static final String TAG = "MID1";

    private MidTierState() {
    }

    /** The entry of {@code layer}, or null when it has no middle tier or the tier holds no token. */
    static byte[] save(LayeredKvCache cache, int layer) {
        byte[] rec = cache.midRecords(layer);
        if (rec == null) {
            return null;
        }
        int per = cache.kvHeads() * (cache.midRecordBytes(layer, true) + cache.midRecordBytes(layer, false));
        byte[] head = new Le.Writer().i64(LayerLayout.fingerprint(cache.config(), cache.headDim(), layer, true))
                .i32(rec.length / per).toBytes();
        byte[] out = Arrays.copyOf(head, head.length + rec.length);
        System.arraycopy(rec, 0, out, head.length, rec.length);
        return out;
    }

    /** A parsed entry: the tokens the saved tier held and their records. */
    record Saved(int tokens, byte[] records) {
    }

    /** Reads an entry of {@code layer}, refusing one written by other codecs or cut short. */
    static Saved read(LayeredKvCache cache, int layer, byte[] entry, String what) throws CacheRefusedException {
        Le.Reader r = new Le.Reader(java.lang.foreign.MemorySegment.ofArray(entry), 0, entry.length, what);
        long fp = r.i64();
        int tokens = r.i32();
        if (cache.midRecordBytes(layer, true) == 0) {
            throw new CacheRefusedException(what + " does not fit: layer " + layer + " has a middle tier in the file and none in '"
                    + cache.config() + "'");
        }
        if (fp != LayerLayout.fingerprint(cache.config(), cache.headDim(), layer, true)) {
            throw new CacheRefusedException(what + " does not fit: layer " + layer + "'s middle tier was written by codecs other "
                    + "than this kvquant's for '" + cache.config() + "'");
        }
        int per = cache.kvHeads() * (cache.midRecordBytes(layer, true) + cache.midRecordBytes(layer, false));
        if (tokens < 1 || (long) tokens * per != entry.length - 12L) {
            throw new CacheRefusedException(what + " is corrupted (layer " + layer + "'s middle-tier entry holds "
                    + (entry.length - 12) + " bytes for " + tokens + " tokens of " + per + ")");
        }
        return new Saved(tokens, Arrays.copyOfRange(entry, 12, entry.length));
    }
}
