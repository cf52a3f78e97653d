package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

/** Locates the bundled model for tests; its absence is a failure, not a skip (it is committed). */
final class BundledModel {
    private BundledModel() {
    }

    static Path dir() {
        Path d = ModelDir.bundled();
        assertTrue(Files.isRegularFile(d.resolve("model.onnx")), "the bundled model must be at " + d.toAbsolutePath()
                + " (models/kvq-llama is part of the repository)");
        return d;
    }
}
