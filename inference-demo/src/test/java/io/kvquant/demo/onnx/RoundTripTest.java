package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.Sampler;
import io.kvquant.demo.text.Tokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class RoundTripTest {

    private static DecoderModel model;
    private static long[] prompt;

    @BeforeAll
    static void open() throws Exception {
        Path dir = BundledModel.dir();
        model = new DecoderModel(dir, 2, "cpu");
        try (Tokenizer tok = new Tokenizer(dir)) {
            String text = Files.readString(dir.getParent().resolve("prompts").resolve("long.txt"));
            prompt = Arrays.copyOf(tok.encode(text), 300);
        }
    }

    @AfterAll
    static void close() {
        model.close();
    }

    private static KvCache cache(String spec) {
        ModelInfo i = model.info();
        return KvCaches.create(spec, i.layers(), i.kvHeads(), i.headDim());
    }

    @Test
    void fullCacheGivesExactlyThePlainOnnxRuntimeLogits() {
        int L = model.info().layers();
        float[][] past = new float[2 * L][0];
        try (KvCache c = cache("full")) {
            float[] a = model.plainStep(prompt, past, 0);
            float[] b = model.step(prompt, c, false);
            assertArrayEquals(a, b, "prefill");
            int len = prompt.length;
            for (int s = 0; s < 12; s++) {
                long next = Sampler.argmax(a);
                a = model.plainStep(new long[]{next}, past, len);
                b = model.step(new long[]{next}, c, false);
                len++;
                assertArrayEquals(a, b, "decode step " + s);
            }
            assertEquals(len, c.length(0));
        }
    }

    @Test
    void chunkedPrefillEqualsUnchunked() {
        try (KvCache one = cache("full"); KvCache chunked = cache("full")) {
            float[] a = new Generator(model, 1000).prefill(prompt, one, null);
            float[] b = new Generator(model, 64).prefill(prompt, chunked, null);
            assertArrayEquals(a, b, 1e-4f);
            float[] k1 = new float[model.info().kvHeads() * prompt.length * model.info().headDim()];
            float[] v1 = new float[k1.length];
            float[] k2 = new float[k1.length];
            float[] v2 = new float[k1.length];
            one.read(1, 0, prompt.length, k1, v1);
            chunked.read(1, 0, prompt.length, k2, v2);
            assertArrayEquals(k1, k2, 1e-4f);
        }
    }

    /** turbo3.5 against full, teacher-forced on the same tokens: top-1 agreement and logit closeness. */
    @Test
    void turbo35StaysCloseToFull() {
        try (KvCache full = cache("full"); KvCache t = cache("turbo3.5")) {
            Generator g = new Generator(model, 128);
            float[] a = g.prefill(prompt, full, null);
            float[] b = g.prefill(prompt, t, null);
            int agree = 0;
            int steps = 24;
            double maxRel = 0;
            for (int s = 0; s < steps; s++) {
                int ta = Sampler.argmax(a);
                if (ta == Sampler.argmax(b)) {
                    agree++;
                }
                double num = 0;
                double den = 0;
                for (int i = 0; i < a.length; i++) {
                    num += (a[i] - b[i]) * (double) (a[i] - b[i]);
                    den += (double) a[i] * a[i];
                }
                maxRel = Math.max(maxRel, Math.sqrt(num / den));
                a = model.step(new long[]{ta}, full, false);
                b = model.step(new long[]{ta}, t, false);
            }
            assertTrue(agree >= steps * 3 / 4, "greedy agreement " + agree + "/" + steps);
            assertTrue(maxRel < 0.1, "relative logit error " + maxRel);
        }
    }

    /** A short soak: many steps with the cache cleared every 64 tokens; native memory must not grow. */
    @Test
    void noNativeMemoryGrowthAcrossSteps() {
        try (KvCache c = cache("turbo3.5")) {
            long[] start = Arrays.copyOf(prompt, 16);
            long rss0 = 0;
            for (int round = 0; round < 8; round++) {
                c.clear();
                float[] l = model.step(start, c, false);
                for (int s = 0; s < 48; s++) {
                    l = model.step(new long[]{Sampler.argmax(l)}, c, false);
                }
                if (round == 1) {
                    System.gc();
                    rss0 = currentRss();
                }
            }
            System.gc();
            long growth = currentRss() - rss0;
            assertTrue(growth < 48L << 20, "resident memory grew by " + (growth >> 20) + " MiB over 6 x 64 steps");
        }
    }

    static long currentRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024L;
                }
            }
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
        throw new IllegalStateException("no VmRSS in /proc/self/status");
    }

    @Test
    void samplerIsSeededAndRespectsTopK() {
        float[] logits = {1f, 3f, 2f, 0.5f};
        assertEquals(1, Sampler.greedy().next(logits));
        Sampler a = new Sampler(1f, 2, 1f, 7);
        Sampler b = new Sampler(1f, 2, 1f, 7);
        for (int i = 0; i < 50; i++) {
            int x = a.next(logits);
            assertEquals(x, b.next(logits));
            assertTrue(x == 1 || x == 2, "top-k=2 keeps tokens 1 and 2");
        }
        assertEquals(1, new Sampler(1f, 0, 0.01f, 3).next(logits), "top-p tiny keeps the top token");
    }
}
