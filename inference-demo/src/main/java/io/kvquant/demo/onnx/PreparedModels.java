package io.kvquant.demo.onnx;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

/**
 * Where the engine's preparations (the graph cut at each attention) live: outside the model
 * directory, which may be read-only, in
 * {@code ${KVQ_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/kvquant}/prepared/<sha256 of model.onnx>/}
 * (the system property {@code kvq.cache.dir} overrides the environment). A preparation is made
 * on first use into a temporary folder beside its final place and renamed into place, so a
 * reader never sees half of one and two processes preparing the same model at once both end up
 * using one complete copy.
 *
 * <p>Hashing a model of several GiB on every start would cost seconds, so
 * {@code index/<sha256 of the absolute path>.properties} remembers each model file's sha256
 * with its size, modification time, status-change time (ctime, which no tool can set back) and
 * inode; the hash is reused only while all four are unchanged, and recomputed otherwise.
 */
public final class PreparedModels {

    /** The environment variable that moves the cache. */
    public static final String ENV = "KVQ_CACHE_DIR";
    /** The system property that moves the cache (wins over the environment; tests use it). */
    public static final String PROPERTY = "kvq.cache.dir";

    /** How many times a model file was hashed in this JVM (tests check that the index spares it). */
    static final AtomicInteger HASHED = new AtomicInteger();

    private PreparedModels() {
    }

