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
            description = "What to prepare: java-attention (default: ${DEFAULT-VALUE}).")
    String mode;

    @Override
    public Integer call() throws IOException {
        if (!mode.trim().toLowerCase(Locale.ROOT).equals("java-attention")) {
            throw new IllegalArgumentException("--mode " + mode + " has nothing to prepare (known: java-attention)");
        }
        Path dir = model != null ? model : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        if (!Files.isWritable(dir)) {
            throw new IllegalArgumentException("cannot write into " + dir);
        }
        PrintWriter err = spec.commandLine().getErr();
        long t0 = System.nanoTime();
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
