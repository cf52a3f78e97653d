package io.kvquant.eval.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvquant.cli.Kvq;
import io.kvquant.demo.bench.BenchModelWriter;
import io.kvquant.demo.text.TextTokenizer;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * {@code kvq bench generate} end to end on a tiny model written by the same writer as the
 * benchmark model (each row a real {@code kvq generate} process), plus its pieces: prompt cutting,
 * the issue #14 target verdicts, CSV/Markdown, a failing row kept with its error.
 */
class GenerateBenchCommandTest {

    static final BenchModelWriter.Geometry TINY = new BenchModelWriter.Geometry(2, 64, 4, 2, 16, 96, 4096, 1024, 10000.0, 3L);

    static Path bundled() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path d = p.resolve("models/kvq-llama");
            if (Files.isRegularFile(d.resolve("tokenizer.json"))) {
                return d;
            }
        }
        return fail("models/kvq-llama not found above " + Path.of("").toAbsolutePath());
    }

    record Run(int exit, String stdout, String stderr) {
    }

    static Run kvq(String... args) {
        String cp = System.getProperty("surefire.test.class.path");
        if (cp != null) {
            System.setProperty("kvq.classpath", cp); // the rows' JVMs need the real class path, not surefire's booter jar
        }
        StringWriter err = new StringWriter();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        PrintStream saved = System.out;
        int rc;
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            CommandLine cl = new CommandLine(new Kvq());
            cl.setErr(new PrintWriter(err, true));
            cl.setExecutionExceptionHandler((ex, c, pr) -> {
                c.getErr().println("kvq " + c.getCommandName() + ": " + ex.getMessage());
                return 2;
            });
            rc = cl.execute(args);
        } finally {
            System.setOut(saved);
        }
        return new Run(rc, out.toString(StandardCharsets.UTF_8), err.toString());
    }

    @Test
    void promptsAreCutToTheirLengthInTokens() throws Exception {
        String text = Files.readString(bundled().getParent().resolve("data/heldout.txt"));
        try (TextTokenizer tok = TextTokenizer.open(bundled())) {
            for (int n : new int[] {1, 100, 1000}) {
                String p = GenerateBenchCommand.cut(tok, text, n);
                int got = tok.encode(p).length;
                assertTrue(got <= n, n + " -> " + got);
                assertTrue(got >= n - 1, "one character more would pass " + n + ": " + got);
                assertTrue(tok.encode(text.substring(0, p.length() + 1)).length > n);
            }
        }
    }

    static Map<String, Object> row(String kv, int ctx, double rss, double decode, double prefill) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("kv", kv);
        r.put("mode", kv.equals("ort") ? "ort" : "java-attention");
        r.put("context", ctx);
        r.put("status", "ok");
        r.put("peak_rss_bytes", rss);
        r.put("kv_bytes", 1.0);
        r.put("decode_tokens_per_s", decode);
        r.put("prefill_tokens_per_s", prefill);
        return r;
    }

    @Test
    void targetVerdictsFollowTheIssueThresholds() {
        List<Map<String, Object>> rows = new ArrayList<>();
        rows.add(row("ort", 16384, 3000, 1.0, 1000));
        rows.add(row("turbo3.5", 16384, 1000, 2.5, 600));
        List<Map<String, Object>> t = GenerateBenchCommand.targets(rows);
        assertEquals(4, t.size());
        assertEquals("met", t.get(0).get("status"), "RSS 1000/3000 = 0.33x <= 0.35x");
        assertEquals(1000 / 3000.0, (Double) t.get(0).get("value"), 1e-12);
        assertEquals("met", t.get(1).get("status"), "decode 2.5x >= 2x");
        assertEquals("not met", t.get(2).get("status"), "prefill 0.6x < 0.7x");
        assertEquals("not measured", t.get(3).get("status"), "no 32K rows");

        rows.add(row("turbo3.5", 32768, 1000, 2.0, 500));
        Map<String, Object> ortFailed = row("ort", 32768, Double.NaN, Double.NaN, Double.NaN);
        ortFailed.put("status", "failed");
        ortFailed.put("error", "exit 137: killed");
        rows.add(ortFailed);
        Map<String, Object> t32 = GenerateBenchCommand.targets(rows).get(3);
        assertEquals("met", t32.get("status"), "turbo3.5 ran, ort did not");
        rows.set(3, row("ort", 32768, 2500, 0.5, 500));
        t32 = GenerateBenchCommand.targets(rows).get(3);
        assertEquals("not met", t32.get("status"), "ort needed only 2.5x");
        assertEquals(2.5, (Double) t32.get("value"), 1e-12);

        // merged results: a baseline from another run is not used
        for (Map<String, Object> r : rows) {
            r.put("run_index", r.get("kv").equals("ort") ? 0 : 1);
        }
        assertEquals("not measured", GenerateBenchCommand.targets(rows).get(0).get("status"));
    }

    @Test
    void csvQuotesErrorsAndMarkdownShowsRatiosAgainstOrt() {
        List<Map<String, Object>> rows = new ArrayList<>();
        rows.add(row("ort", 4096, 2000, 1.0, 100));
        rows.add(row("turbo3.5", 4096, 500, 3.0, 50));
        Map<String, Object> bad = row("full", 4096, Double.NaN, Double.NaN, Double.NaN);
        bad.put("status", "failed");
        bad.put("error", "exit 1: no, \"quoted\" | piped");
        rows.add(bad);
        String csv = GenerateBenchCommand.csv(rows);
        assertTrue(csv.startsWith(String.join(",", GenerateBenchCommand.COLUMNS) + "\n"), csv);
        assertTrue(csv.contains("\"exit 1: no, \"\"quoted\"\" | piped\""), csv);
        Map<String, Object> run = new LinkedHashMap<>();
        run.put("config", Map.of("command", "kvq bench generate", "model", "m", "model_sha256", "abc"));
        String md = GenerateBenchCommand.markdown(run, rows);
        assertTrue(md.contains("| 4,096 | turbo3.5 | java-attention | 0 | 0.25x |"), md);
        assertTrue(md.contains("3.00x"), md);
        assertTrue(md.contains("failed: exit 1: no, \"quoted\" / piped"), md);
    }

    @Test
    @SuppressWarnings("unchecked")
    void benchRunsEveryRowAsAProcessAndKeepsAFailingRow(@TempDir Path tmp) throws Exception {
        Path model = tmp.resolve("model");
        BenchModelWriter.write(model, TINY, bundled().resolve("tokenizer.json"), 0, null);
        Path out = tmp.resolve("out");
        Run r = kvq("bench", "generate", "--model", model.toString(), "--contexts", "96,48", "--kv", "ort;turbo3.5,window=0",
                "--decode-tokens", "4", "--threads", "1", "--heap", "256m", "--out", out.toString(), "--json");
        assertEquals(0, r.exit(), r.stderr());
        Map<String, Object> doc = (Map<String, Object>) io.kvquant.demo.onnx.Json.parse(r.stdout());
        List<Map<String, Object>> rows = (List<Map<String, Object>>) doc.get("results");
        assertEquals(4, rows.size());
        long perToken = 2L * TINY.layers() * TINY.kvHeads() * TINY.headDim() * 4;
        int[] order = {48, 48, 96, 96};
        for (int i = 0; i < rows.size(); i++) {
            Map<String, Object> row = rows.get(i);
            assertEquals("ok", row.get("status"), row.toString());
            assertEquals(order[i], ((Number) row.get("context")).intValue(), "rows run shortest context first");
            assertEquals(order[i], ((Number) row.get("prompt_tokens")).intValue(), "prompt cut to its length in tokens");
            assertTrue(((Number) row.get("peak_rss_bytes")).longValue() > 50L << 20, row.toString());
            assertTrue(((Number) row.get("decode_tokens_per_s")).doubleValue() > 0, row.toString());
            assertTrue(((Number) row.get("prefill_tokens_per_s")).doubleValue() > 0, row.toString());
            // 4 generated tokens: the prompt plus 3 fed back
            long tokens = order[i] + 3;
            long kvBytes = ((Number) row.get("kv_bytes")).longValue();
            if (i % 2 == 0) {
                assertEquals("ort", row.get("kv"));
                assertEquals("ort", row.get("mode"));
                assertEquals(perToken * tokens, kvBytes, "ort: the dense fp32 past");
            } else {
                assertEquals("turbo3.5,window=0", row.get("kv")); // the codec alone: at 48-96 tokens the default 64-token fp32 window would hold most of them
                assertEquals("engine", row.get("mode"));
                // kv_bytes counts whole pages as allocated; the data itself is under a quarter of fp32
                long used = ((Number) row.get("kv_bytes_used")).longValue();
                assertTrue(used < perToken * tokens / 4, "turbo3.5 data < 1/4 of fp32: " + used);
                assertTrue(kvBytes >= used, kvBytes + " held >= " + used + " used");
            }
        }
        // prepared once before the kvquant rows, into the prepared-model cache (not the model folder)
        Path prepared = io.kvquant.demo.onnx.PreparedModels.root().resolve("prepared")
                .resolve(io.kvquant.demo.cli.ModelPaths.sha256(model.resolve("model.onnx")));
        assertTrue(Files.isRegularFile(prepared.resolve("manifest.json")), "prepared before the kvquant rows: " + prepared);
        for (String f : new String[] {"generate-bench.json", "generate-bench.csv", "generate-bench.md", "generate-bench.png"}) {
            assertTrue(Files.size(out.resolve(f)) > 100, f);
        }
        Map<String, Object> run = (Map<String, Object>) doc.get("run");
        assertNotNull(run.get("git_commit"));
        assertEquals(1, ((Number) run.get("threads")).intValue());
        assertNotNull(run.get("simd"));

        // a row that fails (graph mode is not prepared) is recorded with its error; the others run
        Path out2 = tmp.resolve("out2");
        Run bad = kvq("bench", "generate", "--model", model.toString(), "--contexts", "48", "--kv", "full;ort",
                "--mode", "graph", "--decode-tokens", "2", "--threads", "1", "--heap", "256m", "--out", out2.toString(), "--json");
        assertEquals(3, bad.exit(), bad.stderr());
        Map<String, Object> doc2 = (Map<String, Object>) io.kvquant.demo.onnx.Json.parse(
                Files.readString(out2.resolve("generate-bench.json")));
        List<Map<String, Object>> rows2 = (List<Map<String, Object>>) doc2.get("results");
        assertEquals(2, rows2.size());
        assertEquals("failed", rows2.get(0).get("status"));
        // the child's own one-line message, after its exit status
        assertTrue(String.valueOf(rows2.get(0).get("error")).startsWith("exit 2: kvq generate: --mode graph"),
                String.valueOf(rows2.get(0).get("error")));
        assertEquals("ok", rows2.get(1).get("status"));
        assertNull(rows2.get(1).get("error"));
        assertTrue(bad.stderr().contains("1 of 2 rows failed"), bad.stderr());

        // --merge: both runs in one table, sorted by context, nothing run
        Path out3 = tmp.resolve("merged");
        Run merged = kvq("bench", "generate", "--merge", out + "," + out2, "--out", out3.toString(), "--json");
        assertEquals(0, merged.exit(), merged.stderr());
        Map<String, Object> doc3 = (Map<String, Object>) io.kvquant.demo.onnx.Json.parse(merged.stdout());
        List<Map<String, Object>> rows3 = (List<Map<String, Object>>) doc3.get("results");
        assertEquals(6, rows3.size());
        int prev = 0;
        for (Map<String, Object> row : rows3) {
            int c = ((Number) row.get("context")).intValue();
            assertTrue(c >= prev, "sorted by context");
            prev = c;
        }
        assertEquals(2, ((List<?>) ((Map<String, Object>) doc3.get("run")).get("merged_runs")).size());
        assertTrue(Files.readString(out3.resolve("generate-bench.md")).contains("Merged from 2 runs"));
        // ratios only within a run: the second run's ort row is not the first run's turbo3.5 baseline
        for (Map<String, Object> row : rows3) {
            assertNotNull(row.get("run_index"));
        }
    }

    @Test
    void badOptionsAreOneLineErrors() {
        Run r = kvq("bench", "generate", "--kv", "ort;turbo9x", "--dry-run");
        assertEquals(2, r.exit(), r.stderr());
        assertTrue(r.stderr().contains("turbo9x"), r.stderr());
        Run h = kvq("bench", "generate", "--heap", "lots", "--dry-run");
        assertTrue(h.exit() != 0 && h.stderr().contains("--heap"), h.stderr());
    }

    /**
     * ONNX Runtime's own quantized KV cache as bench rows, on the GroupQueryAttention form of the
     * tiny model: ort-int8 holds 1/4 of ort's fp32 past, ort-int4 1/8 (two values a byte), exactly;
     * turbo3.5 runs on the same GQA graph (the engine cuts it). On the plain form the ort-int rows
     * are refused in one line, before any row runs, naming the command that writes the GQA form.
     */
    @Test
    @SuppressWarnings("unchecked")
    void ortQuantizedRowsRunOnTheGqaFormAndAreRefusedOnThePlainOne(@TempDir Path tmp) throws Exception {
        Path gqa = tmp.resolve("gqa");
        BenchModelWriter.write(gqa, TINY, BenchModelWriter.Attention.GQA, bundled().resolve("tokenizer.json"), 0, null);
        Run r = kvq("bench", "generate", "--model", gqa.toString(), "--contexts", "40", "--kv",
                "ort;ort-int8;ort-int4;turbo3.5,window=0", "--decode-tokens", "4", "--threads", "1", "--heap", "256m", "--json");
        assertEquals(0, r.exit(), r.stderr());
        List<Map<String, Object>> rows = (List<Map<String, Object>>) ((Map<String, Object>) io.kvquant.demo.onnx.Json.parse(
                r.stdout())).get("results");
        assertEquals(4, rows.size());
        long fp32PerToken = 2L * TINY.layers() * TINY.kvHeads() * TINY.headDim() * 4;
        long tokens = 40 + 3;
        String[] kv = {"ort", "ort-int8", "ort-int4", "turbo3.5,window=0"};
        long[] divisor = {1, 4, 8};
        for (int i = 0; i < rows.size(); i++) {
            Map<String, Object> row = rows.get(i);
            assertEquals("ok", row.get("status"), row.toString());
            assertEquals(kv[i], row.get("kv"));
            if (i < 3) {
                assertEquals(kv[i], row.get("mode"));
                assertEquals(fp32PerToken * tokens / divisor[i], ((Number) row.get("kv_bytes")).longValue(), kv[i]);
                assertEquals(i > 0, row.get("calibration_seconds") != null, kv[i] + ": calibrated");
            } else {
                assertEquals("engine", row.get("mode"));
            }
        }
        Path plain = tmp.resolve("plain");
        BenchModelWriter.write(plain, TINY, bundled().resolve("tokenizer.json"), 0, null);
        Run refused = kvq("bench", "generate", "--model", plain.toString(), "--contexts", "40", "--kv", "ort;ort-int8",
                "--decode-tokens", "2", "--threads", "1", "--heap", "256m");
        assertEquals(2, refused.exit(), refused.stderr());
        List<String> lines = refused.stderr().strip().lines().toList();
        String line = lines.get(lines.size() - 1); // after the plan line
        assertTrue(line.startsWith("kvq generate: --kv ort-int8") && line.contains("--kv ort-int8 needs a com.microsoft::GroupQueryAttention graph")
                && line.contains("./kvq bench model --attention gqa"), line);
    }

    @Test
    void ortRowsParse() {
        GenerateBenchCommand c = new GenerateBenchCommand();
        new CommandLine(c).parseArgs("--contexts", "8", "--kv", "ORT; ort-int8 ;ort-int4;turbo3.5");
        List<GenerateBenchCommand.Row> rows = c.plan();
        assertEquals(List.of(new GenerateBenchCommand.Row(8, "ort", true), new GenerateBenchCommand.Row(8, "ort-int8", true),
                new GenerateBenchCommand.Row(8, "ort-int4", true), new GenerateBenchCommand.Row(8, "turbo3.5", false)), rows);
        assertEquals("ort-int8", rows.get(1).mode("engine"));
        Run bad = kvq("bench", "generate", "--kv", "ort-int2", "--dry-run");
        assertEquals(2, bad.exit(), bad.stderr());
        assertTrue(bad.stderr().contains("unknown ONNX Runtime KV setting 'ort-int2'"), bad.stderr());
    }
}
