package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A tiny fixture (src/test/resources/tiny-fp16, made by the script beside it): float16
 * past/present tensors, a {@code use_cache_branch} input, no config.json, 2 layers x 2 KV heads
 * x head dim 8 under 4 query heads.
 */
class Fp16ModelTest {

    static Path fixture() throws Exception {
        return Path.of(Fp16ModelTest.class.getResource("/tiny-fp16/model.onnx").toURI());
    }

    @Test
    void discoversFp16AndUseCacheBranchAndDecodesCorrectly() throws Exception {
        Map<?, ?> exp = (Map<?, ?>) Json.parse(Files.readString(fixture().resolveSibling("expected.json")));
        long[] ids = TestModel.longs(exp.get("input_ids"));
        float[] want = TestModel.floats(exp.get("last_logits"));
        try (DecoderModel m = DecoderModel.open(fixture(), new DecoderModel.Options(1, DecoderModel.Ep.CPU))) {
            assertTrue(m.fp16(), "fp16 past detected");
            assertTrue(m.hasUseCacheBranch(), "use_cache_branch detected");
            assertTrue(m.hasPositionIds());
            assertEquals(2, m.layers());
            assertEquals(2, m.kvHeads());
            assertEquals(8, m.headDim());
            assertEquals(-1, m.maxContext(), "no config.json: context unknown");
            try (KvCache cache = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim())) {
                double d = TestModel.maxAbsDiff(want, new KvHookDecoder(m, cache, 9).prefill(ids, null));
                assertTrue(d < 1e-4, "one run, no past: ORT vs torch " + d);
            }
            for (int chunk : new int[] {4, 1}) {
                try (KvCache cache = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim())) {
                    KvHookDecoder dec = new KvHookDecoder(m, cache, chunk);
                    float[] got = dec.prefill(Arrays.copyOf(ids, 6), null);
                    for (int i = 6; i < ids.length; i++) {
                        got = dec.step(ids[i]);
                    }
                    // The past crosses the graph boundary in fp16 (relative rounding 2^-11); with
                    // logits of magnitude ~2 that gives ~1.3e-3 here; the bound is 4x that.
                    double d = TestModel.maxAbsDiff(want, got);
                    System.out.printf("tiny fp16 model, prefill chunk %d: max |ORT - torch fp32| = %.2e%n", chunk, d);
                    assertTrue(d < 5e-3, "chunk " + chunk + ": fp16 past, ORT vs torch fp32 " + d);
                    assertFalse(d == 0, "chunk " + chunk + ": expected some fp16 rounding");
                }
            }
        }
    }
}
