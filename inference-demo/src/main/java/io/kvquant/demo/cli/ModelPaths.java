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

    /** The hex SHA-256 of a file (model files are stamped into every result with it). */
    public static String sha256(Path file) throws java.io.IOException {
        try (java.io.InputStream in = Files.newInputStream(file)) {
            java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
            return java.util.HexFormat.of().formatHex(md.digest());
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
