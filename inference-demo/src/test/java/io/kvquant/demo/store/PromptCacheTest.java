package io.kvquant.demo.store;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.JavaAttentionModel;
import io.kvquant.demo.onnx.ModelRunner;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Prompt caches with the bundled model in both engines: a whole saved prompt continues bit for
 * bit, a saved prefix gives the same greedy tokens as a fresh prefill, and every unusable cache
 * is one line and a fresh prefill.
 */
class PromptCacheTest {

    static final int STEPS = 8;
    static Path dir;
    static ModelRunner split;
    static ModelRunner plain;
    static long[] prompt;

    @TempDir
    Path tmp;

    static Path bundled() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path d = p.resolve("models/kvq-llama");
            if (Files.isRegularFile(d.resolve("model.onnx"))) {
                return d;
            }
        }
        throw new IllegalStateException("the bundled model models/kvq-llama was not found above " + Path.of("").toAbsolutePath());
    }

    @BeforeAll
    static void prepare(@TempDir Path t) throws IOException {
        dir = t.resolve("kvq-llama");
        Files.createDirectories(dir);
        for (String f : new String[] {"model.onnx", "config.json", "tokenizer.json"}) {
            Files.copy(bundled().resolve(f), dir.resolve(f));
        }
        JavaAttentionModel.prepare(dir);
        split = JavaAttentionModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU));
        plain = DecoderModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU));
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            prompt = Arrays.copyOf(tok.encode(Files.readString(bundled().getParent().resolve("prompts/long.txt"))), 300);
        }
    }

    @AfterAll
    static void close() {
        split.close();
        plain.close();
    }

    /** The logits of a greedy run: after the prompt, then after each of STEPS steps. */
    record Run(float[][] logits, long[] tokens, String log, int restored) {
    }

    static int argmax(float[] x) {
        int b = 0;
        for (int i = 1; i < x.length; i++) {
            if (x[i] > x[b]) {
                b = i;
            }
        }
        return b;
    }

    static Run run(ModelRunner m, String kv, long[] ids, PromptCache.Settings s) throws IOException {
        StringWriter log = new StringWriter();
        try (LayeredKvCache cache = KvCaches.create(kv, m.layers(), m.kvHeads(), m.headDim());
             PromptCache pc = PromptCache.open(s, m.file(), cache, new PrintWriter(log, true))) {
            Decoder dec = pc.track(m.newDecoder(cache, 64));
            float[][] out = new float[STEPS + 1][];
            long[] toks = new long[STEPS];
            out[0] = pc.prefill(dec, ids, null);
            for (int i = 0; i < STEPS; i++) {
                toks[i] = argmax(out[i]);
                out[i + 1] = dec.step(toks[i]);
            }
            pc.finish();
            Object restored = pc.stats().getOrDefault("loaded_tokens", 0);
            return new Run(out, toks, log.toString(), (Integer) restored);
        }
    }

    static PromptCache.Settings save(Path f) {
        return PromptCache.Settings.file(null, f);
    }

    static PromptCache.Settings load(Path f) {
        return PromptCache.Settings.file(f, null);
    }

    @Test
    void wholeSavedPromptContinuesBitIdenticallyInBothEngines() throws IOException {
        for (ModelRunner m : new ModelRunner[] {split, plain}) {
            for (String kv : new String[] {"turbo3.5", "turbo2.5,window=32"}) {
                Path f = tmp.resolve("whole.kvq");
                Run a = run(m, kv, prompt, save(f));
                Run b = run(m, kv, prompt, load(f));
                assertEquals(prompt.length, b.restored(), b.log());
                for (int i = 0; i <= STEPS; i++) {
                    assertArrayEquals(a.logits()[i], b.logits()[i], m.describe() + " " + kv + " step " + i);
                }
            }
        }
    }

    @Test
    void savedAtTheEndHoldsPromptAndGeneratedTokens() throws IOException {
        Path f = tmp.resolve("end.kvq");
        Run a = run(split, "turbo3.5", prompt, new PromptCache.Settings(f, true, null, null, 256, 0, null, 2000));
        long[] all = Arrays.copyOf(prompt, prompt.length + STEPS);
        System.arraycopy(a.tokens(), 0, all, prompt.length, STEPS);
        // the file holds the prompt and the STEPS fed tokens; the last sampled token was never fed
        Run b = run(split, "turbo3.5", all, load(f));
        assertEquals(all.length, b.restored(), b.log());
        assertArrayEquals(a.logits()[STEPS], b.logits()[0], "logits after the last fed token come from the file");
    }

    @Test
    void savedPrefixGivesTheSameGreedyTokensAsAFreshPrefill() throws IOException {
        Path f = tmp.resolve("prefix.kvq");
        run(split, "turbo3.5", Arrays.copyOf(prompt, 200), save(f));
        Run fresh = run(split, "turbo3.5", prompt, PromptCache.Settings.file(null, null));
        Run loaded = run(split, "turbo3.5", prompt, load(f));
        assertEquals(200, loaded.restored(), loaded.log());
        assertArrayEquals(fresh.tokens(), loaded.tokens());
        // a prompt that leaves the saved one at token 150 reuses its first 150 tokens
        long[] other = prompt.clone();
        other[150] = (other[150] + 1) % 4096;
        Run partial = run(split, "turbo3.5", other, load(f));
        assertEquals(150, partial.restored(), partial.log());
        assertTrue(partial.log().contains("using the first 150 of the 200 tokens"), partial.log());
        assertArrayEquals(run(split, "turbo3.5", other, PromptCache.Settings.file(null, null)).tokens(), partial.tokens());
    }

    /** Every unusable file: exactly one line on the log, and the same logits as a run without a cache. */
    @Test
    void unusableCacheFilesFallBackToAFreshPrefillWithOneLine() throws IOException {
        long[] ids = Arrays.copyOf(prompt, 120);
        Run fresh = run(split, "turbo3.5", ids, PromptCache.Settings.file(null, null));
        Path good = tmp.resolve("good.kvq");
        run(split, "turbo3.5", ids, save(good));
        byte[] bytes = Files.readAllBytes(good);

        Path truncated = tmp.resolve("truncated.kvq");
        Files.write(truncated, Arrays.copyOf(bytes, bytes.length - 1000));
        Path corrupted = tmp.resolve("corrupted.kvq");
        byte[] c = bytes.clone();
        c[c.length / 2] ^= 4;
        Files.write(corrupted, c);
        Path future = tmp.resolve("future.kvq");
        byte[] fu = bytes.clone();
        fu[8] = 7;
        Files.write(future, fu);
        Path otherModel = tmp.resolve("other-model.kvq");
        try (LayeredKvCache cache = KvCaches.create("turbo3.5", split.layers(), split.kvHeads(), split.headDim());
             var l = io.kvquant.persist.CacheFile.open(good, io.kvquant.persist.CacheIdentity.of(
                     io.kvquant.demo.cli.ModelPaths.sha256(split.file()), cache))) {
            l.restore(cache);
            io.kvquant.persist.CacheFile.write(otherModel, cache, "0".repeat(64), ids, null);
        }
        String[][] cases = {
                {"truncated.kvq", "is truncated"},
                {"corrupted.kvq", "is corrupted (checksum mismatch"},
                {"future.kvq", "format version 7, newer than this kvquant reads (2)"},
                {"other-model.kvq", "made for a different model"},
                {"missing.kvq", "does not exist yet"},
        };
        for (String[] k : cases) {
            Run r = run(split, "turbo3.5", ids, load(tmp.resolve(k[0])));
            assertEquals(0, r.restored(), k[0]);
            assertEquals(1, r.log().lines().count(), k[0] + ": " + r.log());
            assertTrue(r.log().contains(k[1]) && r.log().contains("prefilling the prompt"), k[0] + ": " + r.log());
            assertArrayEquals(fresh.logits()[STEPS], r.logits()[STEPS], k[0]);
        }
        // another cache config
        Run r = run(split, "turbo2.5", ids, load(good));
        assertEquals(0, r.restored());
        assertTrue(r.log().contains("made with cache config 'turbo3.5', this run uses 'turbo2.5'"), r.log());
    }

    @Test
    void kiviIsRefusedUpFront() {
        try (LayeredKvCache cache = KvCaches.create("kivi2", split.layers(), split.kvHeads(), split.headDim())) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> PromptCache.open(save(tmp.resolve("k.kvq")), split.file(), cache, new PrintWriter(new StringWriter())));
            assertTrue(e.getMessage().contains("KIVI caches cannot be saved"), e.getMessage());
        }
    }

    @Test
    void directoryStoreReusesTheLongestStoredPrefix() throws IOException {
        Path store = tmp.resolve("store");
        PromptCache.Settings s = new PromptCache.Settings(null, false, null, store.toString(), 64, 0, null, 2000);
        // the default preset keeps the last 32 tokens in its fp16 window: the 168 before them are in
        // its middle tier and stored as the records they become on leaving it, so blocks 0-1 (128
        // tokens) are stored; keys are centered, the blocks carry the mean
        Run first = run(split, "turbo3.5", Arrays.copyOf(prompt, 200), s);
        assertEquals(0, first.restored());
        try (var files = Files.list(store)) {
            assertEquals(2, files.count());
        }
        Run second = run(split, "turbo3.5", prompt, s);
        assertEquals(128, second.restored(), second.log());
        assertArrayEquals(run(split, "turbo3.5", prompt, PromptCache.Settings.file(null, null)).tokens(), second.tokens());
        assertFalse(second.log().contains("refused"), second.log());
    }

    /** Two runs through a real Redis with a key file: the second reuses the first's blocks and generates the same tokens. */
    @Test
    void redisStoreWithAKeyReusesBlocksAcrossRuns() throws Exception {
        Path key = Files.writeString(tmp.resolve("key"), "0123456789abcdef0123456789abcdef\n");
        try (RedisServer srv = RedisServer.start(tmp.resolve("redis"))) {
            PromptCache.Settings s = new PromptCache.Settings(null, false, null, srv.url(), 64, 0, key, 2000);
            Run first = run(split, "turbo3.5", Arrays.copyOf(prompt, 200), s);
            assertEquals(0, first.restored());
            Run second = run(split, "turbo3.5", prompt, s);
            assertEquals(128, second.restored(), second.log()); // blocks 0-1: the window's 64 tokens are not blocks
            assertArrayEquals(run(split, "turbo3.5", prompt, PromptCache.Settings.file(null, null)).tokens(), second.tokens());
            // another key: the stored blocks are refused, one line, normal prefill, same tokens
            Path other = Files.writeString(tmp.resolve("other"), "another-key-another-key-another-key");
            Run third = run(split, "turbo3.5", prompt, new PromptCache.Settings(null, false, null, srv.url(), 64, 0, other, 2000));
            assertEquals(0, third.restored());
            assertEquals(1, third.log().lines().count(), third.log());
            assertTrue(third.log().contains("fails its authentication tag"), third.log());
            assertArrayEquals(second.tokens(), third.tokens());
        }
    }
}
