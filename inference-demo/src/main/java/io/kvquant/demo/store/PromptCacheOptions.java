package io.kvquant.demo.store;

import io.kvquant.persist.PrefixBlocks;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import picocli.CommandLine.Option;

/** The prompt-cache options of {@code kvq generate} (a picocli mixin). */
public final class PromptCacheOptions {

    @Option(names = "--save-cache", paramLabel = "FILE",
            description = "Save the compressed cache to FILE (after the prefill, or at the end with --save-cache-at end).")
    Path saveCache;

    @Option(names = "--save-cache-at", paramLabel = "WHEN", defaultValue = "prefill",
            description = "When --save-cache writes: prefill (the prompt) or end (prompt and generated text) "
                    + "(default: ${DEFAULT-VALUE}).")
    String saveAt;

    @Option(names = "--load-cache", paramLabel = "FILE",
            description = "Start from the cache saved in FILE when its tokens are a prefix of the prompt (that prefix is "
                    + "not prefilled again); a missing or unusable file means a normal prefill.")
    Path loadCache;

    @Option(names = "--cache-store", paramLabel = "DIR|URL",
            description = "Shared prefix-block store: a directory, or redis://[user:pass@]host:port[/db] (rediss:// for "
                    + "TLS). The longest stored prefix of the prompt is reused; the prompt's blocks are stored after the "
                    + "prefill. Blocks are authenticated when $KVQ_CACHE_KEY or --cache-key-file gives a key.")
    String cacheStore;

    @Option(names = "--cache-block-tokens", paramLabel = "N", defaultValue = "" + PrefixBlocks.DEFAULT_BLOCK_TOKENS,
            description = "Tokens per stored block (default: ${DEFAULT-VALUE}).")
    int blockTokens;

    @Option(names = "--cache-store-cap", paramLabel = "MIB", defaultValue = "4096",
            description = "Size cap of a directory store in MiB, least recently used blocks evicted; 0 = none "
                    + "(default: ${DEFAULT-VALUE}). Redis evicts by its own maxmemory policy.")
    long capMib;

    @Option(names = "--cache-key-file", paramLabel = "FILE",
            description = "File holding the key that authenticates stored blocks (else $KVQ_CACHE_KEY; the key itself "
                    + "is never taken from the command line).")
    Path keyFile;

    @Option(names = "--cache-timeout-ms", paramLabel = "MS", defaultValue = "2000",
            description = "Redis connect and read timeout (default: ${DEFAULT-VALUE}).")
    int timeoutMs;

    /** Validates the options (one-line errors) and returns them as settings. */
    public PromptCache.Settings settings() {
        String at = saveAt.trim().toLowerCase(Locale.ROOT);
        if (!at.equals("prefill") && !at.equals("end")) {
            throw new IllegalArgumentException("--save-cache-at must be prefill or end, not '" + saveAt + "'");
        }
        if (saveCache != null) {
            Path dir = saveCache.toAbsolutePath().getParent();
            if (dir == null || !Files.isDirectory(dir)) {
                throw new IllegalArgumentException("--save-cache: folder does not exist: " + dir);
            }
        }
        if (blockTokens < 1 || blockTokens > 1 << 20) {
            throw new IllegalArgumentException("--cache-block-tokens must be in [1, 1048576], got " + blockTokens);
        }
        if (capMib < 0) {
            throw new IllegalArgumentException("--cache-store-cap must be >= 0 MiB, got " + capMib);
        }
        if (timeoutMs < 1) {
            throw new IllegalArgumentException("--cache-timeout-ms must be >= 1, got " + timeoutMs);
        }
        if (keyFile != null && !Files.isRegularFile(keyFile)) {
            throw new IllegalArgumentException("--cache-key-file: file not found: " + keyFile);
        }
        if (cacheStore != null && cacheStore.isBlank()) {
            throw new IllegalArgumentException("--cache-store needs a directory or a redis:// URL");
        }
        if (cacheStore != null && RedisBlockStore.isUrl(cacheStore)) {
            RedisBlockStore.Url.parse(cacheStore);   // bad URLs are user errors, reported before anything loads
        }
        return new PromptCache.Settings(saveCache, at.equals("end"), loadCache, cacheStore, blockTokens, capMib << 20,
                keyFile, timeoutMs);
    }
}
