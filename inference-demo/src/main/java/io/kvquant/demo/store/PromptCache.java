package io.kvquant.demo.store;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.persist.BlockAuth;
import io.kvquant.persist.BlockStore;
import io.kvquant.persist.CacheFile;
import io.kvquant.persist.CacheIdentity;
import io.kvquant.persist.CacheRefusedException;
import io.kvquant.persist.DirectoryBlockStore;
import io.kvquant.persist.PrefixBlocks;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.IntConsumer;

/**
 * Saving and reusing compressed prompt caches around a {@link Decoder}: before the prefill the
 * cache is restored from a cache file or from the longest stored prefix in a block store (and
 * only the rest of the prompt is prefilled); after it (or at the end) the cache is saved. Every
 * failure to load (missing, truncated, corrupted, another model or config, a newer format, a
 * refused tag, an unreachable store) is one line on the log and a normal prefill; a failure to
 * save is one line and the run goes on.
 */
public final class PromptCache implements AutoCloseable {

    /** What to load and save, and where. */
    public record Settings(Path saveCache, boolean saveAtEnd, Path loadCache, String store, int blockTokens, long capBytes,
                           Path keyFile, int timeoutMs) {
        public boolean any() {
            return saveCache != null || loadCache != null || store != null;
        }

        /** Only a cache file to load and/or save (e.g. for the DJL translator). */
        public static Settings file(Path load, Path save) {
            return new Settings(save, false, load, null, PrefixBlocks.DEFAULT_BLOCK_TOKENS, 0, null, 2000);
        }

        /** Only a block store (a directory or a redis:// URL). */
        public static Settings store(String store) {
            return new Settings(null, false, null, store, PrefixBlocks.DEFAULT_BLOCK_TOKENS, 0, null, 2000);
        }
    }

    private final Settings s;
    private final PrintWriter log;
    private final LayeredKvCache cache;
    private final String sha;
    private final PrefixBlocks blocks;
    private final Map<String, Object> stats = new LinkedHashMap<>();
    private long[] fed = new long[64];
    private int nFed;
    private float[] lastLogits;

    private PromptCache(Settings s, PrintWriter log, LayeredKvCache cache, String sha, PrefixBlocks blocks) {
        this.s = s;
        this.log = log;
        this.cache = cache;
        this.sha = sha;
        this.blocks = blocks;
    }

    /**
     * Prepares prompt caching for {@code cache} of the model in {@code modelFile}. Settings that
     * cannot work (a KIVI cache, a short key) are user errors (IllegalArgumentException); an
     * unreachable store is a warning and the run goes on without it.
     */
    public static PromptCache open(Settings s, Path modelFile, KvCache cache, PrintWriter log) throws IOException {
        if (!s.any()) {
            return new PromptCache(s, log, null, null, null);
        }
        if (!(cache instanceof LayeredKvCache lc)) {
            throw new IllegalArgumentException("prompt caches need a kvquant cache (LayeredKvCache), not " + cache);
        }
        String why = CacheFile.unsupported(lc.config());
        if (why != null) {
            throw new IllegalArgumentException("--save-cache/--load-cache/--cache-store: " + why);
        }
        String sha = ModelPaths.sha256(modelFile);
        PrefixBlocks blocks = null;
        if (s.store() != null) {
            BlockAuth auth = BlockAuth.fromEnvironment(s.keyFile());
            BlockStore store = null;
            try {
                store = RedisBlockStore.isUrl(s.store()) ? RedisBlockStore.connect(s.store(), s.timeoutMs())
                        : new DirectoryBlockStore(Path.of(s.store()), s.capBytes());
            } catch (IOException e) {
                log.println("kvq: cache store unreachable (" + e.getMessage() + "); prefilling normally, blocks not stored");
                log.flush();
            }
            if (store != null) {
                blocks = new PrefixBlocks(store, CacheIdentity.of(sha, lc), s.blockTokens(), auth);
            }
        }
        return new PromptCache(s, log, lc, sha, blocks);
    }

