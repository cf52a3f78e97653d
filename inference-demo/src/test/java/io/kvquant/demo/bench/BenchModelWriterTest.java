package io.kvquant.demo.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.JavaAttentionDecoder;
import io.kvquant.demo.onnx.JavaAttentionModel;
import io.kvquant.demo.onnx.KvHookDecoder;
import io.kvquant.demo.onnx.OrtBaseline;
import io.kvquant.demo.graph.OrtQuantKv;
import io.kvquant.demo.onnx.PlainOrtDecoder;
import io.kvquant.demo.sampling.Sampler;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The benchmark model writer, on tiny geometries (same code as the 8x8x128 benchmark model):
 * ONNX Runtime loads and runs what it writes; prefill equals incremental decoding; the attention
 * cut of {@code kvq prepare} works on it unchanged and gives the unsplit graph's logits; plain
 * ONNX Runtime decoding (present fed back as past) equals the kvquant hook with a full cache.
 */
class BenchModelWriterTest {

    /** Two layers, 4 query heads on 2 KV heads (GQA) of 16 dims, 300-token vocabulary. */
    static final BenchModelWriter.Geometry GQA = new BenchModelWriter.Geometry(2, 64, 4, 2, 16, 96, 300, 512, 10000.0, 7L);
    /** Same without GQA (query heads = KV heads), like the benchmark default. */
    static final BenchModelWriter.Geometry MHA = GQA.withQHeads(2);

