package io.kvquant.eval.quality;

import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.eval.Charts;
import io.kvquant.eval.Json;
import io.kvquant.eval.Progress;
import io.kvquant.eval.RunContext;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq eval perplexity}: long-context perplexity with the KV cache actually used while
 * decoding. Each window's first {@code --prefix} tokens are prefilled, then every following
 * token is fed one at a time and scored from the logits the model produced with the compressed
 * past, so attention reads what the cache reconstructs. All settings run in lock step over the
 * same windows and are compared with {@code full} position by position: relative perplexity
 * change, mean KL divergence of the next-token distributions, and top-1 agreement.
 */
@Command(name = "perplexity", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Perplexity of a decoder with each KV cache setting, scored token by token after a prefix, "
                + "with KL divergence and top-1 agreement against full precision."},
        footer = {"", "Example: ./kvq eval perplexity --kv full,turbo3.5,turbo2.5,kivi2 --windows 2 --out results/ppl"})
public final class PerplexityCommand implements Callable<Integer> {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @CommandLine.Mixin
    ModelOptions modelOptions;

    @Option(names = "--text", paramLabel = "FILE",
            description = "UTF-8 text to score (default: the bundled model's held-out text, models/data/heldout.txt).")
    Path text;

    @Option(names = "--kv", paramLabel = "LIST", defaultValue = "full,turbo3.5,turbo2.5,kivi2",
            description = "KV settings separated by ',' or ';' (a name=value item belongs to the setting before it: "
                    + "'turbo3.5,qjl=k'); full is always added as the reference. ONNX Runtime alone: ort, and its own "
                    + "quantized cache ort-int8, ort-int4 (GroupQueryAttention models; scales calibrated on each window's "
                    + "first prefill chunk) (default: ${DEFAULT-VALUE}).")
    String kv;

    @Option(names = "--context", paramLabel = "N", defaultValue = "0",
            description = "Tokens per window; 0 = the model's context (default: ${DEFAULT-VALUE}).")
    int context;

    @Option(names = "--prefix", paramLabel = "N", defaultValue = "-1",
            description = "Tokens prefilled before scoring starts in each window; -1 = half the window (default: ${DEFAULT-VALUE}).")
    int prefix;

    @Option(names = "--stride", paramLabel = "N", defaultValue = "0",
            description = "Tokens between window starts; 0 = the window length (default: ${DEFAULT-VALUE}).")
    int stride;

    @Option(names = "--windows", paramLabel = "N", defaultValue = "2",
            description = "Windows to score; 0 = as many as the text holds (default: ${DEFAULT-VALUE}).")
    int windows;

    @Option(names = "--per-token", paramLabel = "FILE",
            description = "Also write every scored position to FILE (CSV: window, position, token, then the NLL and the "
                    + "KL against full of each setting), to find where the KL comes from.")
    Path perToken;

    @Option(names = "--json", description = "Print the results as JSON on stdout (instead of the table).")
    boolean json;

    @Option(names = "--out", paramLabel = "DIR",
            description = "Write perplexity.json, perplexity.csv, perplexity.md and perplexity.png to DIR "
                    + "(rewritten after every window, so an interrupted run keeps what it finished).")
    Path out;

