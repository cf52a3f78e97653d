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
        description = {"Prepare an exported decoder ahead of time. engine (the default mode of kvq generate and kvq "
                + "eval; it also prepares itself on first use) cuts the graph at each layer's attention and caches the "
                + "pieces in ${KVQ_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/kvquant}/prepared/<sha256 of model.onnx>/ "
                + "(the model directory is not written); graph rewrites the graph to dequantize codes itself, into the "
                + "model directory. Prints the folder written."},
        footer = {"", "Example: ./kvq prepare --model models/kvq-llama"})
public final class PrepareCommand implements Callable<Integer> {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "DIR", description = "Model directory (default: the bundled "
            + ModelPaths.BUNDLED + ").")
    Path model;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "engine",
            description = "What to prepare: engine (the graph cut at each attention; alias java-attention) or graph "
                    + "(the graph rewritten to take TurboQuant codes as its past, for --kv) (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--kv", paramLabel = "SPEC", defaultValue = "turbo3.5",
            description = "With --mode graph: the cache setting whose codebooks and rotations are built into the graph "
                    + "(default: ${DEFAULT-VALUE}).")
    String kv;

    @Override
    public Integer call() throws IOException {
        io.kvquant.demo.onnx.Decoder.Mode md = io.kvquant.demo.onnx.Decoder.Mode.parse(mode);
        if (md == io.kvquant.demo.onnx.Decoder.Mode.ROUNDTRIP) {
            throw new IllegalArgumentException("--mode " + mode + " has nothing to prepare (known: engine, graph)");
        }
        io.kvquant.cache.KvQuantConfig kvCfg = io.kvquant.cache.KvQuantConfig.parse(kv);
        Path dir = model != null ? model : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        PrintWriter err = spec.commandLine().getErr();
        long t0 = System.nanoTime();
        if (md == io.kvquant.demo.onnx.Decoder.Mode.GRAPH) {
            if (!Files.isWritable(dir)) {
                throw new IllegalArgumentException("cannot write into " + dir + " (graph mode writes its rewrite beside "
                        + "model.onnx)");
            }
            Path out = io.kvquant.demo.onnx.GraphModel.prepare(dir, kvCfg);
            spec.commandLine().getOut().println(out);
            err.printf(Locale.ROOT, "rewrote %s to take %s codes as its past in %.1f s%n", dir.resolve("model.onnx"), kvCfg,
                    (System.nanoTime() - t0) / 1e9);
            return 0;
        }
        io.kvquant.demo.onnx.PreparedModels.Prepared p = JavaAttentionModel.prepare(dir, line -> {
            err.println(line);
            err.flush();
        });
        Path out = p.dir();
        long pieces;
        try (var s = Files.list(out)) {
            pieces = s.filter(f -> f.getFileName().toString().endsWith(".onnx")).count();
        }
        spec.commandLine().getOut().println(out);
        err.printf(Locale.ROOT, "%s %s for the engine: %d pieces in %s (%.1f s)%n", p.made() ? "prepared" : "already prepared",
                dir.resolve("model.onnx"), pieces, out, (System.nanoTime() - t0) / 1e9);
        return 0;
    }
}