    /** A decoder that records what is fed through it (for --save-cache-at end). */
    public Decoder track(Decoder d) {
        return new Decoder() {
            @Override
            public float[] feed(long[] ids, int off, int len) {
                float[] logits = d.feed(ids, off, len);
                record(ids, off, len, logits);
                return logits;
            }

            @Override
            public float[] feedPrefix(long[] ids, int off, int len) {
                float[] logits = d.feedPrefix(ids, off, len); // null where skipped: a later chunk records the last logits
                record(ids, off, len, logits);
                return logits;
            }

            @Override
            public int prefillChunk() {
                return d.prefillChunk();
            }

            @Override
            public int position() {
                return d.position();
            }

            @Override
            public KvCache cache() {
                return d.cache();
            }

            @Override
            public long heldBytes() {
                return d.heldBytes();
            }
        };
    }

    private void record(long[] ids, int off, int len, float[] logits) {
        if (nFed + len > fed.length) {
            fed = Arrays.copyOf(fed, Math.max(nFed + len, fed.length * 2));
        }
        System.arraycopy(ids, off, fed, nFed, len);
        nFed += len;
        lastLogits = logits;
    }

    /** What {@link #restore} put in the cache: tokens, and the logits after them when they are the whole prompt. */
    public record Restored(int tokens, float[] logits, String source) {
    }

    /**
     * Restores the longest usable saved prefix of {@code ids} into the empty cache: at most
     * {@code maxTokens} tokens, or all of {@code ids} when the cache file holds exactly them with
     * their logits (then nothing needs to be fed).
     */
    public Restored restore(long[] ids, int maxTokens) {
        if (cache == null) {
            return new Restored(0, null, "none");
        }
        long t0 = System.nanoTime();
        Restored r = new Restored(0, null, "none");
        if (s.loadCache() != null) {
            r = fromFile(ids, maxTokens);
        }
        if (r.tokens() == 0 && blocks != null) {
            r = fromStore(ids, maxTokens);
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        stats.put("source", r.source());
        stats.put("loaded_tokens", r.tokens());
        stats.put("load_seconds", secs);
        if (r.tokens() > 0) {
            log.printf(java.util.Locale.ROOT, "kvq: %d of %d prompt tokens restored from %s in %.1f ms%n", r.tokens(),
                    ids.length, r.source(), secs * 1e3);
            log.flush();
        }
        nFed = 0;
        record(ids, 0, r.tokens(), r.logits());
        return r;
    }

    private Restored fromFile(long[] ids, int maxTokens) {
        Path f = s.loadCache();
        if (!Files.exists(f)) {
            warn("cache file " + f + " does not exist yet; prefilling the prompt");
            return new Restored(0, null, "none");
        }
        try (CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(sha, cache))) {
            long[] t = l.tokens();
            int common = 0;
            while (common < t.length && common < ids.length && t[common] == ids[common]) {
                common++;
            }
            boolean whole = common == t.length && t.length == ids.length && l.logits() != null;
            int use = whole ? t.length : Math.min(common, maxTokens);
            if (use == 0) {
                warn("cache file " + f + " shares no usable prefix with this prompt (its " + t.length
                        + " tokens differ at token " + common + "); prefilling the prompt");
                return new Restored(0, null, "none");
            }
            if (use < t.length) {
                log.println("kvq: using the first " + use + " of the " + t.length + " tokens in cache file " + f
                        + (common < t.length ? " (the prompt differs at token " + common + ")" : ""));
            }
            l.restore(cache, use);
            stats.put("file_bytes", Files.size(f));
            return new Restored(use, whole ? l.logits() : null, "cache file " + f);
        } catch (CacheRefusedException e) {
            warn(e.getMessage() + "; prefilling the prompt");
        } catch (IOException | RuntimeException e) {
            cache.clear();
            warn("cannot read cache file " + f + " (" + e.getMessage() + "); prefilling the prompt");
        }
        return new Restored(0, null, "none");
    }

