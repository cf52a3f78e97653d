package io.kvquant.demo.cli;

import java.nio.file.Files;
import java.nio.file.Path;

/** Finds the bundled model: {@code $kvq.home/models/kvq-llama}, else walking up from the working dir. */
public final class ModelPaths {
    public static final String BUNDLED = "models/kvq-llama";

    private ModelPaths() {
    }

    public static Path bundledModel() {
        String home = System.getProperty("kvq.home");
        if (home != null && Files.isDirectory(Path.of(home, BUNDLED))) {
            return Path.of(home, BUNDLED);
        }
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve(BUNDLED))) {
                return p.resolve(BUNDLED);
            }
        }
        return Path.of(home != null ? home : ".", BUNDLED);
    }

    /** Checks that a model directory has model.onnx and tokenizer.json; one-line errors. */
    public static void check(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new IllegalArgumentException("model directory not found: " + dir);
        }
        if (!Files.isRegularFile(dir.resolve("model.onnx"))) {
            throw new IllegalArgumentException("no model.onnx in " + dir);
        }
        if (!Files.isRegularFile(dir.resolve("tokenizer.json"))) {
            throw new IllegalArgumentException("no tokenizer.json in " + dir + " (a Hugging Face tokenizer file is needed)");
        }
    }
}
