package io.kvquant.persist;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The key that authenticates blocks with HMAC-SHA256. It comes from the environment variable
 * {@code KVQ_CACHE_KEY} or from a key file, never from a command line. The key itself never
 * appears in messages.
 */
public final class BlockAuth {

    /** The environment variable holding the key. */
    public static final String ENV = "KVQ_CACHE_KEY";
    public static final int TAG_BYTES = 32;
    private static final int MIN_KEY_BYTES = 16;
    private final SecretKeySpec key;
    private final String source;

    private BlockAuth(byte[] key, String source) {
        if (key.length < MIN_KEY_BYTES) {
            throw new IllegalArgumentException("the cache key from " + source + " is " + key.length + " bytes; use at least "
                    + MIN_KEY_BYTES + " random bytes (e.g. openssl rand -hex 32)");
        }
        this.key = new SecretKeySpec(key, "HmacSHA256");
        this.source = source;
    }

    /** A key given as bytes (tests, embedding applications). */
    public static BlockAuth of(byte[] key) {
        return new BlockAuth(key.clone(), "the caller");
    }

    /**
     * The key from {@code keyFile} if given, else from {@value #ENV}; null when neither is set
     * (blocks are then written untagged, and the store is for one user's own machine).
     */
    public static BlockAuth fromEnvironment(Path keyFile) throws IOException {
        if (keyFile != null) {
            if (!Files.isRegularFile(keyFile)) {
                throw new IllegalArgumentException("cache key file not found: " + keyFile);
            }
            String s = Files.readString(keyFile, StandardCharsets.UTF_8).strip();
            return new BlockAuth(s.getBytes(StandardCharsets.UTF_8), "key file " + keyFile);
        }
        String env = System.getenv(ENV);
        if (env == null || env.isEmpty()) {
            return null;
        }
        return new BlockAuth(env.strip().getBytes(StandardCharsets.UTF_8), "$" + ENV);
    }

    /** Where the key came from (never the key). */
    public String source() {
        return source;
    }

    byte[] tag(byte[] data, int off, int len) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(key);
            mac.update(data, off, len);
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available in this JDK", e);
        }
    }

    boolean verify(byte[] data, int off, int len, byte[] tag, int tagOff) {
        byte[] t = tag(data, off, len);
        byte[] given = java.util.Arrays.copyOfRange(tag, tagOff, tagOff + TAG_BYTES);
        return MessageDigest.isEqual(t, given);
    }

    @Override
    public String toString() {
        return "BlockAuth[" + source + "]";
    }
}
