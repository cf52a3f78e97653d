package io.kvquant.eval.quality;

import io.kvquant.cache.KvQuantConfig;
import io.kvquant.eval.Charts;
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
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq eval needle}: needle in a haystack. A pass code is stated at a depth of a haystack
 * of the given length, the question comes at the end, and the model's greedy continuation must
 * contain the code. Every setting sees the same haystacks, depths and codes. The prompt is
 * prefilled in chunks, so everything before the last chunk is read back from the cache; the
 * answer's digits after the first are decoded one at a time over the compressed cache.
 */
@Command(name = "needle", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Needle in a haystack: accuracy per haystack length and needle depth for each KV cache setting, "
                + "with a heat map per setting."},
        footer = {"", "Example: ./kvq eval needle --kv full,turbo3.5,turbo2.5 --out results/needle"})
public final class NeedleCommand implements Callable<Integer> {

    static final String NEEDLE = "The pass code is {code}.";
    static final String QUESTION = "\nWhat is the pass code? The pass code is";

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @CommandLine.Mixin
    ModelOptions modelOptions;

    @Option(names = "--kv", paramLabel = "LIST", defaultValue = "full,turbo3.5,turbo2.5,kivi2",
            description = "KV settings separated by ',' or ';' (a name=value item belongs to the setting before it); "
                    + "ONNX Runtime alone: ort, ort-int8, ort-int4 (its own quantized cache, GroupQueryAttention models, "
                    + "scales calibrated on each prompt's first prefill chunk) (default: ${DEFAULT-VALUE}).")
    String kv;

    @Option(names = "--lengths", paramLabel = "LIST", defaultValue = "1024,1280,1536,1792,2048",
            description = "Haystack lengths in tokens: prompt and answer (code digits + 2 tokens) together, at most the "
                    + "model's context (default: ${DEFAULT-VALUE}).")
    String lengths;

    @Option(names = "--depths", paramLabel = "LIST", defaultValue = "0,10,20,30,40,50,60,70,80,90,100",
            description = "Needle depths in percent of the haystack (default: ${DEFAULT-VALUE}).")
    String depths;

    @Option(names = "--trials", paramLabel = "N", defaultValue = "2",
            description = "Haystacks (different text and code) per cell (default: ${DEFAULT-VALUE}).")
    int trials;

    @Option(names = "--haystack", paramLabel = "FILE",
            description = "UTF-8 filler text (default: the bundled model's held-out text, models/data/heldout.txt).")
    Path haystack;

    @Option(names = "--needle", paramLabel = "TEXT", defaultValue = NEEDLE,
            description = "The fact to hide; {code} is replaced by the pass code (default: '${DEFAULT-VALUE}').")
    String needle;

    @Option(names = "--question", paramLabel = "TEXT", defaultValue = QUESTION,
            description = "The question at the end, which the answer continues; '\\n' is a newline "
                    + "(default: '\\nWhat is the pass code? The pass code is').")
    String question;

    @Option(names = "--code-digits", paramLabel = "N", defaultValue = "5",
            description = "Digits of the pass code, 1-12 (default: ${DEFAULT-VALUE}).")
    int codeDigits;

    @Option(names = "--seed", defaultValue = "7", description = "Seed for codes and haystack offsets (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--json", description = "Print the results as JSON on stdout (instead of the table).")
    boolean json;

    @Option(names = "--out", paramLabel = "DIR",
            description = "Write needle.json, needle.csv, needle.md and a heat map PNG per setting to DIR "
                    + "(rewritten after every cell, so an interrupted run keeps what it finished).")
    Path out;

    /** One grid cell of one setting. */
    record Cell(String kv, int length, double depth, int correct, int trials, List<String> answers, List<String> plans) {
    }

