package io.kvquant.persist;

import io.kvquant.cache.LayerStore;
import io.kvquant.cache.LayeredKvCache;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/**
 * A whole compressed cache in one file (format in docs/cache-format.md): a header naming the
 * model, config and geometry, the token ids, optionally the logits after the last token, then
 * each layer's raw records exactly as held (no re-encoding) and its full-precision window.
 * Every section carries a CRC32C. Files are written to a temporary file and renamed into place;
 * loading maps the file and copies the records straight into the cache's pages, after which the
 * cache keeps appending as if it had computed them.
 */
public final class CacheFile {

    static final byte[] MAGIC = "KVQCACHE".getBytes(StandardCharsets.US_ASCII);
    /**
     * The format version this build writes and the newest it reads. 2: the presets' records at head
     * dims below 128 are trimmed ({@code KvCaches.codeBits}); the byte format is unchanged, so
     * version 1 files are read as before, and one whose records no longer match its config's codecs
     * is refused by the per-layer layout check (record bytes and codec fingerprint).
     */
    public static final int VERSION = 2;
    static final int HEAD = tag("HEAD");
    static final int TOKS = tag("TOKS");
    static final int LOGT = tag("LOGT");
    static final int LAYR = tag("LAYR");
    static final int END = tag("END!");

    private CacheFile() {
    }

    static int tag(String s) {
        return ExtraState.tagInt(s);
    }

    /** The kvquant version written into headers. */
    public static String kvquantVersion() {
        String v = CacheFile.class.getPackage().getImplementationVersion();
        return v != null ? v : "0.1.0-SNAPSHOT";
    }

    /** Null if caches of {@code cfg} can be saved and loaded, else a one-line reason. */
    public static String unsupported(io.kvquant.cache.KvQuantConfig cfg) {
        return LayerLayout.unsupported(cfg);
    }

    /** Null if {@code cache} can be saved, else a one-line reason. */
    public static String unsupported(LayeredKvCache cache) {
        try {
            for (int l = 0; l < cache.layers(); l++) {
                LayerLayout.of(cache, l);
            }
            return null;
        } catch (CacheRefusedException e) {
            return e.getMessage();
        }
    }

