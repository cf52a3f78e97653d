package io.kvquant.cli;

import static io.kvquant.cli.GenerateCliTest.assertOneLineError;
import static io.kvquant.cli.GenerateCliTest.kvq;
import static io.kvquant.cli.GenerateCliTest.modelDir;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.demo.onnx.JavaAttentionModel;
import io.kvquant.demo.onnx.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code kvq generate --save-cache/--load-cache/--cache-store} end to end in the java-attention engine. */
class PromptCacheCliTest {

    static final String PROMPT = "And God said, Let there be light: and there was light. And God saw the light, that it "
            + "was good: and God divided the light from the darkness.";

    @Test
    void savedPromptContinuesIdenticallyAndBadCachesFallBack(@TempDir Path tmp) throws IOException {
        Path dir = Files.createDirectory(tmp.resolve("m"));
        for (String f : new String[] {"model.onnx", "tokenizer.json", "config.json"}) {
            Files.copy(modelDir().resolve(f), dir.resolve(f));
        }
        JavaAttentionModel.prepare(dir);
        Path f = tmp.resolve("p.kvq");
        Path stats = tmp.resolve("s.json");
        String[] common = {"generate", "--model", dir.toString(), "--mode", "java-attention", "--prompt", PROMPT,
                "--max-new-tokens", "12", "--no-stop", "--prefill-chunk", "8", "--stats-json", stats.toString()};
        GenerateCliTest.Run a = kvq(concat(common, "--save-cache", f.toString()));
        assertEquals(0, a.code(), a.err());
        assertTrue(a.err().contains("saved to " + f), a.err());
        GenerateCliTest.Run b = kvq(concat(common, "--load-cache", f.toString()));
        assertEquals(0, b.code(), b.err());
        assertEquals(a.out(), b.out(), "the continuation from the saved cache is the same text");
        Map<?, ?> j = (Map<?, ?>) Json.parse(Files.readString(stats));
        Map<?, ?> pc = (Map<?, ?>) j.get("prompt_cache");
        assertEquals(((Number) j.get("prompt_tokens")).intValue(), ((Number) pc.get("loaded_tokens")).intValue(), pc.toString());

        byte[] bytes = Files.readAllBytes(f);
        bytes[bytes.length / 3] ^= 1;
        Files.write(f, bytes);
        GenerateCliTest.Run c = kvq(concat(common, "--load-cache", f.toString()));
        assertEquals(0, c.code(), c.err());
        assertEquals(a.out(), c.out(), "a fresh prefill after the refusal");
        assertEquals(1, c.err().lines().filter(l -> l.startsWith("kvq: ")).count(), c.err());
        assertTrue(c.err().contains("is corrupted (checksum mismatch") && c.err().contains("prefilling the prompt"), c.err());
        assertFalse(c.err().contains("Exception"), c.err());

        // --save-cache-at end, then a prompt that extends the saved text reuses all of it
        Path end = tmp.resolve("end.kvq");
        GenerateCliTest.Run d = kvq(concat(common, "--save-cache", end.toString(), "--save-cache-at", "end"));
        assertEquals(0, d.code(), d.err());
        assertTrue(d.err().contains("saved to " + end), d.err());
    }

    @Test
    void badCacheOptionsAreOneLineErrors(@TempDir Path tmp) {
        String model = modelDir().toString();
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--save-cache", tmp.resolve("c").toString(),
                "--save-cache-at", "later"), "--save-cache-at must be prefill or end");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--save-cache",
                tmp.resolve("no/dir/c").toString()), "--save-cache: folder does not exist");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--kv", "kivi2", "--save-cache",
                tmp.resolve("c").toString()), "KIVI caches cannot be saved");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--cache-store", tmp.toString(),
                "--cache-key-file", tmp.resolve("nokey").toString()), "--cache-key-file: file not found");
        GenerateCliTest.Run r = kvq("generate", "--model", model, "--prompt", "Hi", "--cache-store",
                "redis://user:Hunter2Secret@localhost:notaport");
        assertOneLineError(r, "Redis URL");
        assertFalse(r.err().contains("Hunter2Secret"), r.err());
    }

    /** The benchmark's smoke run: the restored cache equals the prefilled one, the record bytes are turbo3.5's. */
    @Test
    void cacheBenchRunsAndChecksTheRestoredCache(@TempDir Path tmp) throws IOException {
        GenerateCliTest.Run r = kvq("bench", "cache", "--mode", "roundtrip", "--kv", "turbo3.5,window=0", "--contexts", "96", "--repeats", "1",
                "--block-tokens", "32", "--threads", "1", "--out", tmp.toString());
        assertEquals(0, r.code(), r.err());
        Map<?, ?> j = (Map<?, ?>) Json.parse(Files.readString(tmp.resolve("cache-bench.json")));
        Map<?, ?> row = (Map<?, ?>) ((java.util.List<?>) j.get("results")).get(0);
        assertEquals(Boolean.TRUE, row.get("file_restore_identical"), row.toString());
        assertEquals(96, ((Number) row.get("dir_load_tokens")).intValue(), row.toString());
        // bundled model: 4 layers x 2 kv heads x (K, V) x 30-byte records = 480 bytes per token, plus the
        // key means of centering (4 layers x 2 kv heads x 64 fp32) and the key scales (4 layers x 64 fp32)
        // spread over the 96 tokens; fp16 2048
        assertEquals(480.0 + (4 * 2 * 64 * 4 + 4 * 64 * 4) / 96.0, ((Number) row.get("cache_bytes_per_token")).doubleValue(), 1e-9);
        assertEquals(2048, ((Number) row.get("fp16_bytes_per_token")).intValue());
    }

    static String[] concat(String[] a, String... b) {
        String[] r = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