    @Override
    public Integer call() throws IOException {
        List<Object> settings = OrtRows.parse(kv); // kvquant settings and ONNX Runtime rows
        int[] lens = ints(lengths, "--lengths");
        double[] deps = Arrays.stream(ints(depths, "--depths")).mapToDouble(d -> d / 100.0).toArray();
        for (double d : deps) {
            if (d < 0 || d > 1) {
                throw new IllegalArgumentException("--depths are percentages in [0, 100], got " + Math.round(d * 100));
            }
        }
        if (trials < 1) {
            throw new IllegalArgumentException("--trials must be >= 1, got " + trials);
        }
        if (codeDigits < 1 || codeDigits > 12) {
            throw new IllegalArgumentException("--code-digits must be in [1, 12], got " + codeDigits);
        }
        if (!needle.contains("{code}")) {
            throw new IllegalArgumentException("--needle must contain {code}, got '" + needle + "'");
        }
        String q = question.replace("\\n", "\n");
        Path hay = haystack != null ? haystack : PerplexityCommand.defaultText();
        if (!Files.isRegularFile(hay)) {
            throw new IllegalArgumentException("haystack file not found: " + hay);
        }
        PrintWriter err = spec.commandLine().getErr();
        PrintWriter stdout = spec.commandLine().getOut();
        try (QualityModel qm = modelOptions.open()) {
            OrtRows.check(qm, settings);
            long[] filler = qm.tokenizer.encode(Files.readString(hay));
            int answerTokens = codeDigits + 2;
            long[] qIds = qm.tokenizer.encode(q);
            int ctx = qm.model.maxContext();
            for (int len : lens) {
                if (ctx > 0 && len > ctx) {
                    throw new IllegalArgumentException("--lengths: " + len + " is longer than the model's context of " + ctx
                            + " tokens");
                }
                int needleLen = qm.tokenizer.encode(" " + needle.replace("{code}", "0".repeat(codeDigits)) + " ").length;
                if (len < needleLen + qIds.length + answerTokens + 8) {
                    throw new IllegalArgumentException("--lengths: " + len + " tokens cannot hold the needle and the question");
                }
                if (filler.length < len) {
                    throw new IllegalArgumentException("the haystack text is " + filler.length + " tokens, shorter than "
                            + len + "; give a longer --haystack");
                }
            }
            Map<String, Object> config = qm.describe();
            config.put("kv", settings.stream().map(Object::toString).toList());
            config.put("answer_tokens", answerTokens);
            config.put("lengths", Arrays.stream(lens).boxed().toList());
            config.put("depths", Arrays.stream(deps).boxed().toList());
            config.put("trials", trials);
            config.put("haystack", hay.toString());
            config.put("needle", needle);
            config.put("question", q);
            config.put("code_digits", codeDigits);
            config.put("seed", seed);
            Map<String, Object> runMeta = RunContext.capture(qm.threads, config);

            List<Cell> cells = new ArrayList<>();
            long total = (long) lens.length * deps.length * trials * settings.size();
            Progress bar = new Progress(err, "needle", total);
            long done = 0;
            for (int li = 0; li < lens.length; li++) {
                for (int di = 0; di < deps.length; di++) {
                    int[] correct = new int[settings.size()];
                    List<List<String>> answers = new ArrayList<>();
                    List<List<String>> plans = new ArrayList<>();
                    settings.forEach(s -> answers.add(new ArrayList<>()));
                    settings.forEach(s -> plans.add(new ArrayList<>()));
                    for (int t = 0; t < trials; t++) {
                        // the same haystack and code for every setting
                        SplittableRandom rng = new SplittableRandom(seed * 1_000_003L + lens[li] * 7919L + di * 131L + t);
                        String code = code(rng, codeDigits);
                        // the answer must fit in the context too: the prompt leaves room for it
                        long[] prompt = prompt(qm, filler, qIds, needle, lens[li] - answerTokens, deps[di], code, rng);
                        for (int i = 0; i < settings.size(); i++) {
                            String answer = answer(qm, settings.get(i), prompt, answerTokens, plans.get(i));
                            answers.get(i).add(answer);
                            if (answer.contains(code)) {
                                correct[i]++;
                            }
                            bar.update(++done, settings.get(i) + " length " + lens[li]);
                        }
                    }
                    for (int i = 0; i < settings.size(); i++) {
                        cells.add(new Cell(settings.get(i).toString(), lens[li], deps[di], correct[i], trials, answers.get(i),
                                plans.get(i)));
                    }
                    if (out != null) {
                        write(out, runMeta, settings, lens, deps, cells, false);
                    }
                }
            }
            bar.done();
            if (out != null) {
                write(out, runMeta, settings, lens, deps, cells, true);
                err.println("wrote " + out.resolve("needle.json") + ", .csv, .md and heat maps");
            }
            if (json) {
                stdout.println(Json.write(document(runMeta, settings, cells, true)));
            } else {
                stdout.print(markdown(settings, lens, deps, cells));
            }
            stdout.flush();
        }
        return 0;
    }

