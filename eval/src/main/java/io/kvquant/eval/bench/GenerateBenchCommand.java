package io.kvquant.eval.bench;

import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.bench.BenchModelWriter;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.onnx.ModelConfig;
import io.kvquant.demo.text.TextTokenizer;
import io.kvquant.eval.Json;
import io.kvquant.eval.Progress;
import io.kvquant.eval.RunContext;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq bench generate}: peak memory and speed of whole-model generation, one
 * {@code kvq generate} process per row (so each row's peak RSS, read from its own VmHWM, is that
 * row's alone), under a fixed heap, for plain ONNX Runtime ({@code --kv ort}: present fed back
 * as past, no kvquant) and kvquant's caches, at several prompt lengths. Results are written after
 * every row, so an interrupted or partly failing run keeps what it measured.
 */
@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Peak RSS, KV bytes, prefill and decode tokens/s of kvq generate, one process per (context, kv) row, "
                + "against plain ONNX Runtime (--kv ort) on the same model.",
                "Default model: the KV-heavy benchmark model (8 layers x 8 KV heads x 128 dims, random weights), written on "
                        + "first use (see kvq bench model)."},
        footer = {"", "Example: ./kvq bench generate --contexts 4096,16384 --kv \"ort;full;turbo3.5\" --out results/bench-generate",
                "Quick look at the plan and its time estimate: ./kvq bench generate --dry-run"})
public final class GenerateBenchCommand implements Callable<Integer> {

