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

    /** Copies records [from, to) to {@code dst} at {@code off}, back to back (for saving a cache). */
    void copyOut(int from, int to, MemorySegment dst, long off) {
        for (int t = from; t < to; ) {
            int n = Math.min(to, (t / pageTokens + 1) * pageTokens) - t;
            MemorySegment.copy(page(t), offset(t), dst, off + (long) (t - from) * recordBytes, (long) n * recordBytes);
            t += n;
        }
    }

    /** Copies {@code n} records from {@code src} at {@code off} into records [at, at+n) (capacity ensured first). */
    void copyIn(MemorySegment src, long off, int at, int n) {
        ensureCapacity(at + n);
        for (int t = at; t < at + n; ) {
            int m = Math.min(at + n, (t / pageTokens + 1) * pageTokens) - t;
            MemorySegment.copy(src, off + (long) (t - at) * recordBytes, page(t), offset(t), (long) m * recordBytes);
            t += m;
        }
    }
}