    static String code(SplittableRandom rng, int digits) {
        StringBuilder b = new StringBuilder();
        b.append((char) ('1' + rng.nextInt(9)));
        for (int i = 1; i < digits; i++) {
            b.append((char) ('0' + rng.nextInt(10)));
        }
        return b.toString();
    }

    /** Filler from a random offset of the haystack, the needle at {@code depth}, the question last. */
    static long[] prompt(QualityModel qm, long[] filler, long[] qIds, String needleTemplate, int length, double depth,
                         String code, SplittableRandom rng) {
        long[] nIds = qm.tokenizer.encode(" " + needleTemplate.replace("{code}", code) + " ");
        return assemble(filler, nIds, qIds, length, depth, rng);
    }

    static long[] assemble(long[] filler, long[] nIds, long[] qIds, int length, double depth, SplittableRandom rng) {
        int nFill = length - nIds.length - qIds.length;
        int start = rng.nextInt(filler.length - nFill + 1);
        int at = (int) Math.round(depth * nFill);
        long[] p = new long[length];
        System.arraycopy(filler, start, p, 0, at);
        System.arraycopy(nIds, 0, p, at, nIds.length);
        System.arraycopy(filler, start + at, p, at + nIds.length, nFill - at);
        System.arraycopy(qIds, 0, p, at + nIds.length + nFill - at, qIds.length);
        return p;
    }

