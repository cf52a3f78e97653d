package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A second architecture: a tiny random GPT-2-style decoder (learned positions, LayerNorm,
 * multi-head attention, Where-masked scores divided by sqrt(d); made by
 * models/scripts/make_gpt2_fixture.py). Round-trip decoding and the Java-attention cut must work
 * on it as on the Llama-style bundled model.
 */
class Gpt2FixtureTest {

    @Test
    void javaAttentionMatchesRoundTripOnGpt2(@TempDir Path tmp) throws IOException, URISyntaxException {
        Path src = Path.of(Gpt2FixtureTest.class.getResource("/tiny-gpt2/model.onnx").toURI()).getParent();
        for (String f : new String[] {"model.onnx", "config.json"}) {
            Files.copy(src.resolve(f), tmp.resolve(f));
        }
        JavaAttentionModel.prepare(tmp);
        SplittableRandom rnd = new SplittableRandom(11);
        long[] prompt = new long[40];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = rnd.nextInt(256);
        }
        DecoderModel.Options o = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
        try (DecoderModel plain = DecoderModel.open(tmp, o);
             JavaAttentionModel split = JavaAttentionModel.open(tmp, o);
             KvCache a = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache b = KvCaches.create("full", split.layers(), split.kvHeads(), split.headDim())) {
            assertEquals(2, split.layers());
            assertEquals(plain.kvHeads(), split.kvHeads());
            assertEquals(16, split.headDim());
            Decoder x = plain.newDecoder(a, 16);
            Decoder y = split.newDecoder(b, 16);
            float[] lx = x.prefill(prompt, null);
            float[] ly = y.prefill(prompt, null);
            for (int step = 0; step <= 20; step++) {
                double diff = TestModel.maxAbsDiff(lx, ly);
                assertTrue(diff < 1e-3, "step " + step + ": max |logit diff| " + diff);
                if (step < 20) {
                    long t = rnd.nextInt(256);
                    lx = x.step(t);
                    ly = y.step(t);
                }
            }
        }
    }
}