    /**
     * Writes {@code cache} (all layers holding {@code tokens.length} tokens) to {@code file}
     * atomically; {@code logits} (the model's output after the last token) may be null. Returns the
     * file's size in bytes.
     */
    public static long write(Path file, LayeredKvCache cache, String modelSha256, long[] tokens, float[] logits)
            throws IOException {
        int layers = cache.layers();
        int heads = cache.kvHeads();
        int dim = cache.headDim();
        for (int l = 0; l < layers; l++) {
            if (cache.length(l) != tokens.length) {
                throw new IllegalArgumentException("layer " + l + " holds " + cache.length(l) + " tokens, expected "
                        + tokens.length + " (one per token id)");
            }
        }
        CacheIdentity id = CacheIdentity.of(modelSha256, cache);
        List<byte[]> small = new ArrayList<>();
        small.add(new Le.Writer().str(kvquantVersion()).str(id.modelSha256()).str(id.config()).i32(layers).i32(heads)
                .i32(dim).i32(tokens.length).i64(cache.config().seed()).i32(cache.config().window()).toBytes());
        Le.Writer tw = new Le.Writer().i32(tokens.length);
        for (long t : tokens) {
            if (t < 0 || t > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("token id " + t + " does not fit the cache format's int32 ids");
            }
            tw.i32((int) t);
        }
        small.add(tw.toBytes());
        byte[] logitBytes = null;
        if (logits != null) {
            Le.Writer lw = new Le.Writer().i32(logits.length);
            for (float f : logits) {
                lw.i32(Float.floatToRawIntBits(f));
            }
            logitBytes = lw.toBytes();
        }
        LayerLayout[] lay = new LayerLayout[layers];
        byte[][] meta = new byte[layers][];
        long[] body = new long[layers];
        for (int l = 0; l < layers; l++) {
            lay[l] = LayerLayout.of(cache, l);
            LayerStore s = cache.store(l);
            int r = s.recordTokens();
            int w = tokens.length - r;
            Le.Writer m = new Le.Writer().i32(l).i32(lay[l].kind()).i32(r).i32(w).i32(lay[l].keyRecordBytes())
                    .i32(lay[l].valueRecordBytes()).i64(lay[l].fingerprint());
            List<String> extras = new ArrayList<>();
            List<byte[]> extraBytes = new ArrayList<>();
            for (ExtraState x : ExtraState.REGISTERED) {
                byte[] b = x.save(cache, l);
                if (b != null) {
                    extras.add(x.tag());
                    extraBytes.add(b);
                }
            }
            byte[] midTier = MidTierState.save(cache, l);
            if (midTier != null) {
                extras.add(MidTierState.TAG);
                extraBytes.add(midTier);
            }
            m.i32(extras.size());
            for (int i = 0; i < extras.size(); i++) {
                m.i32(ExtraState.tagInt(extras.get(i))).i32(extraBytes.get(i).length).bytes(extraBytes.get(i));
            }
            Readback.write(m, cache, l, Readback.probes(tokens.length));
            meta[l] = m.toBytes();
            body[l] = meta[l].length + lay[l].recordsBytes(heads, r) + 2L * heads * w * dim * 4;
        }
        long size = MAGIC.length + 4;
        for (byte[] b : small) {
            size += 16 + b.length;
        }
        if (logitBytes != null) {
            size += 16 + logitBytes.length;
        }
        for (long b : body) {
            size += 16 + b;
        }
        size += 16 + 12;

        Path abs = file.toAbsolutePath();
        Path dir = abs.getParent();
        Path tmp = Files.createTempFile(dir, "." + abs.getFileName() + ".", ".tmp");
        boolean done = false;
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.READ, StandardOpenOption.WRITE);
             Arena arena = Arena.ofConfined()) {
            MemorySegment seg = ch.map(FileChannel.MapMode.READ_WRITE, 0, size, arena);
            MemorySegment.copy(MAGIC, 0, seg, ValueLayout.JAVA_BYTE, 0, MAGIC.length);
            seg.set(Le.I32, MAGIC.length, VERSION);
            long pos = MAGIC.length + 4;
            int sections = 0;
            pos = smallSection(seg, pos, HEAD, small.get(0));
            pos = smallSection(seg, pos, TOKS, small.get(1));
            sections += 2;
            if (logitBytes != null) {
                pos = smallSection(seg, pos, LOGT, logitBytes);
                sections++;
            }
            for (int l = 0; l < layers; l++) {
                seg.set(Le.I32, pos, LAYR);
                seg.set(Le.I64, pos + 4, body[l]);
                long b = pos + 12;
                MemorySegment.copy(meta[l], 0, seg, ValueLayout.JAVA_BYTE, b, meta[l].length);
                long o = b + meta[l].length;
                int r = cache.store(l).recordTokens();
                int w = tokens.length - r;
                o += lay[l].exportRecords(cache, l, 0, r, seg, o);
                if (w > 0) {
                    float[] wk = new float[heads * w * dim];
                    float[] wv = new float[heads * w * dim];
                    cache.store(l).read(r, tokens.length, wk, wv); // as stored (keys centered when center=on)
                    MemorySegment.copy(wk, 0, seg, Le.F32, o, wk.length);
                    o += 4L * wk.length;
                    MemorySegment.copy(wv, 0, seg, Le.F32, o, wv.length);
                    o += 4L * wv.length;
                }
                seg.set(Le.I32, o, Le.crc(seg, b, body[l]));
                pos = o + 4;
                sections++;
            }
            byte[] end = new Le.Writer().i32(sections).i64(size).toBytes();
            pos = smallSection(seg, pos, END, end);
            if (pos != size) {
                throw new IllegalStateException("cache file layout: wrote " + pos + " bytes, planned " + size);
            }
            seg.force();
            done = true;
        } finally {
            if (!done) {
                Files.deleteIfExists(tmp);
            }
        }
        try {
            Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
        return size;
    }

    private static long smallSection(MemorySegment seg, long pos, int tag, byte[] b) {
        seg.set(Le.I32, pos, tag);
        seg.set(Le.I64, pos + 4, b.length);
        MemorySegment.copy(b, 0, seg, ValueLayout.JAVA_BYTE, pos + 12, b.length);
        seg.set(Le.I32, pos + 12 + b.length, Le.crc(seg, pos + 12, b.length));
        return pos + 16 + b.length;
    }

    /**
     * Opens a cache file and checks everything that can be checked without a target cache: magic,
     * version, every section's CRC, completeness, and the identity against {@code expected}.
     *
     * @throws CacheRefusedException with a one-line reason when the file must not be used
     */
    public static Loaded open(Path file, CacheIdentity expected) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new CacheRefusedException("cache file not found: " + file);
        }
        Arena arena = Arena.ofConfined();   // restore on the opening thread; closing a confined arena is cheap
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            MemorySegment seg = size == 0 ? MemorySegment.NULL : ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            Loaded l = parse(seg, size, "cache file " + file.getFileName(), expected, arena);
            arena = null;
            return l;
        } finally {
            if (arena != null) {
                arena.close();
            }
        }
    }

    private static Loaded parse(MemorySegment seg, long size, String what, CacheIdentity expected, Arena arena)
            throws CacheRefusedException {
        if (size < MAGIC.length + 4) {
            throw new CacheRefusedException(what + " is truncated (" + size + " bytes)");
        }
        byte[] magic = new byte[MAGIC.length];
        MemorySegment.copy(seg, ValueLayout.JAVA_BYTE, 0, magic, 0, MAGIC.length);
        if (!java.util.Arrays.equals(magic, MAGIC)) {
            throw new CacheRefusedException(what + " is not a kvquant cache file (bad magic)");
        }
        int version = seg.get(Le.I32, MAGIC.length);
        if (version > VERSION) {
            throw new CacheRefusedException(what + " has format version " + version + ", newer than this kvquant reads ("
                    + VERSION + "); use a newer kvquant or re-create it");
        }
        if (version < 1) {
            throw new CacheRefusedException(what + " is corrupted (format version " + version + ")");
        }
        Le.Reader r = new Le.Reader(seg, MAGIC.length + 4, size, what);
        List<long[]> sections = new ArrayList<>();   // {tag, body offset, body length}
        boolean ended = false;
        while (r.pos < size) {
            int t = r.i32();
            long len = r.i64();
            r.need(len);
            long b = r.pos;
            r.pos += len;
            int crc = r.i32();
            if (crc != Le.crc(seg, b, len)) {
                throw new CacheRefusedException(what + " is corrupted (checksum mismatch in section "
                        + ExtraState.tagText(t) + " at byte " + (b - 12) + ")");
            }
            if (t == END) {
                Le.Reader e = new Le.Reader(seg, b, b + len, what);
                if (e.i32() != sections.size() || e.i64() != size || r.pos != size) {
                    throw new CacheRefusedException(what + " is corrupted (its end marker does not match its contents)");
                }
                ended = true;
                break;
            }
            sections.add(new long[] {t, b, len});
        }
        if (!ended) {
            throw new CacheRefusedException(what + " is truncated (no end marker)");
        }
        if (sections.size() < 2 || sections.get(0)[0] != HEAD || sections.get(1)[0] != TOKS) {
            throw new CacheRefusedException(what + " is corrupted (header or token section missing)");
        }
        Le.Reader h = new Le.Reader(seg, sections.get(0)[1], sections.get(0)[1] + sections.get(0)[2], what);
        String kvq = h.str();
        String sha = h.str();
        String cfg = h.str();
        int layers = h.count(1 << 16, "layers");
        int heads = h.count(1 << 16, "kv heads");
        int dim = h.count(1 << 16, "head dim");
        int tokens = h.count(Integer.MAX_VALUE, "tokens");
        CacheIdentity found;
        try {
            found = new CacheIdentity(sha, cfg, layers, heads, dim);
        } catch (IllegalArgumentException e) {
            throw new CacheRefusedException(what + " is corrupted (bad model sha256 in its header)");
        }
        String why = expected.mismatch(found);
        if (why != null) {
            throw new CacheRefusedException(what + " does not fit: " + why);
        }
        Le.Reader tr = new Le.Reader(seg, sections.get(1)[1], sections.get(1)[1] + sections.get(1)[2], what);
        int n = tr.count(Integer.MAX_VALUE, "token count");
        if (n != tokens) {
            throw new CacheRefusedException(what + " is corrupted (" + n + " token ids, header says " + tokens + ")");
        }
        tr.need(4L * n);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = tr.i32();
        }
        int next = 2;
        float[] logits = null;
        if (next < sections.size() && sections.get(next)[0] == LOGT) {
            Le.Reader lr = new Le.Reader(seg, sections.get(next)[1], sections.get(next)[1] + sections.get(next)[2], what);
            int v = lr.count(1 << 28, "vocabulary size");
            lr.need(4L * v);
            logits = new float[v];
            MemorySegment.copy(seg, Le.F32, lr.pos, logits, 0, v);
            next++;
        }
        if (sections.size() - next != layers) {
            throw new CacheRefusedException(what + " is corrupted (" + (sections.size() - next) + " layer sections for "
                    + layers + " layers)");
        }
        List<long[]> layerSections = sections.subList(next, sections.size());
        for (int l = 0; l < layers; l++) {
            if (layerSections.get(l)[0] != LAYR) {
                throw new CacheRefusedException(what + " is corrupted (unexpected section "
                        + ExtraState.tagText((int) layerSections.get(l)[0]) + ")");
            }
        }
        return new Loaded(what, kvq, found, ids, logits, seg, layerSections, arena);
    }

    /** An opened, checked cache file: its token ids and logits, and {@link #restore} into a fresh cache. */
    public static final class Loaded implements AutoCloseable {
        private final String what;
        private final String writtenBy;
        private final CacheIdentity identity;
        private final long[] tokens;
        private final float[] logits;
        private final MemorySegment seg;
        private final List<long[]> layers;
        private final Arena arena;

        Loaded(String what, String writtenBy, CacheIdentity identity, long[] tokens, float[] logits, MemorySegment seg,
               List<long[]> layers, Arena arena) {
            this.what = what;
            this.writtenBy = writtenBy;
            this.identity = identity;
            this.tokens = tokens;
            this.logits = logits;
            this.seg = seg;
            this.layers = layers;
            this.arena = arena;
        }

        /** The token ids the saved cache holds, in order. */
        public long[] tokens() {
            return tokens.clone();
        }

        /** The logits after the last token, or null if the file has none. */
        public float[] logits() {
            return logits == null ? null : logits.clone();
        }

        /** The kvquant version that wrote the file. */
        public String writtenBy() {
            return writtenBy;
        }

        public CacheIdentity identity() {
            return identity;
        }

        /**
         * Appends the saved records and windows to {@code cache}, which must be empty and of the
         * same identity. Everything is checked before anything is appended; on a refusal the cache
         * is left empty.
         */
        public void restore(LayeredKvCache cache) throws CacheRefusedException {
            restore(cache, tokens.length);
        }

        /**
         * Restores only the first {@code upTo} tokens (the keys and values of a prefix do not depend
         * on what follows it). Tokens saved in a full-precision window come back exactly; records
         * stay records, even where a shorter cache would hold those tokens in its window.
         */
        public void restore(LayeredKvCache cache, int upTo) throws CacheRefusedException {
            if (upTo < 0 || upTo > tokens.length) {
                throw new IllegalArgumentException("cannot restore " + upTo + " of " + tokens.length + " saved tokens");
            }
            int heads = cache.kvHeads();
            int dim = cache.headDim();
            for (int l = 0; l < cache.layers(); l++) {
                if (cache.length(l) != 0) {
                    throw new IllegalArgumentException("a cache file is restored into an empty cache; layer " + l + " holds "
                            + cache.length(l) + " tokens");
                }
            }
            if (cache.layers() != identity.layers() || heads != identity.kvHeads() || dim != identity.headDim()
                    || !cache.config().toString().equals(identity.config())) {
                throw new CacheRefusedException(what + " does not fit " + cache);
            }
            int n = tokens.length;
            int[] recs = new int[cache.layers()];
            long[] payload = new long[cache.layers()];
            List<List<Object[]>> extras = new ArrayList<>();
            MidTierState.Saved[] midTiers = new MidTierState.Saved[cache.layers()];
            List<List<Readback>> probes = new ArrayList<>();
            for (int l = 0; l < cache.layers(); l++) {
                long[] sec = layers.get(l);
                Le.Reader r = new Le.Reader(seg, sec[1], sec[1] + sec[2], what);
                int idx = r.i32();
                int kind = r.i32();
                int rec = r.count(n, "records");
                int win = r.count(n, "window tokens");
                int krb = r.count(1 << 24, "key record bytes");
                int vrb = r.count(1 << 24, "value record bytes");
                long fp = r.i64();
                LayerLayout found = new LayerLayout(kind, krb, vrb, fp);
                if (idx != l || rec + win != n) {
                    throw new CacheRefusedException(what + " is corrupted (layer section " + l + " holds layer " + idx
                            + " with " + rec + " + " + win + " tokens of " + n + ")");
                }
                String why = LayerLayout.of(cache, l).mismatch(l, found);
                if (why != null) {
                    throw new CacheRefusedException(what + " does not fit: " + why);
                }
                int ne = r.count(64, "extra-state count");
                List<Object[]> ex = new ArrayList<>();
                for (int i = 0; i < ne; i++) {
                    int t = r.i32();
                    byte[] b = r.bytes(r.count(Integer.MAX_VALUE, "extra-state length"));
                    if (t == ExtraState.tagInt(MidTierState.TAG)) {
                        midTiers[l] = MidTierState.read(cache, l, b, what);
                        continue;
                    }
                    ExtraState h = null;
                    for (ExtraState x : ExtraState.REGISTERED) {
                        if (ExtraState.tagInt(x.tag()) == t) {
                            h = x;
                        }
                    }
                    if (h == null) {
                        throw new CacheRefusedException(what + " carries layer state '" + ExtraState.tagText(t)
                                + "' that this kvquant does not know; use the kvquant that wrote it (" + writtenBy + ")");
                    }
                    ex.add(new Object[] {h, b});
                }
                extras.add(ex);
                probes.add(Readback.read(r, heads, dim, n));
                long need = found.recordsBytes(heads, rec) + 2L * heads * win * dim * 4;
                r.need(need);
                if (r.pos + need != sec[1] + sec[2]) {
                    throw new CacheRefusedException(what + " is corrupted (layer " + l + " section has "
                            + (sec[1] + sec[2] - r.pos - need) + " stray bytes)");
                }
                recs[l] = rec;
                payload[l] = r.pos;
            }
            try {
                for (int l = 0; l < cache.layers(); l++) {
                    LayerStore s = cache.store(l);
                    int rec = recs[l];
                    int win = n - rec;
                    long k = payload[l];
                    long v = k + (long) heads * rec * s.recordBytes(true);
                    long wOff = v + (long) heads * rec * s.recordBytes(false);
                    int useRec = Math.min(rec, upTo);
                    // decoded tokens after the records: the middle tier's first (restored from its
                    // records), then the window's
                    int useMid = midTiers[l] == null ? 0 : Math.min(midTiers[l].tokens(), upTo - useRec);
                    int useWin = upTo - useRec - useMid;
                    int skip = midTiers[l] == null ? 0 : midTiers[l].tokens(); // decoded tokens before the window's
                    if (useWin > 0 && skip > win) {
                        throw new CacheRefusedException(what + " is corrupted (layer " + l + " has " + skip
                                + " middle-tier tokens and " + win + " decoded tokens)");
                    }
                    float[] wk = new float[heads * useWin * dim];
                    float[] wv = new float[heads * useWin * dim];
                    for (int h = 0; h < heads; h++) {
                        long src = wOff + 4L * (h * win + skip) * dim;
                        MemorySegment.copy(seg, Le.F32, src, wk, h * useWin * dim, useWin * dim);
                        MemorySegment.copy(seg, Le.F32, src + 4L * heads * win * dim, wv, h * useWin * dim, useWin * dim);
                    }
                    if (useRec == rec && midTiers[l] != null) {
                        cache.importTiers(l, seg, k, seg, v, rec, midTiers[l].records(), useMid, wk, wv, useWin);
                    } else if (useRec == rec) {
                        s.importRecords(seg, k, seg, v, rec, wk, wv, useWin);
                    } else {   // records are [head][rec][bytes]: gather the first useRec of each head
                        try (Arena a = Arena.ofConfined()) {
                            int krb = s.recordBytes(true);
                            int vrb = s.recordBytes(false);
                            MemorySegment kk = a.allocate(Math.max(1L, (long) heads * useRec * krb));
                            MemorySegment vv = a.allocate(Math.max(1L, (long) heads * useRec * vrb));
                            for (int h = 0; h < heads; h++) {
                                MemorySegment.copy(seg, k + (long) h * rec * krb, kk, (long) h * useRec * krb, (long) useRec * krb);
                                MemorySegment.copy(seg, v + (long) h * rec * vrb, vv, (long) h * useRec * vrb, (long) useRec * vrb);
                            }
                            s.importRecords(kk, 0, vv, 0, useRec, wk, wv, 0);
                        }
                    }
                    for (Object[] e : extras.get(l)) {
                        ((ExtraState) e[0]).restore(cache, l, (byte[]) e[1]);
                    }
                }
            } catch (IllegalArgumentException e) {
                cache.clear();
                throw new CacheRefusedException(what + " does not fit this cache: " + e.getMessage());
            }
            for (int l = 0; l < cache.layers(); l++) {
                for (Readback p : probes.get(l)) {
                    String why = p.token() < upTo && (p.token() == 0 || upTo == n) ? p.check(cache, l) : null;
                    if (why != null) {
                        cache.clear();
                        throw new CacheRefusedException(what + ": " + why);
                    }
                }
            }
        }

        /** Unmaps the file. */
        @Override
        public void close() {
            arena.close();
        }
    }
}
