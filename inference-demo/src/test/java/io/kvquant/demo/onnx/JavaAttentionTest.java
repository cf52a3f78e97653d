package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Java-attention mode against the unsplit model: exact with a lossless cache, close with turbo3.5. */
class JavaAttentionTest {

    static Path dir;
    static DecoderModel plain;
    static JavaAttentionModel split;
    static DecodeAttention attention;
    static long[] prompt;

    @BeforeAll
    static void prepare(@TempDir Path tmp) throws IOException {
        dir = tmp.resolve("kvq-llama");
        Files.createDirectories(dir);
        for (String f : new String[] {"model.onnx", "config.json", "tokenizer.json"}) {
            Files.copy(TestModel.dir().resolve(f), dir.resolve(f));
        }
        JavaAttentionModel.prepare(dir);
        plain = DecoderModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU));
        split = JavaAttentionModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU));
        attention = new DecodeAttention(1);
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            prompt = Arrays.copyOf(tok.encode(Files.readString(TestModel.dir().getParent().resolve("prompts/long.txt"))), 300);
        }
    }

    @AfterAll
    static void close() {
        split.close();
        plain.close();
        attention.close();
    }

    /** Greedy run: prefill in chunks, then steps; returns the logits of every step. */
    static float[][] run(Decoder dec, int steps) {
        float[][] out = new float[steps + 1][];
        out[0] = dec.prefill(prompt, null);
        for (int i = 0; i < steps; i++) {
            out[i + 1] = dec.step(argmax(out[i]));
        }
        return out;
    }

    static int argmax(float[] v) {
        return io.kvquant.demo.sampling.Sampler.argmax(v);
    }

    @Test
    void fullCacheMatchesTheUnsplitModel() {
        for (int chunk : new int[] {300, 64}) {
            try (KvCache a = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
                 KvCache b = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim())) {
                float[][] want = run(new KvHookDecoder(plain, a, chunk), 24);
                float[][] got = run(new JavaAttentionDecoder(split, b, attention, chunk), 24);
                for (int i = 0; i < want.length; i++) {
                    double diff = TestModel.maxAbsDiff(want[i], got[i]);
                    assertTrue(diff < 2e-3, "chunk " + chunk + ", step " + i + ": max |logit diff| " + diff);
                    assertEquals(argmax(want[i]), argmax(got[i]), "chunk " + chunk + ", step " + i);
                }
            }
        }
    }

    @Test
    void compressedCacheStaysWithinQuantizationNoiseOfRoundTrip() {
        // Both read the same turbo3.5 reconstruction; they differ in the prefill (round-trip
        // attends in full precision within a chunk, java-attention reads the chunk's own codes)
        // and in float summation order. Bound: the same relative logit error the round-trip hook
        // is held to against full (KvHookTest), and top-1 agreement on most steps.
        int steps = 24;
        try (KvCache full = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache a = KvCaches.create("turbo3.5", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache b = KvCaches.create("turbo3.5", plain.layers(), plain.kvHeads(), plain.headDim())) {
            // teacher-forced on full's greedy tokens, so every step compares the same context
            float[][] ref = run(new KvHookDecoder(plain, full, 300), steps);
            Decoder rt = new KvHookDecoder(plain, a, 300);
            Decoder ja = new JavaAttentionDecoder(split, b, attention, 300);
            float[] x = rt.prefill(prompt, null);
            float[] y = ja.prefill(prompt, null);
            int agree = 0;
            double worst = 0;
            for (int i = 0; i <= steps; i++) {
                double num = 0;
                double den = 0;
                for (int k = 0; k < x.length; k++) {
                    num += (x[k] - y[k]) * (double) (x[k] - y[k]);
                    den += x[k] * (double) x[k];
                }
                worst = Math.max(worst, Math.sqrt(num / den));
                agree += argmax(x) == argmax(y) ? 1 : 0;
                if (i < steps) {
                    int t = argmax(ref[i]);
                    x = rt.step(t);
                    y = ja.step(t);
                }
            }
            System.out.printf("java-attention vs round-trip, turbo3.5: worst relative logit L2 %.4f, top-1 agree %d/%d%n",
                    worst, agree, steps + 1);
            assertTrue(worst < 0.15, "relative logit error " + worst);
            assertTrue(agree >= (steps + 1) * 3 / 4, "top-1 agreement " + agree + "/" + (steps + 1));
            assertEquals(a.bytesUsed(), b.bytesUsed(), "same tokens, same bytes");
        }
    }

    @Test
    void graphWithoutLocatableAttentionGivesAClearError(@TempDir Path tmp) throws IOException {
        // rewrite layer 1's Concat(past, new key) into a Sum: the locator must name the layer
        io.kvquant.demo.graph.OnnxModel m = io.kvquant.demo.graph.OnnxModel.read(dir.resolve("model.onnx"));
        io.kvquant.demo.graph.OnnxModel.Node concat = m.producer.get("present.1.key");
        io.kvquant.demo.graph.Pb node = concat.raw().without(4).add(4, "Sum");
        io.kvquant.demo.graph.Pb graph = m.graph.without(1);
        for (io.kvquant.demo.graph.OnnxModel.Node n : m.nodes) {
            graph.add(1, n == concat ? node : n.raw());
        }
        java.util.List<io.kvquant.demo.graph.Pb.Field> reordered = new java.util.ArrayList<>();
        graph.fields.stream().filter(f -> f.number() == 1).forEach(reordered::add);
        graph.fields.stream().filter(f -> f.number() != 1).forEach(reordered::add);
        Path bad = tmp.resolve("bad.onnx");
        Files.write(bad, m.model.without(7).add(7, new io.kvquant.demo.graph.Pb(reordered)).toBytes());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> io.kvquant.demo.graph.AttentionSplit.of(io.kvquant.demo.graph.OnnxModel.read(bad)));
        assertTrue(e.getMessage().startsWith("layer 1: present.1.key is not Concat"), e.getMessage());
    }

    @Test
    void protobufRoundTripKeepsEveryByte() throws IOException {
        byte[] original = Files.readAllBytes(dir.resolve("model.onnx"));
        assertTrue(Arrays.equals(original, io.kvquant.demo.graph.Pb.parse(original).toBytes()),
                "parse then write must reproduce the model file");
    }
}
