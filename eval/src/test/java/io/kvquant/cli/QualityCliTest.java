package io.kvquant.cli;

import static io.kvquant.cli.GenerateCliTest.kvq;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.Json;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code kvq eval perplexity} and {@code kvq eval needle} end to end on the bundled model, small grids. */
class QualityCliTest {

    static final int CTX = 96;
    static final int PREFIX = 48;
    static final String T35 = "turbo3.5,window=0,center=off";
    static final String T25 = "turbo2.5,window=0,center=off";
    static final String AUTO = "auto:3.5,window=0,center=off";

    @SuppressWarnings("unchecked")
    static Map<String, Map<String, Object>> byKv(Map<String, Object> doc) {
        Map<String, Map<String, Object>> m = new java.util.LinkedHashMap<>();
        for (Object o : (List<Object>) doc.get("results")) {
            Map<String, Object> r = (Map<String, Object>) o;
            m.put((String) r.get("kv"), r);
        }
        return m;
    }

    static double num(Map<String, Object> r, String k) {
        return ((Number) r.get(k)).doubleValue();
    }

    @Test
    @SuppressWarnings("unchecked")
    void perplexityScoresTokenByTokenAndComparesWithFull(@TempDir Path tmp) throws IOException {
        Path text = GenerateCliTest.modelDir().getParent().resolve("data/heldout.txt");
        // the bare codecs (no window, no centering): at 96 tokens a 64-token window would hide them
        GenerateCliTest.Run r = kvq("eval", "perplexity", "--kv", "fp16;turbo3.5,window=0,center=off;turbo2.5,window=0,center=off;"
                + "auto:3.5,window=0,center=off", "--context", "" + CTX,
                "--prefix", "" + PREFIX, "--windows", "1", "--threads", "1", "--json", "--out", tmp.toString());
        assertEquals(0, r.code(), r.err());
        Map<String, Object> doc = (Map<String, Object>) Json.parse(r.out());
        assertEquals(Boolean.TRUE, doc.get("complete"));
        Map<String, Object> cfg = (Map<String, Object>) doc.get("config");
        assertTrue(((String) cfg.get("model_sha256")).matches("[0-9a-f]{64}"));
        assertTrue(doc.containsKey("git_commit") && doc.containsKey("simd_bits") && doc.containsKey("jvm"));
        Map<String, Map<String, Object>> res = byKv(doc);
        assertEquals(List.of("full", "fp16", T35, T25, AUTO), List.copyOf(res.keySet()),
                "full is added first");
        Map<String, Object> full = res.get("full");
        assertEquals(CTX - PREFIX, num(full, "tokens"));
        assertEquals(0, num(full, "delta_pct"), 0);
        assertEquals(0, num(full, "kl_mean"), 0);
        assertEquals(1, num(full, "top1_agreement"), 0);

        // Independent reference: each scored token's NLL from a fresh full forward pass of its prefix.
        long[] ids;
        double nll = 0;
        try (TextTokenizer tok = TextTokenizer.open(GenerateCliTest.modelDir());
             DecoderModel dm = DecoderModel.open(GenerateCliTest.modelDir(), new DecoderModel.Options(1, DecoderModel.Ep.CPU))) {
            ids = tok.encode(Files.readString(text));
            for (int t = PREFIX; t < CTX; t++) {
                float[] logits = dm.run(ids, 0, t, 0, new float[dm.layers()][0], new float[dm.layers()][0]).logits();
                double[] lp = io.kvquant.eval.quality.PerplexityCommand.logSoftmax(logits, new double[logits.length]);
                nll -= lp[(int) ids[t]];
            }
        }
        double want = Math.exp(nll / (CTX - PREFIX));
        assertEquals(want, num(full, "perplexity"), want * 1e-4, "full perplexity vs one-shot forward passes");

        // fp16 storage is near-lossless; TurboQuant within its distortion, and 3.5 bits closer than 2.5.
        assertTrue(num(res.get("fp16"), "kl_mean") < 1e-4, "fp16 KL " + res.get("fp16"));
        double kl35 = num(res.get(T35), "kl_mean");
        double kl25 = num(res.get(T25), "kl_mean");
        assertTrue(kl35 > 0 && kl35 < 0.05, "turbo3.5 KL " + kl35);
        assertTrue(kl25 > kl35 && kl25 < 0.2, "turbo2.5 KL " + kl25 + " vs " + kl35);
        assertTrue(num(res.get(T35), "top1_agreement") > 0.8, res.get(T35).toString());
        // one window: its Δ is the run's, and there is no spread for a standard error
        assertTrue(res.get(T35).containsKey("delta_pct_se") && res.get(T35).get("delta_pct_se") == null, res.get(T35).toString());
        List<Object> byWindow = (List<Object>) res.get(T35).get("window_delta_pct");
        assertEquals(1, byWindow.size());
        assertEquals(num(res.get(T35), "delta_pct"), ((Number) byWindow.get(0)).doubleValue(), 1e-6);
        double bits = num(res.get(T35), "bits_per_element");
        assertTrue(bits > 3.5 && bits < 4.0, "turbo3.5 bits/element with norms " + bits);
        assertEquals(0.5, num(full, "memory_ratio_vs_fp16"), 1e-9, "fp32 cache is twice fp16");
        // auto:3.5 was calibrated on the window's prompt: its plan is saved, and it spends the bytes of turbo3.5
        List<Object> plans = (List<Object>) res.get(AUTO).get("plans");
        assertEquals(1, plans.size());
        assertTrue(((String) plans.get(0)).startsWith("auto plan: L0 k"), plans.toString());
        assertEquals(bits, num(res.get(AUTO), "bits_per_element"), 1e-9);
        assertTrue(num(res.get(AUTO), "kl_mean") < 0.05, res.get(AUTO).toString());

        for (String f : List.of("perplexity.json", "perplexity.csv", "perplexity.md", "perplexity.png")) {
            assertTrue(Files.size(tmp.resolve(f)) > 0, f);
        }
        assertEquals(6, Files.readAllLines(tmp.resolve("perplexity.csv")).size(), "header + 5 settings");
    }

