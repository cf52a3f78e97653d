package io.kvquant.persist;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Blocks as files {@code <key>.kvqb} in one directory. Writes go to a temporary file renamed
 * into place, so readers and concurrent writers only ever see whole blocks. A read touches the
 * file's modification time, and after each write the oldest-touched blocks are deleted while the
 * directory holds more than the size cap (least recently used eviction).
 */
public final class DirectoryBlockStore implements BlockStore {

    private static final String SUFFIX = ".kvqb";
    private final Path dir;
    private final long capBytes;

    /** A store in {@code dir} (created if missing) holding at most {@code capBytes} of blocks (0: no cap). */
    public DirectoryBlockStore(Path dir, long capBytes) throws IOException {
        if (capBytes < 0) {
            throw new IllegalArgumentException("cache store size cap must be >= 0, got " + capBytes);
        }
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new IllegalArgumentException("cache store " + dir + " exists and is not a directory");
        }
        Files.createDirectories(dir);
        this.dir = dir;
        this.capBytes = capBytes;
    }

    private Path file(String key) {
        if (!key.matches("[0-9a-f]{16,128}")) {
            throw new IllegalArgumentException("block keys are hex digests, got '" + key + "'");
        }
        return dir.resolve(key + SUFFIX);
    }

    @Override
    public byte[] get(String key) throws IOException {
        Path f = file(key);
        try {
            byte[] b = Files.readAllBytes(f);
            try {
                Files.setLastModifiedTime(f, FileTime.fromMillis(System.currentTimeMillis()));
            } catch (IOException e) {
                // evicted meanwhile: the bytes read are still whole
            }
            return b;
        } catch (NoSuchFileException e) {
            return null;
        }
    }

    @Override
    public void put(String key, byte[] block) throws IOException {
        Path f = file(key);
        Path tmp = Files.createTempFile(dir, "." + key + ".", ".tmp");
        try {
            Files.write(tmp, block);
            try {
                Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, f, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
        if (capBytes > 0) {
            evict();
        }
    }

    @Override
    public boolean contains(String key) {
        return Files.isRegularFile(file(key));
    }

    /** Deletes least recently used blocks until the directory holds at most the cap. */
    synchronized void evict() throws IOException {
        record Entry(Path p, long size, long time) {
        }
        List<Entry> all = new ArrayList<>();
        long total = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*" + SUFFIX)) {
            for (Path p : ds) {
                try {
                    long s = Files.size(p);
                    all.add(new Entry(p, s, Files.getLastModifiedTime(p).toMillis()));
                    total += s;
                } catch (NoSuchFileException e) {
                    // removed by another process
                }
            }
        }
        if (total <= capBytes) {
            return;
        }
        all.sort(Comparator.comparingLong(Entry::time));
        for (Entry e : all) {
            if (total <= capBytes) {
                break;
            }
            Files.deleteIfExists(e.p());
            total -= e.size();
        }
    }

    /** Bytes of blocks held now. */
    public long bytesHeld() throws IOException {
        long total = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*" + SUFFIX)) {
            for (Path p : ds) {
                try {
                    total += Files.size(p);
                } catch (NoSuchFileException e) {
                    // removed meanwhile
                }
            }
        }
        return total;
    }

    @Override
    public String describe() {
        return dir.toString() + (capBytes > 0 ? " (cap " + capBytes / (1024 * 1024) + " MiB)" : "");
    }

    @Override
    public void close() {
    }
}
