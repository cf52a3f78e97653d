package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/**
 * Java (DJL + ONNX Runtime) against the training framework's reference numbers in golden.json, for
 * the bundled Llama model; {@link Gpt2GoldenParityTest} runs the same checks on the GPT-2 one.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GoldenParityTest {
    /** Torch and ORT differ by float reassociation only; golden floats are rounded to ~1e-6. */
    static final double TOL = 1e-4;

    DecoderModel model;
    Map<String, Object> golden;

    Path modelDir() {
        return TestModel.dir();
    }

    @BeforeAll
    void open() throws Exception {
        model = DecoderModel.open(modelDir(), new DecoderModel.Options(2, DecoderModel.Ep.CPU));
        golden = TestModel.golden(modelDir());
    }

    @AfterAll
    void close() {
        if (model != null) {
            model.close();
        }
    }

    @Test
    void discoversTheGraphShape() throws Exception {
        Map<?, ?> cfg = (Map<?, ?>) io.kvquant.demo.onnx.Json.parse(
                java.nio.file.Files.readString(modelDir().resolve("config.json")));
        assertEquals(((Number) cfg.get("num_hidden_layers")).intValue(), model.layers());
        assertEquals(((Number) cfg.get("num_key_value_heads")).intValue(), model.kvHeads());
        assertEquals(((Number) cfg.get("head_dim")).intValue(), model.headDim());
        assertEquals(((Number) cfg.get("max_position_embeddings")).intValue(), model.maxContext());
        assertTrue(model.opTypes().contains("MatMul") && model.opTypes().contains("Softmax"),
                "plain attention ops expected, found " + model.opTypes());
    }

    @Test
    void tokenizerMatchesGolden() throws Exception {
        Map<?, ?> t = (Map<?, ?>) golden.get("tokenizer");
        assertTrue(t != null, "golden.json has no 'tokenizer' section");
        String text = (String) t.get("text");
        long[] want = TestModel.longs(t.get("token_ids"));
        try (TextTokenizer tok = TextTokenizer.open(modelDir())) {
            long[] got = tok.encode(text);
            assertArrayEquals(want, got, "token ids of " + text);
            assertEquals(text, tok.decode(got), "decode(encode(text)) round trip");
        }
    }

    @Test
    void fullForwardLogitsMatchTorch() {
        Map<?, ?> f = (Map<?, ?>) golden.get("forward");
        long[] ids = TestModel.longs(f.get("input_ids"));
        float[] want = TestModel.floats(f.get("last_logits"));
        float[][] none = new float[model.layers()][0];
        float[] got = model.run(ids, 0, ids.length, 0, none, none).logits();
        double d = TestModel.maxAbsDiff(want, got);
        assertTrue(d <= TOL, "max |ORT - torch| of last-position logits = " + d + " > " + TOL);
    }

    @Test
    void incrementalDecodingMatchesTorchAndFullForward() {
        Map<?, ?> f = (Map<?, ?>) golden.get("forward");
        long[] ids = TestModel.longs(f.get("input_ids"));
        Map<?, ?> inc = (Map<?, ?>) golden.get("incremental");
        int prefix = ((Number) inc.get("prefix_len")).intValue();
        List<?> steps = (List<?>) inc.get("steps");
        try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, 256);
            dec.prefill(Arrays.copyOf(ids, prefix), null);
            float[] last = null;
            for (int i = 0; i < steps.size(); i++) {
                Map<?, ?> s = (Map<?, ?>) steps.get(i);
                long tok = ((Number) s.get("token")).longValue();
                assertEquals(ids[prefix + i], tok, "golden step " + i + " feeds the sequence's next token");
                last = dec.step(tok);
                double d = TestModel.maxAbsDiff(TestModel.floats(s.get("logits")), last);
                assertTrue(d <= TOL, "step " + i + ": max |ORT incremental - torch incremental| = " + d);
            }
            if (prefix + steps.size() == ids.length) {
                double d = TestModel.maxAbsDiff(TestModel.floats(f.get("last_logits")), last);
                assertTrue(d <= TOL, "incremental vs full forward (torch) = " + d);
            }
        }
    }
}