    @Override
    public Integer call() throws IOException {
        // kvquant settings and ONNX Runtime rows (ort, ort-int8, ort-int4), full first as the reference
        List<Object> settings = new ArrayList<>(OrtRows.parse(kv));
        KvQuantConfig full = KvQuantConfig.full();
        settings.remove(full);
        settings.addFirst(full);
        if (context < 0 || stride < 0 || windows < 0) {
            throw new IllegalArgumentException("--context, --stride and --windows must be >= 0");
        }
        Path textFile = text != null ? text : defaultText();
        if (!Files.isRegularFile(textFile)) {
            throw new IllegalArgumentException("text file not found: " + textFile);
        }
        PrintWriter err = spec.commandLine().getErr();
        PrintWriter stdout = spec.commandLine().getOut();
        try (QualityModel qm = modelOptions.open()) {
            OrtRows.check(qm, settings);
            int ctx = context == 0 ? qm.context(2048) : context;
            if (qm.model.maxContext() > 0 && ctx > qm.model.maxContext()) {
                throw new IllegalArgumentException("--context " + ctx + " is longer than the model's context of "
                        + qm.model.maxContext() + " tokens");
            }
            int pre = prefix < 0 ? ctx / 2 : prefix;
            if (pre < 1 || pre >= ctx) {
                throw new IllegalArgumentException("--prefix must be in [1, " + (ctx - 1) + "] for a " + ctx
                        + "-token window, got " + pre);
            }
            int step = stride == 0 ? ctx : stride;
            long[] ids = qm.tokenizer.encode(Files.readString(textFile));
            List<Integer> starts = new ArrayList<>();
            for (int s = 0; s + ctx <= ids.length && (windows == 0 || starts.size() < windows); s += step) {
                starts.add(s);
            }
            if (starts.isEmpty()) {
                throw new IllegalArgumentException("the text is " + ids.length + " tokens, shorter than one " + ctx
                        + "-token window; use a longer --text or a smaller --context");
            }
            if (windows > 0 && starts.size() < windows) {
                err.printf(Locale.ROOT, "note: the text holds %d windows of %d tokens, not %d%n", starts.size(), ctx, windows);
            }
            Map<String, Object> config = qm.describe();
            config.put("text", textFile.toString());
            config.put("text_tokens", ids.length);
            config.put("context", ctx);
            config.put("prefix", pre);
            config.put("stride", step);
            config.put("windows", starts.size());
            config.put("kv", settings.stream().map(Object::toString).toList());
            Map<String, Object> runMeta = RunContext.capture(qm.threads, config);

            Score[] scores = new Score[settings.size()];
            for (int i = 0; i < scores.length; i++) {
                scores[i] = new Score(settings.get(i).toString());
            }
            int perWindow = ctx - pre;
            PrintWriter tokCsv = null;
            if (perToken != null) {
                tokCsv = new PrintWriter(Files.newBufferedWriter(perToken));
                StringBuilder h = new StringBuilder("window,position,token");
                for (Object c : settings) {
                    h.append(",\"nll ").append(c).append("\",\"kl ").append(c).append('"');
                }
                tokCsv.println(h);
            }
            Progress bar = new Progress(err, "perplexity", (long) starts.size() * perWindow * settings.size());
            long done = 0;
            int vocab = -1;
            for (int w = 0; w < starts.size(); w++) {
                int s0 = starts.get(w);
                List<AutoCloseable> runs = new ArrayList<>();
                List<java.util.function.LongFunction<float[]>> steps = new ArrayList<>();
                try {
                    float[][] logits = new float[settings.size()][];
                    long[] prompt = java.util.Arrays.copyOfRange(ids, s0, s0 + pre);
                    for (int i = 0; i < settings.size(); i++) {
                        if (settings.get(i) instanceof io.kvquant.demo.graph.OrtQuantKv.Setting ort) {
                            OrtRows.Run run = OrtRows.start(qm, ort, prompt); // calibrated on this window's first chunk
                            runs.add(run);
                            steps.add(run.decoder()::step);
                            logits[i] = run.decoder().prefill(prompt, null);
                            scores[i].bits = run.bitsPerElement();
                            scores[i].ratio = 16 / scores[i].bits;
                            continue;
                        }
                        KvQuantConfig cfg = (KvQuantConfig) settings.get(i);
                        if (cfg.needsCalibration()) {
                            io.kvquant.cache.BitAllocation.Plan plan = AutoCalibration.plan(qm, cfg, prompt);
                            scores[i].plans.add(plan.describe());
                            err.println("window " + (w + 1) + ", " + cfg + ": " + plan.describe());
                            cfg = plan.setting();
                        }
                        QualityModel.Run run = qm.start(cfg);
                        runs.add(run);
                        steps.add(run.decoder()::step);
                        logits[i] = run.decoder().prefill(prompt, null);
                    }
                    vocab = logits[0].length;
                    double[] ref = new double[vocab];
                    double[] lp = new double[vocab];
                    for (int t = pre; t < ctx; t++) {
                        int target = (int) ids[s0 + t];
                        logSoftmax(logits[0], ref);
                        int refTop = Sampler.argmax(logits[0]);
                        StringBuilder row = tokCsv == null ? null : new StringBuilder().append(w).append(',').append(t)
                                .append(',').append(target);
                        for (int i = 0; i < settings.size(); i++) {
                            double[] mine = i == 0 ? ref : logSoftmax(logits[i], lp);
                            double k = kl(ref, mine);
                            scores[i].add(-mine[target], k, Sampler.argmax(logits[i]) == refTop);
                            if (row != null) {
                                row.append(String.format(Locale.ROOT, ",%.5f,%.6f", -mine[target], k));
                            }
                        }
                        if (row != null) {
                            tokCsv.println(row);
                        }
                        if (t + 1 < ctx) {
                            for (int i = 0; i < settings.size(); i++) {
                                logits[i] = steps.get(i).apply(target);
                            }
                        }
                        done += settings.size();
                        bar.update(done, "window " + (w + 1) + "/" + starts.size());
                    }
                    for (int i = 0; i < settings.size(); i++) {
                        scores[i].endWindow();
                        if (runs.get(i) instanceof QualityModel.Run run) {
                            scores[i].memory(run);
                        }
                    }
                } finally {
                    for (AutoCloseable r : runs) {
                        try {
                            r.close();
                        } catch (Exception e) {
                            throw new IllegalStateException(e);
                        }
                    }
                }
                if (out != null) {
                    write(out, runMeta, scores, w + 1 == starts.size());
                }
            }
            bar.done();
            if (tokCsv != null) {
                tokCsv.close();
            }
            if (json) {
                stdout.println(Json.write(document(runMeta, scores, true)));
            } else {
                stdout.print(markdown(scores, (long) starts.size() * perWindow, ctx, pre));
            }
            stdout.flush();
            if (out != null) {
                err.println("wrote " + out.resolve("perplexity.json") + ", .csv, .md, .png");
            }
        }
        return 0;
    }

