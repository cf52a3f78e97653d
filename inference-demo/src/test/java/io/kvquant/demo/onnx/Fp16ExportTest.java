package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The fp16 export (models/kvq-llama/fp16: weights, activations, past and logits in half precision)
 * against the fp32 reference logits of golden.json. fp16 keeps 11 significant bits, so each op
 * rounds at ~5e-4 relative. Measured on the bundled model: at most 8.6e-4 of the largest |logit|
 * (0.006 on logits of ~7); the bound is about 6x that, and the top token must not change.
 */
class Fp16ExportTest {
    /** Bound on |fp16 - fp32| of any logit, relative to the largest |logit| of the row. */
    static final double REL_TOL = 5e-3;

    static DecoderModel model;
    static Map<String, Object> golden;

    @BeforeAll
    static void open() throws Exception {
        Path dir = TestModel.dir().resolve("fp16");
        if (!Files.isRegularFile(dir.resolve("model.onnx"))) {
            fail("models/kvq-llama/fp16/model.onnx is missing");
        }
        model = DecoderModel.open(dir, new DecoderModel.Options(2, DecoderModel.Ep.CPU));
        golden = TestModel.golden();
    }

    @AfterAll
    static void close() {
        if (model != null) {
            model.close();
        }
    }

    static void assertClose(float[] want, float[] got, String what) {
        double scale = 0;
        for (float v : want) {
            scale = Math.max(scale, Math.abs(v));
        }
        double d = TestModel.maxAbsDiff(want, got);
        System.out.printf("fp16 export, %s: max |fp16 - fp32| = %.4f (%.2e of max |logit| %.2f)%n", what, d, d / scale, scale);
        assertTrue(d <= REL_TOL * scale, what + ": max |fp16 - fp32| = " + d + " > " + REL_TOL + " x " + scale);
        assertEquals(argmax(want), argmax(got), what + ": top token");
    }

    static int argmax(float[] a) {
        int best = 0;
        for (int i = 1; i < a.length; i++) {
            if (a[i] > a[best]) {
                best = i;
            }
        }
        return best;
    }

    @Test
    void readsAsAnFp16Graph() {
        assertTrue(model.fp16(), "past_key_values should be float16 in the fp16 export");
    }

    @Test
    void fullForwardAgreesWithFp32() {
        Map<?, ?> f = (Map<?, ?>) golden.get("forward");
        long[] ids = TestModel.longs(f.get("input_ids"));
        float[][] none = new float[model.layers()][0];
        float[] got = model.run(ids, 0, ids.length, 0, none, none).logits();
        assertClose(TestModel.floats(f.get("last_logits")), got, "full forward");
    }

    @Test
    void incrementalDecodingWithFp16PastAgreesWithFp32() {
        Map<?, ?> f = (Map<?, ?>) golden.get("forward");
        long[] ids = TestModel.longs(f.get("input_ids"));
        Map<?, ?> inc = (Map<?, ?>) golden.get("incremental");
        int prefix = ((Number) inc.get("prefix_len")).intValue();
        List<?> steps = (List<?>) inc.get("steps");
        try (KvCache cache = KvCaches.create("turbo3.5", model.layers(), model.kvHeads(), model.headDim());
                KvCache full = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, full, 256);
            dec.prefill(Arrays.copyOf(ids, prefix), null);
            for (int i = 0; i < steps.size(); i++) {
                Map<?, ?> s = (Map<?, ?>) steps.get(i);
                float[] got = dec.step(((Number) s.get("token")).longValue());
                assertClose(TestModel.floats(s.get("logits")), got, "step " + i);
            }
            // the compressed cache takes fp16 presents and hands back fp16 pasts
            KvHookDecoder q = new KvHookDecoder(model, cache, 256);
            float[] last = q.prefill(ids, null);
            assertEquals(ids.length, cache.length(0));
            assertEquals(argmax(TestModel.floats(f.get("last_logits"))), argmax(last), "turbo3.5 cache, fp16 model");
        }
    }
}
