package io.kvquant.demo.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvquant.demo.store.PromptCache;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The DJL translator's prompt-cache option: a saved prompt prefix is not prefilled again, tokens unchanged. */
class DjlPromptCacheTest {

    @TempDir
    Path tmp;

    @Test
    void savedPrefixIsRestoredAndGreedyTokensAreUnchanged() throws Exception {
        long[] prompt = DjlDropInTest.prompt();
        Path f = tmp.resolve("prefix.kvq");
        try (KvQuantTranslator save = KvQuantTranslator.of("turbo3.5").withPromptCache(PromptCache.Settings.file(null, f))) {
            DjlDropInTest.djlGreedy(save, Arrays.copyOf(prompt, 200), 2);
            assertEquals(200, save.promptCacheStats().get("saved_tokens"));
        }
        long[] want = DjlDropInTest.kvqGreedy("turbo3.5", prompt, 12);
        try (KvQuantTranslator load = KvQuantTranslator.of("turbo3.5").withPromptCache(PromptCache.Settings.file(f, null))) {
            long[] got = DjlDropInTest.djlGreedy(load, prompt, 12);
            assertEquals(200, load.promptCacheStats().get("loaded_tokens"), load.promptCacheStats().toString());
            assertArrayEquals(want, got);
            assertEquals(prompt.length + 11, load.cache().length(0));
        }
        // a file that does not fit (another config): one line on stderr, a normal prefill, the same tokens as without it
        try (KvQuantTranslator other = KvQuantTranslator.of("turbo2.5").withPromptCache(PromptCache.Settings.file(f, null))) {
            long[] got = DjlDropInTest.djlGreedy(other, prompt, 4);
            assertEquals(0, other.promptCacheStats().get("loaded_tokens"));
            assertArrayEquals(Arrays.copyOf(DjlDropInTest.kvqGreedy("turbo2.5", prompt, 4), 4), got);
        }
        Files.deleteIfExists(f);
    }
}
