package io.kvquant.cache;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Fixed-size records in off-heap pages of {@code pageTokens} records each, growing a page at a
 * time; pages are kept on {@link #clear()} and reused. Token t lives in page t / pageTokens at
 * byte offset (t % pageTokens) · recordBytes.
 */
final class PagedRecords {

    private final Arena arena;
    private final int recordBytes;
    private final int pageTokens;
    private final List<MemorySegment> pages = new ArrayList<>();

    PagedRecords(Arena arena, int recordBytes, int pageTokens) {
        this.arena = arena;
        this.recordBytes = recordBytes;
        this.pageTokens = pageTokens;
    }

    int recordBytes() {
        return recordBytes;
    }

    int pageTokens() {
        return pageTokens;
    }

    /** Makes sure records [0, tokens) have storage. */
    void ensureCapacity(int tokens) {
        while ((long) pages.size() * pageTokens < tokens) {
            pages.add(arena.allocate((long) recordBytes * pageTokens, 64));
        }
    }

    MemorySegment page(int token) {
        return pages.get(token / pageTokens);
    }

    long offset(int token) {
        return (long) (token % pageTokens) * recordBytes;
    }

    long bytesAllocated() {
        return (long) pages.size() * pageTokens * recordBytes;
    }
}