    @Test
    @SuppressWarnings("unchecked")
    void needleGridWritesCellsAndHeatMaps(@TempDir Path tmp) throws IOException {
        GenerateCliTest.Run r = kvq("eval", "needle", "--kv", "full;turbo3.5,qjl=k", "--lengths", "96,160", "--depths",
                "0,100", "--trials", "2", "--threads", "1", "--json", "--out", tmp.toString());
        assertEquals(0, r.code(), r.err());
        Map<String, Object> doc = (Map<String, Object>) Json.parse(r.out());
        Map<String, Map<String, Object>> res = byKv(doc);
        assertEquals(List.of("full", "turbo3.5,qjl=k"), List.copyOf(res.keySet()));
        for (Map<String, Object> s : res.values()) {
            List<Object> cells = (List<Object>) s.get("cells");
            assertEquals(4, cells.size());
            int correct = 0;
            for (Object o : cells) {
                Map<String, Object> c = (Map<String, Object>) o;
                assertEquals(2, num(c, "trials"));
                assertTrue(num(c, "correct") >= 0 && num(c, "correct") <= 2);
                assertEquals(2, ((List<Object>) c.get("answers")).size());
                correct += (int) num(c, "correct");
            }
            assertEquals(correct / 8.0, num(s, "accuracy"), 1e-12);
        }
        assertTrue(Files.size(tmp.resolve("needle-full.png")) > 0);
        assertTrue(Files.size(tmp.resolve("needle-turbo3.5_qjl=k.png")) > 0);
        assertEquals(9, Files.readAllLines(tmp.resolve("needle.csv")).size(), "header + 2 settings x 4 cells");
    }

    @Test
    void badInputIsOneLine() {
        for (String[] args : List.of(
                new String[] {"eval", "perplexity", "--kv", "qjl=k,turbo3.5"},
                new String[] {"eval", "perplexity", "--context", "99999"},
                new String[] {"eval", "perplexity", "--context", "64", "--prefix", "64"},
                new String[] {"eval", "perplexity", "--text", "/nonexistent.txt"},
                new String[] {"eval", "needle", "--lengths", "99999"},
                new String[] {"eval", "needle", "--depths", "0,150"},
                new String[] {"eval", "needle", "--needle", "no code here"},
                new String[] {"eval", "needle", "--lengths", "abc"})) {
            GenerateCliTest.Run r = kvq(args);
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.err());
            String e = r.err().strip();
            assertFalse(e.contains("\n") || e.contains("Exception"), String.join(" ", args) + ": " + e);
            assertTrue(r.out().isEmpty());
        }
    }
}
