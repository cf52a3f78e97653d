package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** In-graph dequantization (CPU execution provider): the same numbers as round-trip mode with the same cache. */
class GraphModeTest {

    static Path dir;
    static long[] prompt;

    @BeforeAll
    static void copy(@TempDir Path tmp) throws IOException {
        dir = tmp.resolve("m");
        Files.createDirectories(dir);
        for (String f : new String[] {"model.onnx", "config.json", "tokenizer.json"}) {
            Files.copy(TestModel.dir().resolve(f), dir.resolve(f));
        }
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            prompt = Arrays.copyOf(tok.encode(Files.readString(TestModel.dir().getParent().resolve("prompts/long.txt"))), 200);
        }
    }

    /** Worst max-abs logit difference between round-trip and graph mode over a chunked prefill and 16 steps. */
    static double compare(String kv, float[][] fullOut) throws IOException {
        KvQuantConfig cfg = KvQuantConfig.parse(kv);
        GraphModel.prepare(dir, cfg);
        DecoderModel.Options o = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
        try (DecoderModel plain = DecoderModel.open(dir, o); GraphModel graph = GraphModel.open(dir, cfg, o);
             KvCache a = KvCaches.create(cfg, plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache b = KvCaches.create(cfg, plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache f = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim())) {
            Decoder rt = plain.newDecoder(a, 64);
            GraphDecoder gd = (GraphDecoder) graph.newDecoder(b, 64);
            Decoder full = plain.newDecoder(f, 64);
            float[] x = rt.prefill(prompt, null);
            float[] y = gd.prefill(prompt, null);
            float[] z = full.prefill(prompt, null);
            double worst = 0;
            for (int i = 0; i <= 16; i++) {
                worst = Math.max(worst, TestModel.maxAbsDiff(x, y));
                assertEquals(Sampler.argmax(x), Sampler.argmax(y), kv + " step " + i);
                if (fullOut != null) {
                    fullOut[i] = new float[] {(float) TestModel.maxAbsDiff(y, z)};
                }
                if (i < 16) {
                    int t = Sampler.argmax(z); // same tokens for all three
                    x = rt.step(t);
                    y = gd.step(t);
                    z = full.step(t);
                }
            }
            assertEquals(a.bytesUsed(), b.bytesUsed());
            assertTrue(gd.bytesMoved() > 0);
            return worst;
        }
    }

    @Test
    void graphModeEqualsRoundTripWithTheSameCache() throws IOException {
        for (String kv : new String[] {"turbo3.5,window=0,center=off", "turbo2.5,window=0,center=off", "k4v3,rot=haar,window=0,center=off"}) {
            double worst = compare(kv, null);
            System.out.printf("graph vs round-trip, %s: worst max |logit diff| %.2e%n", kv, worst);
            // same codes, same reconstruction; only float summation order differs (dense rotation
            // matrix vs fast transform, attention in the rotated domain)
            assertTrue(worst < 2e-3, kv + ": " + worst);
        }
    }

    @Test
    void eightBitsIsCloseToTheDenseModel() throws IOException {
        float[][] diffs = new float[17][];
        compare("turbo8,window=0,center=off", diffs);
        double worst = Arrays.stream(diffs).mapToDouble(d -> d[0]).max().orElseThrow();
        System.out.printf("graph turbo8 vs full: worst max |logit diff| %.3f%n", worst);
        assertTrue(worst < 0.25, "turbo8 in graph mode vs the dense model: " + worst);
    }

    @Test
    void unsupportedSettingsAndStalePreparationsAreRefused() throws IOException {
        for (String kv : new String[] {"turbo3.5,qjl=k", "kivi2", "turbo3.5,window=16", "full", "turbo3.5"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> GraphModel.prepare(dir, KvQuantConfig.parse(kv)), kv);
            assertTrue(e.getMessage().contains("--mode graph"), e.getMessage());
        }
        DecoderModel.Options o = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> GraphModel.open(dir, KvQuantConfig.parse("turbo4,window=0,center=off"), o));
        assertTrue(e.getMessage().contains("kvq prepare"), e.getMessage());
        GraphModel.prepare(dir, KvQuantConfig.parse("turbo4,window=0,center=off"));
        try (GraphModel g = GraphModel.open(dir, KvQuantConfig.parse("turbo4,window=0,center=off"), o);
             KvCache other = KvCaches.create("turbo3.5", g.layers(), g.kvHeads(), g.headDim())) {
            e = assertThrows(IllegalArgumentException.class, () -> g.newDecoder(other, 16));
            assertTrue(e.getMessage().contains("prepared for --kv turbo4,window=0,center=off"), e.getMessage());
        }
    }
}
