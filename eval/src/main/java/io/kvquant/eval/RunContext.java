package io.kvquant.eval;

import io.kvquant.demo.cli.RunStats;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/** The context every result carries: git commit, JVM, SIMD backend, threads, time, configuration. */
public final class RunContext {

    private RunContext() {
    }

    /** Run metadata (shared with kvq generate's stats) plus the exact configuration. */
    public static Map<String, Object> capture(int threads, Map<String, Object> config) {
        Map<String, Object> m = new LinkedHashMap<>(RunStats.metadata(threads));
        m.put("config", config);
        return m;
    }

    /** Writes text to a file atomically (temp file then move), creating parent folders. */
    public static void writeAtomically(Path file, String text) throws IOException {
        Path dir = file.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, "." + file.getFileName(), ".tmp");
        try {
            Files.writeString(tmp, text);
            Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
