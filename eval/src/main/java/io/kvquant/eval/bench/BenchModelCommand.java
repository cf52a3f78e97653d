package io.kvquant.eval.bench;

import io.kvquant.demo.bench.BenchModelWriter;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.onnx.ModelConfig;
import io.kvquant.eval.Progress;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq bench model}: writes the KV-heavy benchmark model (Llama layout, random weights,
 * written in Java) into a folder, with the bundled tokenizer, so that {@code kvq generate},
 * {@code kvq prepare} and {@code kvq bench generate} can run it.
 */
@Command(name = "model", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Write the KV-heavy benchmark model: a Llama-architecture ONNX decoder with random weights "
                + "(8 layers, 8 KV heads x 128 dims: 64 KiB of fp32 KV cache per token), with the bundled tokenizer.",
                "Memory and speed do not depend on the weights; its generated text is meaningless."},
        footer = {"", "Example: ./kvq bench model --out /tmp/kvq-bench-model"})
public final class BenchModelCommand implements Callable<Integer> {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--out", paramLabel = "DIR", description = "Folder to write model.onnx, config.json and tokenizer.json "
            + "into (default: " + "~/.cache/kvquant/bench-models/<geometry>).")
    Path out;

    @Option(names = "--layers", defaultValue = "8", description = "Decoder layers (default: ${DEFAULT-VALUE}).")
    int layers;

    @Option(names = "--q-heads", defaultValue = "8",
            description = "Query heads: 8 (one per KV head) or 32 (grouped-query attention) (default: ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--attention", paramLabel = "FORM", defaultValue = "plain",
            description = "plain (MatMul/Softmax, the optimum layout) or gqa (com.microsoft GroupQueryAttention with rotary "
                    + "inside, as onnxruntime-genai's builder emits; needed by --kv ort-int8/ort-int4); same weights "
                    + "(default: ${DEFAULT-VALUE}).")
    String attention;

    @Option(names = "--force", description = "Rewrite even when a current model is already there.")
    boolean force;

    @Override
    public Integer call() throws IOException {
        BenchModelWriter.Attention form = BenchModelWriter.Attention.parse(attention);
        BenchModelWriter.Geometry g = geometry(layers, qHeads);
        Path dir = out != null ? out : defaultDir(g, form);
        PrintWriter err = spec.commandLine().getErr();
        if (!force && BenchModelWriter.isCurrent(dir, g, form)) {
            err.println("bench model already written: " + dir + " (" + describe(g) + ", " + form.cli + " attention); "
                    + "--force rewrites it");
        } else {
            write(dir, g, form, err);
        }
        spec.commandLine().getOut().println(dir);
        return 0;
    }

    /** The benchmark geometry with the bundled tokenizer's vocabulary. */
    static BenchModelWriter.Geometry geometry(int layers, int qHeads) throws IOException {
        BenchModelWriter.Geometry g = BenchModelWriter.Geometry.benchDefault(bundledVocab()).withQHeads(qHeads).withLayers(layers);
        g.validate();
        return g;
    }

    /** {@code ~/.cache/kvquant/bench-models/<geometry tag>}. */
    static Path defaultDir(BenchModelWriter.Geometry g) {
        return defaultDir(g, BenchModelWriter.Attention.PLAIN);
    }

    /** The GQA form beside the plain one: {@code <geometry tag>-gqa}. */
    static Path defaultDir(BenchModelWriter.Geometry g, BenchModelWriter.Attention form) {
        return Path.of(System.getProperty("user.home"), ".cache", "kvquant", "bench-models",
                g.tag() + (form == BenchModelWriter.Attention.PLAIN ? "" : "-" + form.cli));
    }

    static String describe(BenchModelWriter.Geometry g) {
        return String.format(Locale.ROOT, "%d layers, %d query / %d KV heads x %d, hidden %d, MLP %d, vocab %d, %d positions; "
                        + "%d KiB KV per token in fp32; %.0f MB of weights", g.layers(), g.qHeads(), g.kvHeads(), g.headDim(),
                g.hidden(), g.intermediate(), g.vocab(), g.maxPositions(), g.kvBytesPerToken() / 1024, g.parameters() * 4 / 1e6);
    }

    /** Writes the model with a progress line; one-line error when the folder is not writable. */
    static void write(Path dir, BenchModelWriter.Geometry g, PrintWriter err) throws IOException {
        write(dir, g, BenchModelWriter.Attention.PLAIN, err);
    }

    static void write(Path dir, BenchModelWriter.Geometry g, BenchModelWriter.Attention form, PrintWriter err)
            throws IOException {
        err.println("writing the benchmark model (" + describe(g) + ", " + form.cli + " attention) to " + dir + " ...");
        err.flush();
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot create " + dir + " (" + e.getClass().getSimpleName() + "); "
                    + "give a writable folder with --model (bench generate) or --out (bench model)");
        }
        if (!Files.isWritable(dir)) {
            throw new IllegalArgumentException(dir + " is not writable; give another folder");
        }
        Path bundled = ModelPaths.bundledModel();
        int eos = ModelConfig.read(bundled.resolve("config.json")).eosTokenId();
        long total = g.parameters() * 4;
        Progress bar = new Progress(err, "bench model", total);
        long t0 = System.nanoTime();
        BenchModelWriter.write(dir, g, form, bundled.resolve("tokenizer.json"), Math.max(eos, 0),
                done -> bar.update(done, null));
        bar.done();
        err.printf(Locale.ROOT, "bench model written in %.1f s: %s (%d MB)%n", (System.nanoTime() - t0) / 1e9,
                dir.resolve("model.onnx"), Files.size(dir.resolve("model.onnx")) / 1_000_000);
        err.flush();
    }

    private static int bundledVocab() throws IOException {
        Path bundled = ModelPaths.bundledModel();
        Path cfg = bundled.resolve("config.json");
        if (!Files.isRegularFile(cfg) || !Files.isRegularFile(bundled.resolve("tokenizer.json"))) {
            throw new IllegalArgumentException("the bundled model " + bundled + " (its tokenizer.json and config.json) is needed "
                    + "to write the benchmark model; run from the kvquant checkout");
        }
        Object o = io.kvquant.demo.onnx.Json.parse(Files.readString(cfg));
        if (o instanceof java.util.Map<?, ?> m && m.get("vocab_size") instanceof Number n) {
            return n.intValue();
        }
        throw new IllegalArgumentException(cfg + " has no vocab_size");
    }
}