    private Restored fromStore(long[] ids, int maxTokens) {
        try {
            PrefixBlocks.Loaded r = blocks.load(cache, ids, maxTokens);
            stats.put("blocks_read", r.blocks());
            stats.put("block_bytes_read", r.bytesRead());
            if (r.refused() != null) {
                warn(r.refused() + "; prefilling from token " + r.tokens());
            }
            return new Restored(r.tokens(), null, "cache store " + blocks.store().describe());
        } catch (IOException | RuntimeException e) {
            cache.clear();
            warn("cache store " + blocks.store().describe() + " failed (" + e.getMessage() + "); prefilling normally");
            return new Restored(0, null, "none");
        }
    }

    /** Restores what it can, prefills the rest through {@code dec}, saves when asked; returns the logits after the prompt. */
    public float[] prefill(Decoder dec, long[] ids, IntConsumer progress) {
        if (cache == null) {
            return dec.prefill(ids, progress);
        }
        Restored r = restore(ids, ids.length - 1);
        float[] logits = r.logits();
        int chunk = dec.prefillChunk();
        for (int off = r.tokens(); off < ids.length; off += chunk) {
            int len = Math.min(chunk, ids.length - off);
            logits = dec.feed(ids, off, len);
            if (progress != null) {
                progress.accept(off + len);
            }
        }
        if (dec.position() != nFed) {
            // an untracked decoder: what was fed is the prompt
            nFed = 0;
            record(ids, 0, ids.length, logits);
        }
        lastLogits = logits;
        afterPrefill(ids, logits);
        return logits;
    }

    /** Saves after the prefill: the cache file (unless at the end) and the prompt's blocks. */
    public void afterPrefill(long[] ids, float[] logits) {
        if (cache == null) {
            return;
        }
        if (s.saveCache() != null && !s.saveAtEnd()) {
            saveFile(ids, logits);
        }
        if (blocks != null) {
            long t0 = System.nanoTime();
            try {
                PrefixBlocks.Saved sv = blocks.save(cache, ids);
                stats.put("blocks_written", sv.written());
                stats.put("block_bytes_written", sv.bytesWritten());
                stats.put("store_seconds", (System.nanoTime() - t0) / 1e9);
            } catch (IOException | RuntimeException e) {
                warn("cache store " + blocks.store().describe() + ": blocks not stored (" + e.getMessage() + ")");
            }
        }
    }

    /** At the end of a run: saves the cache file when --save-cache-at end (tokens fed through {@link #track}). */
    public void finish() {
        if (cache != null && s.saveCache() != null && s.saveAtEnd()) {
            saveFile(Arrays.copyOf(fed, nFed), lastLogits);
        }
    }

    private void saveFile(long[] ids, float[] logits) {
        long t0 = System.nanoTime();
        try {
            if (cache.length(0) != ids.length) {
                throw new IllegalStateException("the cache holds " + cache.length(0) + " tokens but " + ids.length
                        + " were tracked");
            }
            long bytes = CacheFile.write(s.saveCache(), cache, sha, ids, logits);
            double secs = (System.nanoTime() - t0) / 1e9;
            stats.put("saved_tokens", ids.length);
            stats.put("saved_bytes", bytes);
            stats.put("save_seconds", secs);
            log.printf(java.util.Locale.ROOT, "kvq: cache of %d tokens saved to %s (%.2f MiB, %.1f ms)%n", ids.length,
                    s.saveCache(), bytes / 1048576.0, secs * 1e3);
            log.flush();
        } catch (IOException | RuntimeException e) {
            warn("cache not saved to " + s.saveCache() + " (" + e.getMessage() + ")");
        }
    }

    private void warn(String line) {
        log.println("kvq: " + line);
        log.flush();
        stats.merge("warnings", 1, (a, b) -> (Integer) a + (Integer) b);
    }

    /** Figures for the run's stats: what was restored and saved (no credentials). */
    public Map<String, Object> stats() {
        Map<String, Object> m = new LinkedHashMap<>(stats);
        if (blocks != null) {
            m.put("store", blocks.store().describe());
            m.put("block_tokens", blocks.blockTokens());
        }
        return m;
    }

    @Override
    public void close() {
        if (blocks != null) {
            try {
                blocks.store().close();
            } catch (IOException e) {
                // closing: nothing to recover
            }
        }
    }
}