    /** The kvquant rows' default mode: the compressed-attention engine. */
    static final String DEFAULT_MODE = "java-attention";

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "DIR",
            description = "Model folder (model.onnx, tokenizer.json, config.json) (default: the benchmark model in "
                    + "~/.cache/kvquant/bench-models/, written if missing).")
    Path model;

    @Option(names = "--contexts", split = ",", paramLabel = "N", defaultValue = "4096,16384,32768",
            description = "Prompt lengths in tokens (default: ${DEFAULT-VALUE}).")
    int[] contexts;

    @Option(names = "--kv", split = ";", paramLabel = "SPEC", defaultValue = "ort;full;fp16;turbo3.5;turbo2.5",
            description = "';'-separated rows: ort (plain ONNX Runtime), ort-int8 / ort-int4 (ONNX Runtime's own quantized KV "
                    + "cache; GroupQueryAttention models: --attention gqa) or a kvquant cache (default: ${DEFAULT-VALUE}).")
    String[] kvs;

    @Option(names = "--attention", paramLabel = "FORM", defaultValue = "plain",
            description = "Attention form of the default benchmark model: plain or gqa (GroupQueryAttention, same weights; "
                    + "the form the ort-int8/ort-int4 rows need) (default: ${DEFAULT-VALUE}).")
    String attention;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = DEFAULT_MODE,
            description = "kvq generate --mode of the kvquant rows (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--threads", defaultValue = "2", description = "Threads of every row (default: ${DEFAULT-VALUE}).")
    int threads;

    @Option(names = "--decode-tokens", defaultValue = "32", description = "Tokens generated per row (default: ${DEFAULT-VALUE}).")
    int decodeTokens;

    @Option(names = "--heap", defaultValue = "1g", description = "-Xmx of every row's JVM (default: ${DEFAULT-VALUE}).")
    String heap;

    @Option(names = "--prefill-chunk", defaultValue = "256", description = "Prompt tokens per model call (default: ${DEFAULT-VALUE}).")
    int prefillChunk;

    @Option(names = "--prompt-file", paramLabel = "FILE",
            description = "Text repeated and cut to each prompt length (default: models/data/heldout.txt).")
    Path promptFile;

    @Option(names = "--q-heads", defaultValue = "8",
            description = "Query heads of the default benchmark model: 8, or 32 for grouped-query attention (default: ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--row-timeout", defaultValue = "90", paramLabel = "MIN",
            description = "Minutes before a row is stopped and recorded as failed (default: ${DEFAULT-VALUE}).")
    int rowTimeout;

    @Option(names = "--json", description = "Print the results as JSON on stdout (instead of the table).")
    boolean json;

    @Option(names = "--out", paramLabel = "DIR",
            description = "Write generate-bench.json, .csv, .md and .png here (after every row).")
    Path out;

    @Option(names = "--no-prepare", description = "Do not run kvq prepare before the kvquant rows (the model is prepared "
            + "for --mode already, e.g. by another bench run working on it at the same time).")
    boolean noPrepare;

    @Option(names = "--dry-run", description = "Print the rows and the time estimate, run nothing.")
    boolean dryRun;

    @Option(names = "--merge", split = ",", paramLabel = "DIR",
            description = "Run nothing: combine the generate-bench.json of earlier runs (e.g. contexts run at different times) "
                    + "into one set of outputs in --out, rows sorted by context; each run's metadata is kept.")
    List<Path> merge;

    private volatile Process running;

    /** One row to run. */
    record Row(int context, String kv, boolean ort) {
        String mode(String kvqMode) {
            return ort ? kv : kvqMode;
        }
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter err = spec.commandLine().getErr();
        if (merge != null && !merge.isEmpty()) {
            return merge(err);
        }
        List<Row> rows = plan();
        if (!heap.matches("\\d+[kKmMgG]?")) {
            throw new IllegalArgumentException("--heap must look like 1g or 768m, got '" + heap + "'");
        }
        if (threads < 1 || decodeTokens < 1 || prefillChunk < 1 || rowTimeout < 1) {
            throw new IllegalArgumentException("--threads, --decode-tokens, --prefill-chunk and --row-timeout must be >= 1");
        }
        Path text = promptFile != null ? promptFile : ModelPaths.bundledModel().getParent().resolve("data/heldout.txt");
        if (!Files.isRegularFile(text)) {
            throw new IllegalArgumentException("prompt text not found: " + text + (promptFile == null ? " (pass --prompt-file)" : ""));
        }
        BenchModelWriter.Attention form = BenchModelWriter.Attention.parse(attention);
        if (model != null && form != BenchModelWriter.Attention.PLAIN) {
            throw new IllegalArgumentException("--attention chooses the form of the default benchmark model; --model " + model
                    + " is used as it is: drop one of them");
        }
        BenchModelWriter.Geometry geometry = model == null ? BenchModelCommand.geometry(8, qHeads) : null;
        Path dir = model != null ? model : BenchModelCommand.defaultDir(geometry, form);
        Estimate est = Estimate.forModel(model == null ? geometry : null);
        double planned = 0;
        for (Row r : rows) {
            planned += est.seconds(r, decodeTokens);
        }
        err.printf(Locale.ROOT, "kvq bench generate: %d rows (contexts %s; kv %s; kvquant rows --mode %s), %d threads, "
                        + "-Xmx%s, %d decode tokens; estimated %s (rough: fitted on the shared 2-core development machine; "
                        + "corrected after each row)%n",
                rows.size(), Arrays.toString(contexts), String.join(", ", kvs), mode, threads, heap, decodeTokens,
                Progress.clock(planned));
        if (dryRun) {
            for (Row r : rows) {
                err.printf(Locale.ROOT, "  context %6d  %-10s %-15s ~%s%n", r.context(), r.kv(), r.mode(mode),
                        Progress.clock(est.seconds(r, decodeTokens)));
            }
            err.flush();
            return 0;
        }
        if (model == null) {
            if (!BenchModelWriter.isCurrent(dir, geometry, form)) {
                BenchModelCommand.write(dir, geometry, form, err);
            }
        } else {
            ModelPaths.check(dir);
        }
        for (Row r : rows) {
            if (r.ort() && !r.kv().equals(io.kvquant.demo.graph.OrtQuantKv.Setting.ORT.cli)) {
                // refused before any row runs, in the row's own words
                io.kvquant.demo.graph.OrtQuantKv.attentionNodes(io.kvquant.demo.graph.OnnxModel.read(dir.resolve("model.onnx")),
                        r.kv());
                break;
            }
        }
        ModelConfig cfg = ModelConfig.read(dir.resolve("config.json"));
        for (int c : contexts) {
            if (cfg.maxPositions() > 0 && c + decodeTokens > cfg.maxPositions()) {
                throw new IllegalArgumentException("context " + c + " + " + decodeTokens + " decode tokens is beyond the model's "
                        + cfg.maxPositions() + " positions");
            }
        }
        if (out != null) {
            Files.createDirectories(out);
        }
        Path work = Files.createTempDirectory("kvq-bench-generate");
        Thread hook = new Thread(() -> {
            Process p = running;
            if (p != null) {
                p.destroyForcibly();
            }
        });
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            Map<Integer, Path> prompts = writePrompts(dir, text, work, err);
            boolean anyKvq = rows.stream().anyMatch(r -> !r.ort());
            if (anyKvq && needsPrepare(mode) && !noPrepare) {
                prepare(dir, work, err);
            }
            Map<String, Object> config = new LinkedHashMap<>();
            config.put("model", dir.toString());
            config.put("model_sha256", ModelPaths.sha256(dir.resolve("model.onnx")));
            config.put("model_config", describeConfig(dir));
            config.put("contexts", Arrays.stream(contexts).boxed().toList());
            config.put("kv", Arrays.asList(kvs));
            config.put("mode", mode);
            config.put("heap", heap);
            config.put("decode_tokens", decodeTokens);
            config.put("prefill_chunk", prefillChunk);
            config.put("prompt_text", text.toString());
            config.put("command", "kvq " + String.join(" ", spec.commandLine().getParseResult().originalArgs().stream()
                    .map(a -> a.matches("[A-Za-z0-9_./=,:-]+") ? a : "\"" + a + "\"").toList()));
            Map<String, Object> run = RunContext.capture(threads, config);
            List<Map<String, Object>> results = new ArrayList<>();
            Progress bar = new Progress(err, "bench", Math.round(planned));
            double spent = 0;
            double predictedDone = 0;
            int failed = 0;
            for (int i = 0; i < rows.size(); i++) {
                Row r = rows.get(i);
                double left = 0;
                for (int j = i; j < rows.size(); j++) {
                    left += est.seconds(rows.get(j), decodeTokens);
                }
                double factor = predictedDone > 0 ? spent / predictedDone : 1;
                err.printf(Locale.ROOT, "[%d/%d] context %d, kv %s (%s): about %s left in all%n", i + 1, rows.size(), r.context(),
                        r.kv(), r.mode(mode), Progress.clock(left * factor));
                err.flush();
                bar.update(Math.round(spent), r.kv() + " @" + r.context());
                long t0 = System.nanoTime();
                Map<String, Object> res = runRow(dir, r, prompts.get(r.context()), work);
                double wall = (System.nanoTime() - t0) / 1e9;
                res.put("wall_seconds", wall);
                spent += wall;
                predictedDone += est.seconds(r, decodeTokens);
                results.add(res);
                bar.done();
                if (!"ok".equals(res.get("status"))) {
                    failed++;
                    err.printf(Locale.ROOT, "        failed: %s%n", res.get("error"));
                } else {
                    err.printf(Locale.ROOT, "        peak RSS %.0f MiB, KV %.1f MiB, prefill %.1f tok/s, decode %.2f tok/s (%.0f s)%n",
                            num(res.get("peak_rss_bytes")) / 1048576, num(res.get("kv_bytes")) / 1048576,
                            num(res.get("prefill_tokens_per_s")), num(res.get("decode_tokens_per_s")), wall);
                }
                err.flush();
                if (out != null) {
                    writeOutputs(out, run, results, false);
                }
            }
            bar.done();
            Map<String, Object> doc = document(run, results);
            if (out != null) {
                writeOutputs(out, run, results, true);
                err.println("wrote " + out.resolve("generate-bench.json") + ", .csv, .md, .png");
            }
            if (json) {
                System.out.println(Json.write(doc));
            } else {
                System.out.print(markdown(run, results));
            }
            if (failed > 0) {
                err.println(failed + " of " + rows.size() + " rows failed; their errors are in the results");
                return 3;
            }
            return 0;
        } finally {
            Runtime.getRuntime().removeShutdownHook(hook);
            deleteTree(work);
        }
    }

    /** --merge: the rows of several runs in one table, sorted by context (stable: each run's kv order kept). */
    @SuppressWarnings("unchecked")
    private int merge(PrintWriter err) throws IOException {
        if (out == null) {
            throw new IllegalArgumentException("--merge needs --out DIR for the combined outputs");
        }
        List<Map<String, Object>> results = new ArrayList<>();
        List<Object> runs = new ArrayList<>();
        for (Path d : merge) {
            Path f = Files.isDirectory(d) ? d.resolve("generate-bench.json") : d;
            if (!Files.isRegularFile(f)) {
                throw new IllegalArgumentException("--merge: no generate-bench.json in " + d);
            }
            Object o = io.kvquant.demo.onnx.Json.parse(Files.readString(f));
            if (!(o instanceof Map<?, ?> m) || !(m.get("results") instanceof List<?> rs) || !(m.get("run") instanceof Map<?, ?>)) {
                throw new IllegalArgumentException("--merge: " + f + " is not a kvq bench generate result");
            }
            for (Object r : rs) {
                Map<String, Object> row = new LinkedHashMap<>((Map<String, Object>) r);
                row.put("context", ((Number) row.get("context")).intValue());
                row.put("run_index", runs.size()); // ratios compare rows of one run only (same machine load)
                results.add(row);
            }
            Map<String, Object> run = new LinkedHashMap<>((Map<String, Object>) m.get("run"));
            run.put("source", f.toString());
            runs.add(run);
        }
        results.sort(java.util.Comparator.comparingInt(r -> (Integer) r.get("context")));
        Map<String, Object> run = new LinkedHashMap<>((Map<String, Object>) runs.get(0));
        Map<String, Object> cfg = new LinkedHashMap<>((Map<String, Object>) run.get("config"));
        cfg.put("command", "kvq " + String.join(" ", spec.commandLine().getParseResult().originalArgs()));
        run.put("config", cfg);
        run.put("merged_runs", runs);
        Files.createDirectories(out);
        writeOutputs(out, run, results, true);
        err.println("merged " + results.size() + " rows from " + merge.size() + " runs into " + out);
        if (json) {
            System.out.println(Json.write(document(run, results)));
        } else {
            System.out.print(markdown(run, results));
        }
        return 0;
    }

    List<Row> plan() {
        if (contexts.length == 0 || kvs.length == 0) {
            throw new IllegalArgumentException("give at least one --contexts value and one --kv");
        }
        int[] sorted = contexts.clone();
        Arrays.sort(sorted);
        List<Row> rows = new ArrayList<>();
        for (int c : sorted) {
            if (c < 1) {
                throw new IllegalArgumentException("--contexts must be positive, got " + c);
            }
            for (String k : kvs) {
                String kv = k.trim();
                io.kvquant.demo.graph.OrtQuantKv.Setting ort = io.kvquant.demo.graph.OrtQuantKv.Setting.of(kv);
                rows.add(new Row(c, ort != null ? ort.cli : KvQuantConfig.parse(kv).toString(), ort != null));
            }
        }
        return rows;
    }

    private static boolean needsPrepare(String mode) {
        String m = mode.trim().toLowerCase(Locale.ROOT);
        return m.equals("java-attention") || m.equals("engine");
    }

    /** Prompt files cut from the text to exactly each length in tokens (the largest prefix not over it). */
    private Map<Integer, Path> writePrompts(Path dir, Path text, Path work, PrintWriter err) throws IOException {
        Map<Integer, Path> out = new LinkedHashMap<>();
        String base = Files.readString(text);
        if (base.isBlank()) {
            throw new IllegalArgumentException("the prompt text " + text + " is empty");
        }
        int max = Arrays.stream(contexts).max().orElse(0);
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            StringBuilder sb = new StringBuilder(base);
            while (tok.encode(sb.toString()).length < max + 1) {
                sb.append('\n').append(base);
            }
            String all = sb.toString();
            for (int n : contexts) {
                String p = cut(tok, all, n);
                Path f = work.resolve("prompt-" + n + ".txt");
                Files.writeString(f, p);
                out.put(n, f);
            }
        }
        return out;
    }

    /** The longest prefix of {@code text} (at a character boundary) that encodes to at most {@code n} tokens. */
    static String cut(TextTokenizer tok, String text, int n) {
        int lo = 0;
        int hi = text.length();
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (tok.encode(text.substring(0, mid)).length <= n) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return text.substring(0, lo);
    }

    private List<String> javaCommand(String xmx) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        for (String o : System.getProperty("kvq.jvm.defaults", "").split(" ")) { // the kvq launcher's (collector, young size)
            if (!o.isBlank()) {
                cmd.add(o);
            }
        }
        cmd.add("-Xms64m");
        cmd.add("-Xmx" + xmx);
        cmd.add("--add-modules");
        cmd.add("jdk.incubator.vector");
        cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.add("-Dai.djl.offline=true");
        for (String p : System.getProperties().stringPropertyNames()) {
            if (p.startsWith("kvquant.") || p.startsWith("kvq.engine.") || p.equals("kvq.home")
                    || p.equals("kvq.cache.dir")) { // children share the prepared-model cache and the engine switches
                cmd.add("-D" + p + "=" + System.getProperty(p));
            }
        }
        cmd.add("-cp");
        cmd.add(System.getProperty("kvq.classpath", System.getProperty("java.class.path")));
        cmd.add("io.kvquant.cli.Kvq");
        return cmd;
    }

    /** Cuts the model at its attention ahead of the rows, so no row pays for (or holds the memory of) preparing. */
    private void prepare(Path dir, Path work, PrintWriter err) throws IOException, InterruptedException {
        long size = Files.size(dir.resolve("model.onnx"));
        long heapMb = Math.max(1024, size * 5 / (1 << 20));
        err.printf(Locale.ROOT, "preparing the attention cut for --mode %s (kvq prepare, -Xmx%dm) ...%n", mode, heapMb);
        err.flush();
        List<String> cmd = javaCommand(heapMb + "m");
        cmd.addAll(List.of("prepare", "--model", dir.toString()));
        Path log = work.resolve("prepare.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        running = p;
        if (!p.waitFor(30, TimeUnit.MINUTES)) {
            p.destroyForcibly();
            throw new IllegalStateException("kvq prepare did not finish in 30 minutes");
        }
        running = null;
        if (p.exitValue() != 0) {
            throw new IllegalStateException("kvq prepare --model " + dir + " failed (exit " + p.exitValue() + "): " + lastLine(log));
        }
    }

    /** Runs one row as a kvq generate process; its stats JSON, or the error. */
    @SuppressWarnings("unchecked")
    Map<String, Object> runRow(Path dir, Row r, Path prompt, Path work) throws IOException, InterruptedException {
        Map<String, Object> res = new LinkedHashMap<>();
        res.put("kv", r.kv());
        res.put("mode", r.mode(mode));
        res.put("context", r.context());
        String tag = r.context() + "-" + r.kv().replaceAll("[^A-Za-z0-9.=-]", "_");
        Path stats = work.resolve("stats-" + tag + ".json");
        Path log = work.resolve("log-" + tag + ".txt");
        Files.deleteIfExists(stats);
        List<String> cmd = javaCommand(heap);
        cmd.addAll(List.of("generate", "--model", dir.toString(), "--prompt-file", prompt.toString(), "--kv", r.kv(),
                "--max-new-tokens", String.valueOf(decodeTokens), "--no-stop", "--threads", String.valueOf(threads),
                "--prefill-chunk", String.valueOf(prefillChunk), "--stats-json", stats.toString()));
        if (!r.ort()) {
            // the engine's kernels compiled before the prompt (kvq generate's full warm-up, its
            // seconds in the JSON), as llama-bench leaves its warm-up run out of its figures
            cmd.addAll(List.of("--mode", mode, "--warmup", "full"));
        }
        Process p = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(log.toFile()).start();
        running = p;
        boolean done = p.waitFor(rowTimeout, TimeUnit.MINUTES);
        running = null;
        if (!done) {
            p.destroyForcibly();
            p.waitFor(30, TimeUnit.SECONDS);
            return failed(res, "stopped after --row-timeout " + rowTimeout + " min");
        }
        int rc = p.exitValue();
        if (rc != 0 || !Files.isRegularFile(stats)) {
            String why = lastLine(log);
            if (rc == 137 || rc == 134) {
                why = "killed (exit " + rc + "; out of memory?) " + why;
            }
            return failed(res, "exit " + rc + ": " + why);
        }
        Map<String, Object> s = (Map<String, Object>) io.kvquant.demo.onnx.Json.parse(Files.readString(stats));
        res.put("status", "ok");
        for (String k : List.of("prompt_tokens", "peak_rss_bytes", "kv_bytes", "kv_bytes_used", "kv_bytes_fp16_equivalent", "decode_tokens_per_s",
                "decode_tokens_per_s_steady", "prefill_tokens_per_s", "prefill_seconds", "decode_steps", "kv_tokens",
                "warmup_seconds", "warmup_wait_seconds")) {
            res.put(k, s.get(k));
        }
        if (s.get("calibration_seconds") != null) { // ort-int8/ort-int4: the unquantized scale-calibration run
            res.put("calibration_seconds", s.get("calibration_seconds"));
        }
        if (s.get("mode") != null) {
            res.put("mode", s.get("mode")); // what actually ran
        }
        return res;
    }

    private static Map<String, Object> failed(Map<String, Object> res, String error) {
        res.put("status", "failed");
        res.put("error", error);
        return res;
    }

    /** The last meaningful line of a child's stderr (not the JVM's incubator warning). */
    static String lastLine(Path log) {
        try {
            List<String> lines = Files.readAllLines(log);
            for (int i = lines.size() - 1; i >= 0; i--) {
                String l = lines.get(i).strip();
                if (!l.isEmpty() && !l.startsWith("WARNING: Using incubator modules") && !l.contains("[W:onnxruntime")) {
                    return l.length() > 300 ? l.substring(0, 300) + "..." : l;
                }
            }
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
        return "(no output)";
    }

    private static String describeConfig(Path dir) {
        try {
            Object o = io.kvquant.demo.onnx.Json.parse(Files.readString(dir.resolve("config.json")));
            if (o instanceof Map<?, ?> m) {
                Map<String, Object> keep = new LinkedHashMap<>();
                for (String k : List.of("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                        "intermediate_size", "vocab_size", "max_position_embeddings", "kvq_bench_model")) {
                    if (m.containsKey(k)) {
                        keep.put(k, m.get(k));
                    }
                }
                return Json.write(keep).replaceAll("\\s+", " ");
            }
        } catch (IOException | RuntimeException e) {
            return "(unreadable config.json)";
        }
        return "";
    }

    static double num(Object o) {
        return o instanceof Number n ? n.doubleValue() : Double.NaN;
    }

    // ---- outputs ----------------------------------------------------------------------------

    static Map<String, Object> document(Map<String, Object> run, List<Map<String, Object>> results) {
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("run", run);
        doc.put("results", results);
        doc.put("targets", targets(results));
        return doc;
    }

    static void writeOutputs(Path out, Map<String, Object> run, List<Map<String, Object>> results, boolean last)
            throws IOException {
        RunContext.writeAtomically(out.resolve("generate-bench.json"), Json.write(document(run, results)) + "\n");
        RunContext.writeAtomically(out.resolve("generate-bench.csv"), csv(results));
        RunContext.writeAtomically(out.resolve("generate-bench.md"), markdown(run, results));
        BenchPlots.plot(out.resolve("generate-bench.png"), results);
    }

    static Map<String, Object> find(List<Map<String, Object>> results, String kv, int context) {
        return find(results, kv, context, null);
    }

    /** The ok row of this kv and context, of run {@code run} when given (merged results), else the first. */
    static Map<String, Object> find(List<Map<String, Object>> results, String kv, int context, Object run) {
        for (Map<String, Object> r : results) {
            if (kv.equals(r.get("kv")) && Integer.valueOf(context).equals(r.get("context")) && "ok".equals(r.get("status"))
                    && (run == null || run.equals(r.get("run_index")))) {
                return r;
            }
        }
        return null;
    }

    private static Map<String, Object> findAny(List<Map<String, Object>> results, String kv, int context, Object run) {
        for (Map<String, Object> r : results) {
            if (kv.equals(r.get("kv")) && Integer.valueOf(context).equals(r.get("context"))
                    && (run == null || run.equals(r.get("run_index")))) {
                return r;
            }
        }
        return null;
    }

    /** Issue #14's targets, from the rows present (a target whose rows are missing is "not measured"). */
    static List<Map<String, Object>> targets(List<Map<String, Object>> results) {
        List<Map<String, Object>> t = new ArrayList<>();
        Map<String, Object> q16 = find(results, "turbo3.5", 16384);
        Map<String, Object> o16 = q16 == null ? null : find(results, "ort", 16384, q16.get("run_index"));
        t.add(target("turbo3.5 at 16K: peak RSS <= 0.35x ort's", ratio(q16, o16, "peak_rss_bytes"), 0.35, true));
        t.add(target("turbo3.5 at 16K: decode tokens/s >= 2x ort's", ratio(q16, o16, "decode_tokens_per_s"), 2.0, false));
        t.add(target("turbo3.5 at 16K: prefill tokens/s >= 0.7x ort's", ratio(q16, o16, "prefill_tokens_per_s"), 0.7, false));
        Map<String, Object> q32 = find(results, "turbo3.5", 32768);
        Map<String, Object> o32any = q32 == null ? null : findAny(results, "ort", 32768, q32.get("run_index"));
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("target", "turbo3.5 at 32K runs where ort needs > 3x its memory");
        if (q32 == null || o32any == null) {
            m.put("status", "not measured");
        } else if (!"ok".equals(o32any.get("status"))) {
            m.put("value", "ort failed: " + o32any.get("error"));
            m.put("status", "met");
        } else {
            double r = num(o32any.get("peak_rss_bytes")) / num(q32.get("peak_rss_bytes"));
            m.put("value", r);
            m.put("threshold", 3.0);
            m.put("status", r > 3.0 ? "met" : "not met");
        }
        t.add(m);
        return t;
    }

    private static double ratio(Map<String, Object> a, Map<String, Object> b, String field) {
        if (a == null || b == null) {
            return Double.NaN;
        }
        return num(a.get(field)) / num(b.get(field));
    }

    private static Map<String, Object> target(String name, double value, double threshold, boolean atMost) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("target", name);
        if (Double.isNaN(value)) {
            m.put("status", "not measured");
            return m;
        }
        m.put("value", value);
        m.put("threshold", threshold);
        m.put("status", (atMost ? value <= threshold : value >= threshold) ? "met" : "not met");
        return m;
    }

    static final List<String> COLUMNS = List.of("context", "kv", "mode", "status", "prompt_tokens", "peak_rss_bytes", "kv_bytes",
            "decode_tokens_per_s", "decode_tokens_per_s_steady", "prefill_tokens_per_s", "prefill_seconds", "wall_seconds", "error");

    static String csv(List<Map<String, Object>> results) {
        StringBuilder b = new StringBuilder(String.join(",", COLUMNS)).append('\n');
        for (Map<String, Object> r : results) {
            List<String> cells = new ArrayList<>();
            for (String c : COLUMNS) {
                Object v = r.get(c);
                String s = v == null ? "" : v instanceof Double d ? String.format(Locale.ROOT, "%.4f", d) : String.valueOf(v);
                cells.add(s.contains(",") || s.contains("\"") ? "\"" + s.replace("\"", "\"\"") + "\"" : s);
            }
            b.append(String.join(",", cells)).append('\n');
        }
        return b.toString();
    }

    @SuppressWarnings("unchecked")
    static String markdown(Map<String, Object> run, List<Map<String, Object>> results) {
        StringBuilder b = new StringBuilder();
        Map<String, Object> cfg = (Map<String, Object>) run.get("config");
        b.append("# kvq bench generate\n\n");
        b.append(String.format(Locale.ROOT, "`%s`  \n", cfg.get("command")));
        b.append(String.format(Locale.ROOT, "model `%s` (sha256 %s…): %s  \n", cfg.get("model"),
                String.valueOf(cfg.get("model_sha256")).substring(0, Math.min(12, String.valueOf(cfg.get("model_sha256")).length())),
                cfg.get("model_config")));
        b.append(String.format(Locale.ROOT, "commit %s, %s, %s, %s threads, -Xmx%s, %s decode tokens, prefill chunk %s, %s\n\n",
                run.get("git_commit"), run.get("jvm"), run.get("simd"), str(run.get("threads")), cfg.get("heap"),
                str(cfg.get("decode_tokens")), str(cfg.get("prefill_chunk")), run.get("timestamp")));
        if (run.get("merged_runs") != null) {
            b.append("Ratios (× ort) compare rows of the same run only: runs made at different times saw different machine "
                    + "load.\n\n");
        }
        if (run.get("merged_runs") instanceof List<?> merged) {
            b.append("Merged from ").append(merged.size()).append(" runs:\n\n");
            for (Object o : merged) {
                Map<String, Object> m = (Map<String, Object>) o;
                Map<String, Object> c = (Map<String, Object>) m.get("config");
                b.append(String.format(Locale.ROOT, "- `%s` (commit %s, %s)\n", c == null ? m.get("source") : c.get("command"),
                        m.get("git_commit"), m.get("timestamp")));
            }
            b.append('\n');
        }
        b.append("| context | kv | mode | peak RSS MiB | × ort | KV MiB | decode tok/s | × ort | steady decode tok/s | × ort "
                + "| prefill tok/s | × ort |\n");
        b.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (Map<String, Object> r : results) {
            int ctx = (Integer) r.get("context");
            if (!"ok".equals(r.get("status"))) {
                b.append(String.format(Locale.ROOT, "| %,d | %s | %s | failed: %s | | | | | | | | |\n", ctx, r.get("kv"), r.get("mode"),
                        String.valueOf(r.get("error")).replace("|", "/")));
                continue;
            }
            Map<String, Object> o = find(results, "ort", ctx, r.get("run_index"));
            b.append(String.format(Locale.ROOT, "| %,d | %s | %s | %,.0f | %s | %,.1f | %.2f | %s | %s | %s | %.1f | %s |\n", ctx,
                    r.get("kv"), r.get("mode"), num(r.get("peak_rss_bytes")) / 1048576, x(ratio(r, o, "peak_rss_bytes")),
                    num(r.get("kv_bytes")) / 1048576, num(r.get("decode_tokens_per_s")), x(ratio(r, o, "decode_tokens_per_s")),
                    r.get("decode_tokens_per_s_steady") == null ? "" : String.format(Locale.ROOT, "%.2f",
                            num(r.get("decode_tokens_per_s_steady"))),
                    x(ratio(r, o, "decode_tokens_per_s_steady")), num(r.get("prefill_tokens_per_s")),
                    x(ratio(r, o, "prefill_tokens_per_s"))));
        }
        b.append("\nDecode tok/s is over every generated token; kvquant rows compile their attention kernels before the prompt "
                + "(kvq generate --warmup full; its seconds, and the part waited for after the model's load, are in the JSON), "
                + "so neither rate includes that first compilation, as llama-bench leaves its warm-up run out. "
                + "Steady is the second half of the steps. Targets are judged on the first.\n");
        b.append("\nTargets (issue #14):\n\n");
        for (Map<String, Object> t : targets(results)) {
            Object v = t.get("value");
            b.append("- ").append(t.get("target")).append(": **").append(t.get("status")).append("**");
            if (v instanceof Double d) {
                b.append(String.format(Locale.ROOT, " (%.2fx)", d));
            } else if (v != null) {
                b.append(" (").append(v).append(')');
            }
            b.append('\n');
        }
        return b.toString();
    }

    /** A number as JSON gave it, without a trailing .0 for whole values. */
    private static String str(Object o) {
        return o instanceof Double d && d == Math.rint(d) ? String.valueOf(d.longValue()) : String.valueOf(o);
    }

    private static String x(double v) {
        return Double.isNaN(v) ? "" : String.format(Locale.ROOT, "%.2fx", v);
    }

    private static void deleteTree(Path p) {
        try (var walk = Files.walk(p)) {
            for (Path f : walk.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(f);
            }
        } catch (IOException e) {
            // a temp folder left behind is harmless
        }
    }

    /**
     * A rough time model for the plan, from runs of this benchmark on the project's 2-core
     * machine (seconds = start + prefill a·n + b·n² + decode tokens·(c + e·n)), scaled to the
     * model; during the run the estimate of what is left is corrected by the measured/predicted
     * ratio of the rows done.
     */
    record Estimate(double scale, double kvScale) {
        static Estimate forModel(BenchModelWriter.Geometry g) {
            if (g == null) {
                return new Estimate(1, 1);
            }
            BenchModelWriter.Geometry d = BenchModelWriter.Geometry.benchDefault(g.vocab());
            return new Estimate((double) g.parameters() / d.parameters(), (double) g.kvBytesPerToken() / d.kvBytesPerToken());
        }

        double seconds(Row r, int decode) {
            double n = r.context();
            boolean compressed = !r.ort() && !r.kv().equals("full") && !r.kv().equals("fp16");
            // per-token weights cost, per-token-pair attention cost, per-decode-step costs
            double a = r.ort() ? ORT_A : KVQ_A;
            double b = r.ort() ? ORT_B : compressed ? KVQ_B_COMPRESSED : KVQ_B_DENSE;
            double c = r.ort() ? ORT_C : KVQ_C;
            double e = r.ort() ? ORT_E : compressed ? KVQ_E_COMPRESSED : KVQ_E_DENSE;
            double start = r.ort() ? ORT_START : KVQ_START;
            return start + scale * a * n + kvScale * b * n * n + decode * (scale * c + kvScale * e * n);
        }
    }

    // Coefficients of Estimate (seconds), fitted in session 12 to the engine-era rows of the
    // default benchmark model on the shared 2-core development machine (results/bench-generate/
    // s7-final, s8-final, s9-java-step; 16 decode tokens): ort at 4K ~14 s and 16K ~87 s, turbo3.5
    // with --warmup full ~22 s and ~110 s. The first fit (sessions 2-4, load average ~20, before
    // the engine) predicted 12 min and 2 h 46 min for those turbo3.5 rows, and kept session 11
    // from starting a run of a few minutes. A quiet machine is up to 2x faster (session 10); the
    // running estimate corrects itself after the first row.
    static final double ORT_START = 3;
    static final double KVQ_START = 8; // JVM start and the kernels' warm-up (--warmup full)
    static final double ORT_A = 1.56e-3;
    static final double ORT_B = 2.0e-7;
    static final double ORT_C = 0.021;
    static final double ORT_E = 1.5e-5;
    static final double KVQ_A = 2.1e-3;
    static final double KVQ_B_DENSE = 2.5e-7;
    static final double KVQ_B_COMPRESSED = 2.5e-7;
    static final double KVQ_C = 0.033;
    static final double KVQ_E_DENSE = 1.5e-5;
    static final double KVQ_E_COMPRESSED = 4.1e-6;
}