    static Path defaultText() {
        Path modelDir = io.kvquant.demo.cli.ModelPaths.bundledModel();
        return modelDir.getParent().resolve("data").resolve("heldout.txt");
    }

    /** Running totals for one setting. */
    static final class Score {
        final String name;
        long tokens;
        double nll;
        double kl;
        long agree;
        double bits = Double.NaN;
        double ratio = Double.NaN;
        /** The calibration plan of each window (auto: settings only). */
        final List<String> plans = new ArrayList<>();
        /** Summed NLL and tokens of each finished window. */
        final List<double[]> windows = new ArrayList<>();
        private double nllAtWindow;
        private long tokensAtWindow;

        Score(String name) {
            this.name = name;
        }

        void add(double tokenNll, double tokenKl, boolean top1) {
            tokens++;
            nll += tokenNll;
            kl += tokenKl;
            agree += top1 ? 1 : 0;
        }

        /** Closes the current window (its NLL and token count join {@link #windows}). */
        void endWindow() {
            windows.add(new double[] {nll - nllAtWindow, tokens - tokensAtWindow});
            nllAtWindow = nll;
            tokensAtWindow = tokens;
        }

        void memory(QualityModel.Run run) {
            bits = QualityModel.bitsPerElement(run.cache());
            ratio = QualityModel.memoryRatio(run.cache());
        }

        double perplexity() {
            return Math.exp(nll / tokens);
        }
    }

    /** Natural-log softmax of {@code logits} into {@code out}, computed stably. */
    public static double[] logSoftmax(float[] logits, double[] out) {
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double sum = 0;
        for (float v : logits) {
            sum += Math.exp(v - max);
        }
        double lse = max + Math.log(sum);
        for (int i = 0; i < logits.length; i++) {
            out[i] = logits[i] - lse;
        }
        return out;
    }

    /** KL(p || q) from log-probabilities. */
    static double kl(double[] logP, double[] logQ) {
        if (logP == logQ) {
            return 0;
        }
        double s = 0;
        for (int i = 0; i < logP.length; i++) {
            double p = Math.exp(logP[i]);
            if (p > 0) {
                s += p * (logP[i] - logQ[i]);
            }
        }
        return Math.max(0, s);
    }


    /** Each window's change in mean NLL (log perplexity) against {@code ref}, over the windows both scored. */
    private static double[] windowDeltaLog(Score s, Score ref) {
        int n = Math.min(s.windows.size(), ref.windows.size());
        double[] d = new double[n];
        for (int w = 0; w < n; w++) {
            double[] a = s.windows.get(w);
            double[] b = ref.windows.get(w);
            d[w] = a[0] / a[1] - b[0] / b[1];
        }
        return d;
    }

    /** Each window's change in perplexity against {@code ref}, in percent ({@code 100·(e^Δ − 1)}). */
    static double[] windowDeltaPct(Score s, Score ref) {
        double[] d = windowDeltaLog(s, ref);
        for (int w = 0; w < d.length; w++) {
            d[w] = 100 * Math.expm1(d[w]);
        }
        return d;
    }

    /**
     * Standard error of the change in perplexity, from the spread of its window-by-window values
     * (windows, not tokens, are the independent draws: a window's tokens share their past, so one
     * hard window moves all of its tokens at once); NaN below two windows. In percent of
     * perplexity, through Δppl ≈ e^Δ − 1 at the mean Δ (log-perplexity differences are averaged;
     * every window scores the same number of tokens).
     */
    static double deltaPctStandardError(Score s, Score ref) {
        double[] d = windowDeltaLog(s, ref);
        int n = d.length;
        if (n < 2) {
            return Double.NaN;
        }
        double mean = 0;
        for (double v : d) {
            mean += v / n;
        }
        double ss = 0;
        for (double v : d) {
            ss += (v - mean) * (v - mean);
        }
        return 100 * Math.exp(mean) * Math.sqrt(ss / (n - 1) / n);
    }

