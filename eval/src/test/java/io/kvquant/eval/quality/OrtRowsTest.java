package io.kvquant.eval.quality;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cli.Kvq;
import io.kvquant.demo.bench.BenchModelWriter;
import io.kvquant.demo.graph.OrtQuantKv;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * The ONNX Runtime rows of {@code kvq eval perplexity} and {@code kvq eval needle}: ort,
 * ort-int8 and ort-int4 parse beside kvquant's settings, run on a GroupQueryAttention model (the
 * tiny benchmark model's GQA form), and are refused in one line on a plain graph.
 */
class OrtRowsTest {

    static final BenchModelWriter.Geometry TINY = new BenchModelWriter.Geometry(2, 64, 4, 2, 16, 96, 4096, 1024, 10000.0, 3L);

    @Test
    void rowsParseInOrderBesideKvquantSettings() {
        List<Object> rows = OrtRows.parse("full,ort;ORT-int8,turbo3.5,qjl=k;ort-int4");
        assertEquals(List.of(KvQuantConfig.full(), OrtQuantKv.Setting.ORT, OrtQuantKv.Setting.INT8,
                KvQuantConfig.parse("turbo3.5,qjl=k"), OrtQuantKv.Setting.INT4), rows);
        assertEquals("ort-int8", rows.get(2).toString());
        assertTrue(assertThrows(IllegalArgumentException.class, () -> OrtRows.parse("ort-int8,window=4")).getMessage()
                .contains("takes no options"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> OrtRows.parse("ort;ort")).getMessage()
                .contains("twice"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> OrtRows.parse("ort-int5")).getMessage()
                .contains("unknown ONNX Runtime KV setting"));
    }

    record Run(int exit, String out, String err) {
    }

    static Run kvq(String... args) {
        StringWriter err = new StringWriter();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        PrintStream saved = System.out;
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            CommandLine cl = new CommandLine(new Kvq());
            cl.setErr(new PrintWriter(err, true));
            cl.setOut(new PrintWriter(new PrintStream(out, true, StandardCharsets.UTF_8), true));
            cl.setExecutionExceptionHandler((ex, c, pr) -> {
                c.getErr().println("kvq " + c.getCommandName() + ": " + ex.getMessage());
                return 2;
            });
            int rc = cl.execute(args);
            return new Run(rc, out.toString(StandardCharsets.UTF_8), err.toString());
        } finally {
            System.setOut(saved);
        }
    }

    static Path tokenizer() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path t = p.resolve("models/kvq-llama/tokenizer.json");
            if (Files.isRegularFile(t)) {
                return t;
            }
        }
        return fail("models/kvq-llama/tokenizer.json not found");
    }

    /**
     * Perplexity on the GQA model: the ort row is the engine's full row (the same graph run by ONNX
     * Runtime alone; 1e-4 relative), ort-int8 and ort-int4 store 8 and 4 bits an element, and
     * the needle grid runs the same rows. On the plain form: a one-line refusal.
     */
    @Test
    @SuppressWarnings("unchecked")
    void perplexityAndNeedleRunTheOrtRows(@TempDir Path tmp) throws Exception {
        System.setProperty(io.kvquant.demo.onnx.PreparedModels.PROPERTY, tmp.resolve("cache").toString());
        Path gqa = tmp.resolve("gqa");
        BenchModelWriter.write(gqa, TINY, BenchModelWriter.Attention.GQA, tokenizer(), 0, null);
        Run r = kvq("eval", "perplexity", "--model", gqa.toString(), "--kv", "ort;ort-int8;ort-int4;turbo3.5", "--context",
                "96", "--windows", "1", "--prefill-chunk", "32", "--threads", "1", "--json");
        assertEquals(0, r.exit(), r.err());
        String json = r.out().substring(r.out().indexOf('{'));
        List<Map<String, Object>> rows = (List<Map<String, Object>>) ((Map<String, Object>) io.kvquant.demo.onnx.Json.parse(
                json)).get("results");
        assertEquals(List.of("full", "ort", "ort-int8", "ort-int4", "turbo3.5"), rows.stream().map(m -> m.get("kv")).toList());
        double full = ((Number) rows.get(0).get("perplexity")).doubleValue();
        double ort = ((Number) rows.get(1).get("perplexity")).doubleValue();
        assertEquals(full, ort, 1e-4 * full, "ort runs the graph the engine cuts");
        assertEquals(8.0, ((Number) rows.get(2).get("bits_per_element")).doubleValue());
        assertEquals(4.0, ((Number) rows.get(3).get("bits_per_element")).doubleValue());
        assertEquals(4.0, ((Number) rows.get(3).get("memory_ratio_vs_fp16")).doubleValue());

        Run n = kvq("eval", "needle", "--model", gqa.toString(), "--kv", "ort;ort-int4", "--lengths", "64", "--depths", "50",
                "--trials", "1", "--threads", "1", "--json");
        assertEquals(0, n.exit(), n.err());
        String nj = n.out().substring(n.out().indexOf('{'));
        List<Map<String, Object>> acc = (List<Map<String, Object>>) ((Map<String, Object>) io.kvquant.demo.onnx.Json.parse(nj))
                .get("results");
        assertEquals(List.of("ort", "ort-int4"), acc.stream().map(m -> m.get("kv")).toList());

        Path plain = tmp.resolve("plain");
        BenchModelWriter.write(plain, TINY, tokenizer(), 0, null);
        Run refused = kvq("eval", "perplexity", "--model", plain.toString(), "--kv", "ort-int8", "--context", "96",
                "--windows", "1");
        assertEquals(2, refused.exit(), refused.err());
        String line = refused.err().strip();
        assertTrue(line.lines().count() == 1 && line.contains("--kv ort-int8 needs a com.microsoft::GroupQueryAttention graph"),
                line);
    }
}
