package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The engine (the default mode) against the unsplit model on every bundled model and fixture,
 * against the round-trip reference with a compressed cache, and its automatic preparation.
 */
class EngineTest {

    static final DecoderModel.Options ONE = new DecoderModel.Options(1, DecoderModel.Ep.CPU);

    record Case(String name, Path dir, long[] prompt, int chunk) {
    }

    static Path fixture(String name) {
        try {
            return Path.of(EngineTest.class.getResource("/" + name + "/model.onnx").toURI()).getParent();
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static long[] longPrompt(Path modelDir, int n) throws IOException {
        try (TextTokenizer tok = TextTokenizer.open(modelDir)) {
            long[] all = tok.encode(Files.readString(TestModel.dir().getParent().resolve("prompts/long.txt")));
            return Arrays.copyOf(all, Math.min(n, all.length));
        }
    }

    static List<Case> cases() throws IOException {
        long[] random = new long[40];
        SplittableRandom rnd = new SplittableRandom(11);
        for (int i = 0; i < random.length; i++) {
            random[i] = rnd.nextInt(256);
        }
        return List.of(
                new Case("kvq-llama", TestModel.dir(), longPrompt(TestModel.dir(), 300), 64),
                new Case("kvq-gpt2", TestModel.dir("kvq-gpt2"), longPrompt(TestModel.dir("kvq-gpt2"), 300), 64),
                new Case("tiny-gpt2", fixture("tiny-gpt2"), random, 16));
    }

    static int argmax(float[] v) {
        return io.kvquant.demo.sampling.Sampler.argmax(v);
    }

    /** max |a - b| over max |b|: the logit error relative to the logits' scale. */
    static double relErr(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num = Math.max(num, Math.abs(a[i] - b[i]));
            den = Math.max(den, Math.abs(b[i]));
        }
        return num / den;
    }

    @Test
    void fullCacheEngineMatchesTheUnsplitModelOnEveryModel() throws IOException {
        // With a lossless cache the engine computes what the unsplit graph computes; only the
        // order of float sums in attention differs (Java kernels vs ONNX Runtime's MatMul/Softmax).
        // The unsplit model is driven with `full` through the round-trip hook, which KvHookTest
        // holds exactly equal to plain ONNX Runtime decoding with present fed back as past.
        for (Case c : cases()) {
            try (DecoderModel plain = DecoderModel.open(c.dir(), ONE);
                 JavaAttentionModel engine = JavaAttentionModel.open(c.dir(), ONE)) {
                for (int chunk : new int[] {c.prompt().length, c.chunk()}) {
                    try (KvCache a = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
                         KvCache b = KvCaches.create("full", engine.layers(), engine.kvHeads(), engine.headDim())) {
                        Decoder x = plain.newDecoder(a, chunk);
                        Decoder y = engine.newDecoder(b, chunk);
                        float[] lx = x.prefill(c.prompt(), null);
                        float[] ly = y.prefill(c.prompt(), null);
                        double worst = 0;
                        for (int step = 0; step <= 16; step++) {
                            double e = relErr(ly, lx);
                            worst = Math.max(worst, e);
                            assertTrue(e < 1e-4, c.name() + ", chunk " + chunk + ", step " + step + ": relative logit error "
                                    + e);
                            assertEquals(argmax(lx), argmax(ly), c.name() + ", chunk " + chunk + ", step " + step);
                            if (step < 16) {
                                long t = argmax(lx);
                                lx = x.step(t);
                                ly = y.step(t);
                            }
                        }
                        System.out.printf("engine vs unsplit, full, %s, prefill chunk %d: worst relative logit error %.2e%n",
                                c.name(), chunk, worst);
                    }
                }
            }
        }
    }

    static double relL2(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - b[i]) * (double) (a[i] - b[i]);
            den += b[i] * (double) b[i];
        }
        return Math.sqrt(num / den);
    }

    @Test
    void turbo35EngineStaysWithinQuantizationNoiseOfRoundTrip() throws IOException {
        // Both decode over a turbo3.5 cache of the same codec and seed, but they quantize different
        // things: round-trip hands the dense graph the reconstructed past plus the current
        // tokens' keys and values in full precision (a prefill chunk attends to itself unquantized,
        // a decode step to its own key exactly), the engine appends the current tokens first and
        // attends on their codes too. So they are two equally valid quantized runs, not the same
        // computation, and free-running greedy paths part once a near-tie flips (measured: the
        // first token agrees, then paths differ from token 2 on this 1,453-token prompt).
        // The bound that holds, teacher-forced on full precision's greedy tokens so every step sees
        // the same context: the engine is no farther from round-trip than quantization noise,
        // i.e. within 1.5x the larger of the two runs' distances from full, and the top-1 token
        // agrees on most steps.
        Path dir = TestModel.dir();
        long[] prompt = longPrompt(dir, 100_000);
        int steps = 16;
        try (DecoderModel plain = DecoderModel.open(dir, ONE);
             JavaAttentionModel engine = JavaAttentionModel.open(dir, ONE);
             KvCache f = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache a = KvCaches.create("turbo3.5", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache b = KvCaches.create("turbo3.5", plain.layers(), plain.kvHeads(), plain.headDim())) {
            Decoder full = plain.newDecoder(f, 256);
            Decoder rt = plain.newDecoder(a, 256);
            Decoder en = engine.newDecoder(b, 256);
            float[] lf = full.prefill(prompt, null);
            float[] lr = rt.prefill(prompt, null);
            float[] le = en.prefill(prompt, null);
            int agree = 0;
            int agreeFull = 0;
            double worst = 0;
            for (int i = 0; i < steps; i++) {
                double er = relL2(le, lr);
                double noise = Math.max(relL2(lr, lf), relL2(le, lf));
                worst = Math.max(worst, er / noise);
                assertTrue(er <= 1.5 * noise, "step " + i + ": engine vs round-trip " + er + ", quantization noise " + noise);
                agree += argmax(le) == argmax(lr) ? 1 : 0;
                agreeFull += argmax(lr) == argmax(lf) ? 1 : 0;
                long t = argmax(lf);
                lf = full.step(t);
                lr = rt.step(t);
                le = en.step(t);
            }
            System.out.printf("turbo3.5 engine vs round-trip, teacher-forced %d steps: top-1 agree %d/%d (round-trip vs full "
                    + "%d/%d), worst distance / quantization noise %.2f%n", steps, agree, steps, agreeFull, steps, worst);
            assertTrue(agree >= steps * 3 / 4, "top-1 agreement " + agree + "/" + steps);
            assertEquals(a.bytesUsed(), b.bytesUsed(), "same tokens, same bytes");
        }
    }

    static Path copyModel(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        for (String f : new String[] {"model.onnx", "config.json"}) {
            Files.copy(from.resolve(f), to.resolve(f), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
        return to;
    }

    @Test
    void preparesOnFirstUseReusesAfterAndRedoesAChangedModel(@TempDir Path tmp) throws IOException {
        Path root = tmp.resolve("cache");
        Path model = copyModel(fixture("tiny-gpt2"), tmp.resolve("model"));
        List<String> lines = new ArrayList<>();
        int hashed = PreparedModels.HASHED.get();
        Path first;
        try (JavaAttentionModel m = JavaAttentionModel.open(model, ONE, root, lines::add)) {
            first = m.preparedDir();
            assertEquals(2, m.layers());
        }
        assertEquals(root.resolve("prepared").resolve(PreparedModels.hashFile(model.resolve("model.onnx"))), first,
                "keyed by the model's sha256");
        assertEquals(2, lines.size(), "a progress line before and after the cut: " + lines);
        assertTrue(lines.get(0).contains("preparing") && lines.get(0).contains(first.toString()), lines.get(0));
        assertTrue(Files.isRegularFile(first.resolve("manifest.json")));
        try (var s = Files.list(model)) {
            assertEquals(2, s.count(), "nothing written into the model directory");
        }
        // second use: reused, silently, and the model is not hashed again (the index vouches for it)
        hashed = PreparedModels.HASHED.get() - hashed;
        int before = PreparedModels.HASHED.get();
        lines.clear();
        try (JavaAttentionModel m = JavaAttentionModel.open(model, ONE, root, lines::add)) {
            assertEquals(first, m.preparedDir());
        }
        assertEquals(List.of(), lines, "no preparation the second time");
        assertEquals(before, PreparedModels.HASHED.get(), "second start: sha256 from the index, no re-hash");
        assertTrue(hashed >= 1);

        // the model changes (another architecture in the same place): hashed again and cut again
        copyModel(TestModel.dir(), model);
        try (JavaAttentionModel m = JavaAttentionModel.open(model, ONE, root, lines::add)) {
            assertNotEquals(first, m.preparedDir(), "a changed model gets its own preparation");
            assertEquals(4, m.layers(), "the new model's cut, not the old one's");
        }
        assertTrue(lines.get(0).contains("preparing"), String.valueOf(lines));
        assertTrue(PreparedModels.HASHED.get() > before, "changed file: hashed again");
    }

    @Test
    void sameSizeSameMtimeChangeIsStillNoticed(@TempDir Path tmp) throws IOException {
        // the index trusts size + mtime + ctime + inode; a tool that keeps size and mtime (cp -p,
        // touch -r) cannot keep the ctime, so the file is hashed again
        Path root = tmp.resolve("cache");
        Path f = tmp.resolve("blob");
        Files.write(f, new byte[] {1, 2, 3, 4});
        String a = PreparedModels.sha256(root, f, s -> { });
        FileTime mtime = Files.getLastModifiedTime(f);
        sleepMs(20);
        Files.write(f, new byte[] {1, 2, 3, 5});
        Files.setLastModifiedTime(f, mtime);
        int before = PreparedModels.HASHED.get();
        String b = PreparedModels.sha256(root, f, s -> { });
        assertEquals(before + 1, PreparedModels.HASHED.get(), "hashed again");
        assertNotEquals(a, b);
        assertEquals(PreparedModels.hashFile(f), b);
    }

    static void sleepMs(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void brokenPreparationIsRedone(@TempDir Path tmp) throws IOException {
        Path root = tmp.resolve("cache");
        Path model = copyModel(fixture("tiny-gpt2"), tmp.resolve("model"));
        Path dir = JavaAttentionModel.prepare(model, root, s -> { }).dir();
        Path piece = dir.resolve("piece-0.onnx");
        byte[] all = Files.readAllBytes(piece);
        Files.write(piece, Arrays.copyOf(all, all.length / 2)); // truncated, e.g. a full disk
        PreparedModels.Prepared again = JavaAttentionModel.prepare(model, root, s -> { });
        assertTrue(again.made(), "a truncated piece is noticed and the cut redone");
        assertEquals(dir, again.dir());
        assertEquals(all.length, Files.size(piece));
        try (JavaAttentionModel m = JavaAttentionModel.open(model, ONE, root, s -> { })) {
            assertEquals(2, m.layers());
        }
    }

    @Test
    void unwritableCacheIsOneClearLine(@TempDir Path tmp) throws IOException {
        Path model = copyModel(fixture("tiny-gpt2"), tmp.resolve("model"));
        // a regular file where the folder should be (permissions do not stop root, which runs CI here)
        Path file = Files.writeString(tmp.resolve("not-a-dir"), "x");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> JavaAttentionModel.open(model, ONE, file, s -> { }));
        assertFalse(e.getMessage().contains("\n"), e.getMessage());
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("set KVQ_CACHE_DIR"), e.getMessage());
    }

    @Test
    void twoProcessesPreparingAtOnceShareOneCompleteCopy(@TempDir Path tmp) throws Exception {
        Path root = tmp.resolve("cache");
        Path model = copyModel(fixture("tiny-gpt2"), tmp.resolve("model"));
        ExecutorService pool = Executors.newFixedThreadPool(3);
        try {
            List<Future<PreparedModels.Prepared>> fs = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                Callable<PreparedModels.Prepared> c = () -> JavaAttentionModel.prepare(model, root, s -> { });
                fs.add(pool.submit(c));
            }
            Path dir = fs.get(0).get().dir();
            for (Future<PreparedModels.Prepared> f : fs) {
                assertEquals(dir, f.get().dir());
            }
            try (JavaAttentionModel m = JavaAttentionModel.open(model, ONE, root, s -> { })) {
                assertEquals(dir, m.preparedDir());
            }
            try (var s = Files.list(root.resolve("prepared"))) {
                assertEquals(List.of(dir), s.toList(), "no temporary folders left behind");
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
