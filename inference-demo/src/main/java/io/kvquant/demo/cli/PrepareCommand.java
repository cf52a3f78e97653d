package io.kvquant.demo.cli;

import io.kvquant.demo.onnx.JavaAttentionModel;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kvq prepare}: one-off model preparation for the execution modes that need it. */
@Command(name = "prepare", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Prepare an exported decoder for an execution mode: java-attention cuts the graph at each "
                + "layer's attention (ONNX Runtime runs the dense parts, kvquant the attention on the compressed cache)."},
        footer = {"", "Example: ./kvq prepare --model models/kvq-llama && ./kvq generate --mode java-attention --prompt-file "
                + "models/prompts/long.txt"})
public final class PrepareCommand implements Callable<Integer> {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "DIR", description = "Model directory (default: the bundled "
            + ModelPaths.BUNDLED + ").")
    Path model;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "java-attention",
            description = "What to prepare: java-attention (the graph cut at each attention) or graph (the graph "
                    + "rewritten to take TurboQuant codes as its past, for --kv) (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--kv", paramLabel = "SPEC", defaultValue = "turbo3.5",
            description = "With --mode graph: the cache setting whose codebooks and rotations are built into the graph "
                    + "(default: ${DEFAULT-VALUE}).")
    String kv;

    @Override
    public Integer call() throws IOException {
        String md = mode.trim().toLowerCase(Locale.ROOT);
        if (!md.equals("java-attention") && !md.equals("graph")) {
            throw new IllegalArgumentException("--mode " + mode + " has nothing to prepare (known: java-attention, graph)");
        }
        io.kvquant.cache.KvQuantConfig kvCfg = io.kvquant.cache.KvQuantConfig.parse(kv);
        Path dir = model != null ? model : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        if (!Files.isWritable(dir)) {
            throw new IllegalArgumentException("cannot write into " + dir);
        }
        PrintWriter err = spec.commandLine().getErr();
        long t0 = System.nanoTime();
        if (md.equals("graph")) {
            Path out = io.kvquant.demo.onnx.GraphModel.prepare(dir, kvCfg);
            spec.commandLine().getOut().println(out);
            err.printf(Locale.ROOT, "rewrote %s to take %s codes as its past in %.1f s%n", dir.resolve("model.onnx"), kvCfg,
                    (System.nanoTime() - t0) / 1e9);
            return 0;
        }
        Path out = JavaAttentionModel.prepare(dir);
        long pieces;
        try (var s = Files.list(out)) {
            pieces = s.filter(p -> p.getFileName().toString().endsWith(".onnx")).count();
        }
        spec.commandLine().getOut().println(out);
        err.printf(Locale.ROOT, "cut %s at its attention into %d pieces in %.1f s%n", dir.resolve("model.onnx"), pieces,
                (System.nanoTime() - t0) / 1e9);
        return 0;
    }
}