    static Path tokenizer() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path t = p.resolve("models/kvq-llama/tokenizer.json");
            if (Files.isRegularFile(t)) {
                return t;
            }
        }
        return fail("models/kvq-llama/tokenizer.json not found above " + Path.of("").toAbsolutePath());
    }

    static Path write(Path dir, BenchModelWriter.Geometry g) throws IOException {
        BenchModelWriter.write(dir, g, tokenizer(), 0, null);
        return dir;
    }

    static long[] prompt(int n, int vocab) {
        SplittableRandom r = new SplittableRandom(11);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt(vocab);
        }
        return ids;
    }

    /** max |a − b| / max |b|: the relative error the targets are stated in. */
    static double relErr(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num = Math.max(num, Math.abs(a[i] - b[i]));
            den = Math.max(den, Math.abs(b[i]));
        }
        return num / den;
    }

    static float[][] greedy(Decoder dec, long[] prompt, int steps) {
        float[][] out = new float[steps + 1][];
        out[0] = dec.prefill(prompt, null);
        for (int i = 0; i < steps; i++) {
            out[i + 1] = dec.step(Sampler.argmax(out[i]));
        }
        return out;
    }

    @Test
    void defaultGeometryHoldsSixtyFourKibPerTokenAndWritesItsConfig() {
        BenchModelWriter.Geometry g = BenchModelWriter.Geometry.benchDefault(4096);
        assertEquals(65536, g.kvBytesPerToken(), "8 layers x 8 KV heads x 128 dims x K,V x 4 bytes");
        assertEquals(1L << 30, g.kvBytesPerToken() * 16384, "1 GiB at 16K tokens");
        g.validate();
        String cfg = BenchModelWriter.configJson(g, BenchModelWriter.Attention.PLAIN, 0);
        assertTrue(cfg.contains("\"num_key_value_heads\": 8") && cfg.contains("\"head_dim\": 128")
                && cfg.contains("\"max_position_embeddings\": 65536"), cfg);
    }

    @Test
    void badGeometriesAreRefusedInOneLine() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GQA.withQHeads(3).validate());
        assertTrue(e.getMessage().contains("multiple of KV heads"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new BenchModelWriter.Geometry(2, 64, 2, 2, 15, 96, 300, 512, 1e4, 1).validate());
        assertTrue(e.getMessage().contains("even"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new BenchModelWriter.Geometry(64, 8192, 64, 8, 128, 28672, 4096, 512, 1e4, 1).validate());
        assertTrue(e.getMessage().contains("2 GiB"), e.getMessage());
    }

    @Test
    void sameSeedSameBytesOtherSeedOtherBytes() throws IOException {
        ByteArrayOutputStream a = new ByteArrayOutputStream();
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        ByteArrayOutputStream c = new ByteArrayOutputStream();
        BenchModelWriter.writeModel(a, GQA, null);
        BenchModelWriter.writeModel(b, GQA, null);
        BenchModelWriter.writeModel(c, new BenchModelWriter.Geometry(2, 64, 4, 2, 16, 96, 300, 512, 10000.0, 8L), null);
        assertArrayEquals(a.toByteArray(), b.toByteArray());
        assertEquals(a.size(), c.size());
        assertFalse(java.util.Arrays.equals(a.toByteArray(), c.toByteArray()));
        // the weights dominate the file: 4 bytes per parameter plus a small graph
        assertTrue(a.size() > GQA.parameters() * 4 && a.size() < GQA.parameters() * 4 + 64 * 1024, "size " + a.size());
    }

    @Test
    void currentModelIsRecognisedAndForeignModelIsNotOverwritten(@TempDir Path tmp) throws IOException {
        Path dir = write(tmp.resolve("m"), GQA);
        assertTrue(BenchModelWriter.isCurrent(dir, GQA));
        assertFalse(BenchModelWriter.isCurrent(dir, MHA));
        Path foreign = tmp.resolve("foreign");
        Files.createDirectories(foreign);
        Files.writeString(foreign.resolve("model.onnx"), "not ours");
        Files.writeString(foreign.resolve("config.json"), "{\"model_type\": \"llama\"}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> write(foreign, GQA));
        assertTrue(e.getMessage().contains("did not make"), e.getMessage());
        assertEquals("not ours", Files.readString(foreign.resolve("model.onnx")));
    }

    @Test
    void prefillEqualsIncrementalDecoding(@TempDir Path tmp) throws IOException {
        for (BenchModelWriter.Geometry g : new BenchModelWriter.Geometry[] {GQA, MHA}) {
            Path dir = write(tmp.resolve("q" + g.qHeads()), g);
            long[] ids = prompt(45, g.vocab());
            try (DecoderModel m = DecoderModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU))) {
                assertEquals(g.layers(), m.layers());
                assertEquals(g.kvHeads(), m.kvHeads());
                assertEquals(g.headDim(), m.headDim());
                assertEquals(g.maxPositions(), m.maxContext());
                float[] whole;
                float[] oneByOne;
                float[] chunked;
                try (PlainOrtDecoder d = new PlainOrtDecoder(m, ids.length)) {
                    whole = d.prefill(ids, null);
                }
                try (PlainOrtDecoder d = new PlainOrtDecoder(m, 1)) {
                    oneByOne = d.prefill(ids, null);
                }
                try (PlainOrtDecoder d = new PlainOrtDecoder(m, 8)) {
                    chunked = d.prefill(ids, null);
                }
                assertEquals(g.vocab(), whole.length);
                double spread = 0;
                for (float v : whole) {
                    assertTrue(Float.isFinite(v));
                    spread = Math.max(spread, Math.abs(v));
                }
                assertTrue(spread > 0.1, "logits are not degenerate: max |logit| " + spread);
                assertTrue(relErr(oneByOne, whole) < 1e-4, "q" + g.qHeads() + ": incremental vs prefill " + relErr(oneByOne, whole));
                assertTrue(relErr(chunked, whole) < 1e-4, "q" + g.qHeads() + ": chunked vs prefill " + relErr(chunked, whole));
            }
        }
    }

    @Test
    void plainOrtDecodingEqualsTheHookWithAFullCache(@TempDir Path tmp) throws IOException {
        Path dir = write(tmp.resolve("m"), GQA);
        long[] ids = prompt(40, GQA.vocab());
        try (DecoderModel m = DecoderModel.open(dir, new DecoderModel.Options(1, DecoderModel.Ep.CPU));
             KvCache cache = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim());
             PlainOrtDecoder plain = new PlainOrtDecoder(m, 16)) {
            KvHookDecoder hook = new KvHookDecoder(m, cache, 16);
            float[] a = plain.prefill(ids, null);
            float[] b = hook.prefill(ids, null);
            for (int step = 0; step < 12; step++) {
                // same graph, same past values, same chunks: the same floats
                assertArrayEquals(b, a, "step " + step);
                int next = Sampler.argmax(a);
                a = plain.step(next);
                b = hook.step(next);
            }
            assertEquals(ids.length + 12, plain.position());
            assertEquals(cache.length(0), plain.position());
            assertEquals(2L * GQA.layers() * GQA.kvHeads() * GQA.headDim() * 4 * plain.position(), plain.pastBytes());
        }
    }

    @Test
    void attentionCutRunsUnchangedAndMatchesTheUnsplitGraph(@TempDir Path tmp) throws IOException {
        for (BenchModelWriter.Geometry g : new BenchModelWriter.Geometry[] {GQA, MHA}) {
            Path dir = write(tmp.resolve("q" + g.qHeads()), g);
            JavaAttentionModel.prepare(dir);
            long[] ids = prompt(50, g.vocab());
            DecoderModel.Options opts = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
            try (DecoderModel plain = DecoderModel.open(dir, opts);
                 JavaAttentionModel split = JavaAttentionModel.open(dir, opts);
                 DecodeAttention attention = new DecodeAttention(1)) {
                assertEquals(g.layers(), split.layers());
                for (int chunk : new int[] {50, 16}) {
                    try (KvCache a = KvCaches.create("full", g.layers(), g.kvHeads(), g.headDim());
                         KvCache b = KvCaches.create("full", g.layers(), g.kvHeads(), g.headDim())) {
                        float[][] want = greedy(new KvHookDecoder(plain, a, chunk), ids, 10);
                        float[][] got = greedy(new JavaAttentionDecoder(split, b, attention, chunk), ids, 10);
                        for (int i = 0; i < want.length; i++) {
                            double e = relErr(got[i], want[i]);
                            assertTrue(e < 1e-4, "q" + g.qHeads() + " chunk " + chunk + " step " + i + ": relative error " + e);
                        }
                    }
                }
            }
        }
    }

    /**
     * The GroupQueryAttention form (the one ONNX Runtime's quantized KV cache runs in) holds the
     * same weights: ONNX Runtime gives the plain form's logits over a prompt and 8 greedy steps
     * (1e-4 relative: fused vs unfused fp32 arithmetic), and the engine's cut of the GQA form
     * with a full cache gives them too.
     */
    @Test
    void gqaFormGivesThePlainFormsLogits(@TempDir Path tmp) throws IOException {
        for (BenchModelWriter.Geometry g : new BenchModelWriter.Geometry[] {GQA, MHA}) {
            Path plainDir = write(tmp.resolve("p" + g.qHeads()), g);
            Path gqaDir = tmp.resolve("g" + g.qHeads());
            BenchModelWriter.write(gqaDir, g, BenchModelWriter.Attention.GQA, tokenizer(), 0, null);
            assertTrue(BenchModelWriter.isCurrent(gqaDir, g, BenchModelWriter.Attention.GQA));
            assertFalse(BenchModelWriter.isCurrent(gqaDir, g), "the GQA form is not the plain model");
            assertFalse(BenchModelWriter.isCurrent(plainDir, g, BenchModelWriter.Attention.GQA));
            long[] ids = prompt(40, g.vocab());
            DecoderModel.Options opts = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
            JavaAttentionModel.prepare(gqaDir);
            try (OrtBaseline a = OrtBaseline.open(plainDir, opts, OrtQuantKv.Setting.ORT, null);
                 OrtBaseline b = OrtBaseline.open(gqaDir, opts, OrtQuantKv.Setting.ORT, null);
                 PlainOrtDecoder da = a.newDecoder(16);
                 PlainOrtDecoder db = b.newDecoder(16);
                 JavaAttentionModel split = JavaAttentionModel.open(gqaDir, opts);
                 DecodeAttention attention = new DecodeAttention(1);
                 KvCache cache = KvCaches.create("full", g.layers(), g.kvHeads(), g.headDim())) {
                JavaAttentionDecoder engine = new JavaAttentionDecoder(split, cache, attention, 16);
                float[] x = da.prefill(ids, null);
                float[] y = db.prefill(ids, null);
                float[] z = engine.prefill(ids, null);
                for (int step = 0; step < 8; step++) {
                    assertTrue(relErr(y, x) < 1e-4, "q" + g.qHeads() + " step " + step + ": GQA vs plain " + relErr(y, x));
                    assertTrue(relErr(z, y) < 1e-4, "q" + g.qHeads() + " step " + step + ": engine vs ORT " + relErr(z, y));
                    int next = Sampler.argmax(x);
                    x = da.step(next);
                    y = db.step(next);
                    z = engine.step(next);
                }
            }
        }
    }
}