    /** The cache's root folder. */
    public static Path root() {
        String p = System.getProperty(PROPERTY);
        if (p != null && !p.isBlank()) {
            return Path.of(p);
        }
        String e = System.getenv(ENV);
        if (e != null && !e.isBlank()) {
            return Path.of(e);
        }
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) {
            return Path.of(xdg, "kvquant");
        }
        return Path.of(System.getProperty("user.home"), ".cache", "kvquant");
    }

    /** Something that writes a preparation into an empty folder. */
    @FunctionalInterface
    public interface Writer {
        /** Writes into {@code into}; calls {@code started} once the input is known to be good and the slow part begins. */
        void write(Path into, String sha256, Runnable started) throws IOException;
    }

    /** A usable preparation: its folder and whether this call made it. */
    public record Prepared(Path dir, String sha256, boolean made) {
    }

    /**
     * The prepared folder for {@code model} under {@code root}: reused when {@code valid} accepts
     * it, otherwise made with {@code writer} (a progress line goes to {@code progress}).
     */
    static Prepared get(Path root, Path model, java.util.function.Predicate<Path> valid, Writer writer,
                        Consumer<String> progress) throws IOException {
        Path abs = model.toAbsolutePath().normalize();
        String before = stamp(abs);
        String sha = sha256(root, model, progress);
        Path dir = root.resolve("prepared").resolve(sha);
        if (valid.test(dir)) {
            return new Prepared(dir, sha, false);
        }
        Path parent = dir.getParent();
        Path tmp;
        try {
            Files.createDirectories(parent);
            tmp = Files.createTempDirectory(parent, ".tmp-" + sha.substring(0, 12) + "-");
        } catch (IOException | UnsupportedOperationException e) {
            throw unwritable(root, e);
        }
        long t0 = System.nanoTime();
        try {
            writer.write(tmp, sha, () -> progress.accept("kvq: preparing " + model + " for the engine (one-off: cutting "
                    + "the graph at each attention) into " + dir + " ..."));
            if (valid.test(dir)) {
                // another process finished the same preparation meanwhile: use theirs
                return new Prepared(dir, sha, true);
            }
            if (Files.exists(dir)) {
                // a broken or older preparation: move it aside first (a rename, so readers never see a mix)
                Path old = Files.createTempDirectory(parent, ".old-" + sha.substring(0, 12) + "-");
                Files.delete(old);
                try {
                    Files.move(dir, old, StandardCopyOption.ATOMIC_MOVE);
                    deleteTree(old);
                } catch (java.nio.file.NoSuchFileException gone) {
                    // another process moved it already
                }
            }
            try {
                Files.move(tmp, dir, StandardCopyOption.ATOMIC_MOVE);
            } catch (FileSystemException raced) {
                if (raced instanceof AtomicMoveNotSupportedException || !valid.test(dir)) {
                    throw raced;
                }
                // another process finished the same preparation first: use theirs
            }
        } catch (IOException e) {
            if (e instanceof java.nio.file.AccessDeniedException) {
                throw unwritable(root, e);
            }
            throw e;
        } finally {
            if (Files.exists(tmp)) {
                deleteTree(tmp);
            }
        }
        if (!valid.test(dir)) {
            throw new IllegalStateException("the preparation written to " + dir + " does not read back; remove " + dir
                    + " and try again");
        }
        // the pieces may hard-link the model file (weights referenced where they lie), which
        // changes its status-change time only: remember the new stamp so the next start does
        // not hash the model again (size, mtime and inode must be as before)
        String after = stamp(abs);
        if (!after.equals(before) && withoutCtime(after).equals(withoutCtime(before))) {
            remember(root, abs, after, sha);
        }
        progress.accept(String.format(Locale.ROOT, "kvq: prepared in %.1f s (reused from now on): %s",
                (System.nanoTime() - t0) / 1e9, dir));
        return new Prepared(dir, sha, true);
    }

    private static IllegalArgumentException unwritable(Path root, Exception e) {
        return new IllegalArgumentException("cannot write the engine's prepared-model cache in " + root + " ("
                + e.getClass().getSimpleName().replace("Exception", "").replaceAll("([a-z])([A-Z])", "$1 $2")
                .toLowerCase(Locale.ROOT).trim() + "); set " + ENV + " to a writable folder");
    }

    /**
     * The sha256 of {@code file}, from the index when its size, times and inode are unchanged,
     * else computed and remembered (the index is only a speed-up: failing to write it is ignored).
     */
    static String sha256(Path root, Path file, Consumer<String> progress) throws IOException {
        Path abs = file.toAbsolutePath().normalize();
        String stamp = stamp(abs);
        Path entry = indexEntry(root, abs);
        if (Files.isRegularFile(entry)) {
            Properties p = new Properties();
            try (var in = Files.newInputStream(entry)) {
                p.load(in);
                String sha = p.getProperty("sha256", "");
                if (abs.toString().equals(p.getProperty("path")) && stamp.equals(p.getProperty("stamp"))
                        && sha.matches("[0-9a-f]{64}")) {
                    return sha;
                }
            } catch (IOException | IllegalArgumentException e) {
                // unreadable entry: hash again and rewrite it
            }
        }
        if (Files.size(abs) > (256L << 20)) {
            progress.accept(String.format(Locale.ROOT, "kvq: hashing %s (%.0f MiB) to find its preparation ...", abs,
                    Files.size(abs) / 1048576.0));
        }
        String sha = hashFile(abs);
        // the file changed while it was hashed: do not remember a hash of a moving target
        if (stamp.equals(stamp(abs))) {
            remember(root, abs, stamp, sha);
        }
        return sha;
    }

    /** Writes the index entry of {@code abs} (the index is only a speed-up: failing to write it is ignored). */
    private static void remember(Path root, Path abs, String stamp, String sha) {
        Path entry = indexEntry(root, abs);
        try {
            Files.createDirectories(entry.getParent());
            Path tmp = Files.createTempFile(entry.getParent(), ".entry-", ".tmp");
            Properties p = new Properties();
            p.setProperty("path", abs.toString());
            p.setProperty("stamp", stamp);
            p.setProperty("sha256", sha);
            try (var out = Files.newOutputStream(tmp)) {
                p.store(out, "kvquant: model file -> sha256, valid while the stamp (size, mtime, ctime, inode) holds");
            }
            Files.move(tmp, entry, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException | UnsupportedOperationException e) {
            // read-only cache: hash again next time
        }
    }

    private static Path indexEntry(Path root, Path abs) {
        return root.resolve("index").resolve(hex(digest(abs.toString().getBytes(StandardCharsets.UTF_8))) + ".properties");
    }

    /** A stamp with its status-change time left out. */
    private static String withoutCtime(String stamp) {
        String[] f = stamp.split("/", 4);
        return f[0] + "/" + f[1] + "/" + f[3];
    }

    /** Size, modification time, status-change time and inode: what changes when the file's bytes do. */
    static String stamp(Path file) throws IOException {
        BasicFileAttributes a = Files.readAttributes(file, BasicFileAttributes.class);
        String ctime;
        try {
            ctime = String.valueOf(((FileTime) Files.getAttribute(file, "unix:ctime")).to(java.util.concurrent.TimeUnit.NANOSECONDS));
        } catch (UnsupportedOperationException | IllegalArgumentException e) {
            ctime = "-";
        }
        return a.size() + "/" + a.lastModifiedTime().to(java.util.concurrent.TimeUnit.NANOSECONDS) + "/" + ctime + "/"
                + a.fileKey();
    }

    static String hashFile(Path file) throws IOException {
        HASHED.incrementAndGet();
        try (var in = Files.newInputStream(file)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
            return hex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static byte[] digest(byte[] b) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(b);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }

    static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (var s = Files.walk(dir)) {
            for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
