package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * Per-layer state beyond the records that a cache needs to continue exactly (for example a
 * per-head mean subtracted from keys before storage). Each kind has a four-letter tag; a saved
 * cache stores it as a length-prefixed, tagged entry of its layer, so new kinds need no format
 * change. A saved cache carrying a tag that no registered handler knows is refused on load.
 */
public interface ExtraState {

    /** Four ASCII characters naming this state in the file, e.g. "KMU1". */
    String tag();

    /** The state of {@code layer} to save, or null when the layer has none. */
    byte[] save(LayeredKvCache cache, int layer);

    /** Restores state saved by {@link #save} into a freshly loaded cache; throws IllegalArgumentException if it does not fit. */
    void restore(LayeredKvCache cache, int layer, byte[] state);

    /** The handlers consulted when saving and loading: the key mean of centering caches, the key scale of kscale caches. */
    List<ExtraState> REGISTERED = new CopyOnWriteArrayList<>(List.of(new KeyMeanState(), new KeyScaleState()));

    /** Tag text as the int stored in files (little-endian ASCII). */
    static int tagInt(String tag) {
        if (tag.length() != 4 || !tag.chars().allMatch(c -> c >= 0x21 && c < 0x7f)) {
            throw new IllegalArgumentException("an extra-state tag is four printable ASCII characters, got '" + tag + "'");
        }
        return tag.charAt(0) | tag.charAt(1) << 8 | tag.charAt(2) << 16 | tag.charAt(3) << 24;
    }

    static String tagText(int t) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < 4; i++) {
            int c = t >>> (8 * i) & 0xff;
            b.append(c >= 0x21 && c < 0x7f ? (char) c : '?');
        }
        return b.toString();
    }
}