    /**
     * Greedy continuation of {@code prompt} with one cache setting, {@code n} tokens, decoded to
     * text; an auto: setting is first calibrated on the prompt and its plan added to {@code plans}.
     */
    static String answer(QualityModel qm, Object setting, long[] prompt, int n, List<String> plans) {
        if (setting instanceof io.kvquant.demo.graph.OrtQuantKv.Setting ort) {
            try (OrtRows.Run run = OrtRows.start(qm, ort, prompt)) { // calibrated on the prompt's first chunk
                return greedy(qm, run.decoder().prefill(prompt, null), run.decoder()::step, run.decoder()::position, n);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
        KvQuantConfig cfg = (KvQuantConfig) setting;
        if (cfg.needsCalibration()) {
            io.kvquant.cache.BitAllocation.Plan plan = AutoCalibration.plan(qm, cfg, prompt);
            plans.add(plan.describe());
            cfg = plan.setting();
        }
        try (QualityModel.Run run = qm.start(cfg)) {
            return greedy(qm, run.decoder().prefill(prompt, null), run.decoder()::step, run.decoder()::position, n);
        }
    }

    /** {@code n} greedy tokens from {@code logits} on, decoded to text. */
    private static String greedy(QualityModel qm, float[] logits, java.util.function.LongFunction<float[]> step,
                                 java.util.function.IntSupplier position, int n) {
        int ctx = qm.model.maxContext();
        long[] outIds = new long[n];
        int k = 0;
        while (true) {
            outIds[k++] = io.kvquant.demo.sampling.Sampler.argmax(logits);
            if (k == n || (ctx > 0 && position.getAsInt() >= ctx)) {
                break;
            }
            logits = step.apply(outIds[k - 1]);
        }
        return qm.tokenizer.decode(Arrays.copyOf(outIds, k));
    }

    static int[] ints(String list, String option) {
        try {
            int[] v = Arrays.stream(list.split(",")).map(String::trim).mapToInt(Integer::parseInt).toArray();
            if (v.length == 0) {
                throw new IllegalArgumentException(option + " is empty");
            }
            for (int x : v) {
                if (x < 0) {
                    throw new IllegalArgumentException(option + " values must be >= 0, got " + x);
                }
            }
            return v;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(option + " must be a comma-separated list of integers, got '" + list + "'");
        }
    }

    static Map<String, Double> accuracy(List<?> settings, List<Cell> cells) {
        Map<String, Double> acc = new LinkedHashMap<>();
        for (Object s : settings) {
            int c = 0;
            int t = 0;
            for (Cell cell : cells) {
                if (cell.kv().equals(s.toString())) {
                    c += cell.correct();
                    t += cell.trials();
                }
            }
            acc.put(s.toString(), t == 0 ? Double.NaN : (double) c / t);
        }
        return acc;
    }

    static Map<String, Object> document(Map<String, Object> runMeta, List<?> settings, List<Cell> cells,
                                        boolean complete) {
        Map<String, Object> doc = new LinkedHashMap<>(runMeta);
        doc.put("complete", complete);
        List<Map<String, Object>> res = new ArrayList<>();
        for (Map.Entry<String, Double> e : accuracy(settings, cells).entrySet()) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("kv", e.getKey());
            r.put("accuracy", e.getValue());
            List<Map<String, Object>> cs = new ArrayList<>();
            for (Cell c : cells) {
                if (c.kv().equals(e.getKey())) {
                    Map<String, Object> x = new LinkedHashMap<>();
                    x.put("kv", c.kv());
                    x.put("length", c.length());
                    x.put("depth", c.depth());
                    x.put("correct", c.correct());
                    x.put("trials", c.trials());
                    x.put("answers", c.answers());
                    if (!c.plans().isEmpty()) {
                        x.put("plans", c.plans());
                    }
                    cs.add(x);
                }
            }
            r.put("cells", cs);
            res.add(r);
        }
        doc.put("results", res);
        return doc;
    }

    static String markdown(List<?> settings, int[] lens, double[] deps, List<Cell> cells) {
        StringBuilder b = new StringBuilder("Needle in a haystack, accuracy per haystack length (all depths):\n\n| kv | overall |");
        for (int l : lens) {
            b.append(' ').append(l).append(" |");
        }
        b.append("\n|---|---:|").append("---:|".repeat(lens.length)).append('\n');
        Map<String, Double> acc = accuracy(settings, cells);
        for (Object s : settings) {
            b.append("| ").append(s).append(String.format(Locale.ROOT, " | %.1f%% |", 100 * acc.get(s.toString())));
            for (int l : lens) {
                int c = 0;
                int t = 0;
                for (Cell cell : cells) {
                    if (cell.kv().equals(s.toString()) && cell.length() == l) {
                        c += cell.correct();
                        t += cell.trials();
                    }
                }
                b.append(t == 0 ? " – |" : String.format(Locale.ROOT, " %d/%d |", c, t));
            }
            b.append('\n');
        }
        return b.toString();
    }

    private static void write(Path dir, Map<String, Object> runMeta, List<?> settings, int[] lens, double[] deps,
                              List<Cell> cells, boolean complete) throws IOException {
        Files.createDirectories(dir);
        RunContext.writeAtomically(dir.resolve("needle.json"), Json.write(document(runMeta, settings, cells, complete)) + "\n");
        StringBuilder csv = new StringBuilder("kv,length,depth,correct,trials\n");
        for (Cell c : cells) {
            csv.append('"').append(c.kv()).append("\",").append(c.length()).append(',').append(c.depth()).append(',')
                    .append(c.correct()).append(',').append(c.trials()).append('\n');
        }
        RunContext.writeAtomically(dir.resolve("needle.csv"), csv.toString());
        RunContext.writeAtomically(dir.resolve("needle.md"), markdown(settings, lens, deps, cells)
                + (complete ? "" : "\n(incomplete: the run was interrupted or is still going)\n"));
        if (!complete) {
            return;
        }
        List<String> cols = Arrays.stream(lens).mapToObj(Integer::toString).toList();
        List<String> rows = Arrays.stream(deps).mapToObj(d -> Math.round(d * 100) + "%").toList();
        Map<String, Double> acc = accuracy(settings, cells);
        for (Object s : settings) {
            double[][] v = new double[deps.length][lens.length];
            for (Cell c : cells) {
                if (c.kv().equals(s.toString())) {
                    int li = indexOf(lens, c.length());
                    int di = indexOf(deps, c.depth());
                    v[di][li] = (double) c.correct() / c.trials();
                }
            }
            String name = "needle-" + s.toString().replaceAll("[^A-Za-z0-9.=-]+", "_") + ".png";
            Charts.heatMap(dir.resolve(name), String.format(Locale.ROOT, "Needle in a haystack, %s: %.0f%%", s,
                    100 * acc.get(s.toString())), "haystack length (tokens)", cols, "needle depth", rows, v);
        }
    }

    private static int indexOf(int[] a, int v) {
        for (int i = 0; i < a.length; i++) {
            if (a[i] == v) {
                return i;
            }
        }
        return -1;
    }

    private static int indexOf(double[] a, double v) {
        for (int i = 0; i < a.length; i++) {
            if (a[i] == v) {
                return i;
            }
        }
        return -1;
    }
}
