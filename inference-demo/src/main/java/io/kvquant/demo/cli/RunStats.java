package io.kvquant.demo.cli;

import io.kvquant.demo.onnx.Json;
import io.kvquant.simd.Simd;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** Figures of one generation plus run metadata, printed on stderr and written as JSON. */
public final class RunStats {
    public final Map<String, Object> fields = new LinkedHashMap<>();

    /** Peak resident set size of this process (VmHWM), -1 where /proc is unavailable. */
    public static long peakRssBytes() {
        return procStatusKb("VmHWM:");
    }

    /** Current resident set size (VmRSS), -1 where /proc is unavailable. */
    public static long rssBytes() {
        return procStatusKb("VmRSS:");
    }

    private static long procStatusKb(String key) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(key)) {
                    String[] parts = line.substring(key.length()).trim().split("\\s+");
                    return Long.parseLong(parts[0]) * 1024L;
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    public static Map<String, Object> metadata(int threads) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("git_commit", gitCommit());
        m.put("jvm", System.getProperty("java.vm.name") + " " + Runtime.version());
        m.put("os_arch", System.getProperty("os.arch"));
        m.put("cpus", Runtime.getRuntime().availableProcessors());
        m.put("simd", Simd.describe());
        m.put("simd_bits", Simd.vectorBitSize());
        m.put("threads", threads);
        m.put("jvm_gc", gcNames());
        m.put("jvm_max_heap_bytes", Runtime.getRuntime().maxMemory());
        // the kvq launcher sets glibc's mmap threshold (peak RSS; docs/engine.md); null when unset
        m.put("malloc_mmap_threshold", System.getenv("MALLOC_MMAP_THRESHOLD_"));
        m.put("timestamp", Instant.now().toString());
        return m;
    }

    /** The commit of the checkout kvq runs from ("-dirty" if tracked files changed), "unknown" outside git. */
    /** The JVM's collectors, e.g. "Copy+MarkSweepCompact" (serial) or "G1 Young Generation+G1 Concurrent GC+G1 Old Generation". */
    static String gcNames() {
        StringBuilder b = new StringBuilder();
        for (var gc : java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()) {
            b.append(b.isEmpty() ? "" : "+").append(gc.getName());
        }
        return b.toString();
    }

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

    public String toJson() {
        return toJson(fields, "") + "\n";
    }

    private static String toJson(Object v, String indent) {
        if (v instanceof Map<?, ?> m) {
            StringBuilder b = new StringBuilder("{\n");
            int i = 0;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                b.append(indent).append("  ").append(Json.quote(String.valueOf(e.getKey()))).append(": ")
                        .append(toJson(e.getValue(), indent + "  ")).append(++i < m.size() ? ",\n" : "\n");
            }
            return b.append(indent).append('}').toString();
        }
        if (v instanceof Double d) {
            return d.isNaN() || d.isInfinite() ? "null" : String.format(java.util.Locale.ROOT, "%.3f", d);
        }
        if (v instanceof Number || v instanceof Boolean) {
            return String.valueOf(v);
        }
        return v == null ? "null" : Json.quote(String.valueOf(v));
    }

    /** Writes the JSON to a temp file beside {@code file} and moves it into place. */
    public void writeAtomically(Path file) throws IOException {
        Path dir = file.toAbsolutePath().getParent();
        if (dir == null || !Files.isDirectory(dir)) {
            throw new IllegalArgumentException("--stats-json: folder does not exist: " + dir);
        }
        Path tmp = Files.createTempFile(dir, "." + file.getFileName(), ".tmp");
        try {
            Files.writeString(tmp, toJson());
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