    static List<Map<String, Object>> rows(Score[] scores) {
        double refPpl = scores[0].perplexity();
        List<Map<String, Object>> rows = new ArrayList<>();
        for (Score s : scores) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("kv", s.name);
            r.put("tokens", s.tokens);
            r.put("perplexity", s.perplexity());
            r.put("delta_pct", 100 * (s.perplexity() / refPpl - 1));
            double se = deltaPctStandardError(s, scores[0]);
            r.put("delta_pct_se", Double.isNaN(se) ? null : se);
            r.put("window_delta_pct", java.util.Arrays.stream(windowDeltaPct(s, scores[0])).boxed().toList());
            r.put("kl_mean", s.kl / s.tokens);
            r.put("top1_agreement", (double) s.agree / s.tokens);
            r.put("bits_per_element", s.bits);
            r.put("memory_ratio_vs_fp16", s.ratio);
            if (!s.plans.isEmpty()) {
                r.put("plans", List.copyOf(s.plans));
            }
            rows.add(r);
        }
        return rows;
    }

    static Map<String, Object> document(Map<String, Object> runMeta, Score[] scores, boolean complete) {
        Map<String, Object> doc = new LinkedHashMap<>(runMeta);
        doc.put("complete", complete);
        doc.put("results", rows(scores));
        return doc;
    }

    static String markdown(Score[] scores, long tokensPerSetting, int ctx, int pre) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "Perplexity, %d tokens per setting scored one by one after a %d-token prefix "
                + "(windows of %d):%n%n", tokensPerSetting, pre, ctx));
        b.append("| kv | bits/elem | memory vs fp16 | perplexity | Δ ppl | ± (s.e. over windows) | KL (nats) | top-1 agreement |\n");
        b.append("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (Map<String, Object> r : rows(scores)) {
            Object se = r.get("delta_pct_se");
            b.append(String.format(Locale.ROOT, "| %s | %.2f | %.2fx | %.3f | %+.2f%% | %s | %.5f | %.2f%% |%n", r.get("kv"),
                    (double) r.get("bits_per_element"), (double) r.get("memory_ratio_vs_fp16"), (double) r.get("perplexity"),
                    (double) r.get("delta_pct"), se == null ? "–" : String.format(Locale.ROOT, "%.2f", (double) se),
                    (double) r.get("kl_mean"), 100 * (double) r.get("top1_agreement")));
        }
        b.append("\nΔ ppl's ± is its standard error from the spread of the window-by-window values (windows, not tokens, "
                + "are the independent draws); – below two windows.\n");
        return b.toString();
    }

    private static void write(Path dir, Map<String, Object> runMeta, Score[] scores, boolean complete) throws IOException {
        Files.createDirectories(dir);
        RunContext.writeAtomically(dir.resolve("perplexity.json"), Json.write(document(runMeta, scores, complete)) + "\n");
        StringBuilder csv = new StringBuilder(
                "kv,tokens,perplexity,delta_pct,delta_pct_se,kl_mean,top1_agreement,bits_per_element,memory_ratio_vs_fp16\n");
        for (Map<String, Object> r : rows(scores)) {
            csv.append('"').append(r.get("kv")).append('"');
            for (String k : List.of("tokens", "perplexity", "delta_pct", "delta_pct_se", "kl_mean", "top1_agreement",
                    "bits_per_element", "memory_ratio_vs_fp16")) {
                Object v = r.get(k);
                csv.append(",").append(v == null ? "" : v);
            }
            csv.append('\n');
        }
        RunContext.writeAtomically(dir.resolve("perplexity.csv"), csv.toString());
        @SuppressWarnings("unchecked")
        Map<String, Object> cfg = (Map<String, Object>) runMeta.get("config");
        String md = markdown(scores, scores[0].tokens, (int) cfg.get("context"), (int) cfg.get("prefix"))
                + (complete ? "" : "\n(incomplete: the run was interrupted or is still going)\n");
        RunContext.writeAtomically(dir.resolve("perplexity.md"), md);
        List<String> names = new ArrayList<>();
        List<Double> delta = new ArrayList<>();
        List<Double> kls = new ArrayList<>();
        for (Map<String, Object> r : rows(scores).subList(1, scores.length)) {
            names.add((String) r.get("kv"));
            delta.add((Double) r.get("delta_pct"));
            kls.add((Double) r.get("kl_mean"));
        }
        if (!names.isEmpty()) {
            Charts.bars(dir.resolve("perplexity.png"), "Perplexity change against full precision",
                    "Δ perplexity (%)", names, delta, "KL (nats, ×100)", kls.stream().map(v -> v * 100).toList());
        }
    }
}
