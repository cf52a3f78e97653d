package io.kvquant.eval;

import io.kvquant.simd.Simd;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** The context every result carries: git commit, JVM, SIMD backend, threads, time. */
public final class RunContext {

    private RunContext() {
    }

    public static Map<String, Object> capture(int threads, Map<String, Object> config) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("git_commit", gitCommit());
        m.put("jvm", System.getProperty("java.vm.name") + " " + Runtime.version());
        m.put("os_arch", System.getProperty("os.arch"));
        m.put("cpus", Runtime.getRuntime().availableProcessors());
        m.put("simd", Simd.describe());
        m.put("simd_bits", Simd.vectorBitSize());
        m.put("threads", threads);
        m.put("timestamp", Instant.now().toString());
        m.put("config", config);
        return m;
    }

    /** The commit of the checkout kvq runs from, "unknown" outside a git work tree. */
    public static String gitCommit() {
        String home = System.getProperty("kvq.home", ".");
        try {
            Process p = new ProcessBuilder("git", "-C", home, "rev-parse", "HEAD").redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes()).trim();
            if (p.waitFor(5, TimeUnit.SECONDS) && p.exitValue() == 0 && out.matches("[0-9a-f]{40}")) {
                Process d = new ProcessBuilder("git", "-C", home, "status", "--porcelain", "--untracked-files=no")
                        .redirectErrorStream(true).start();
                String dirty = new String(d.getInputStream().readAllBytes()).trim();
                d.waitFor(5, TimeUnit.SECONDS);
                return dirty.isEmpty() ? out : out + "-dirty";
            }
        } catch (IOException e) {
            return "unknown";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return "unknown";
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
