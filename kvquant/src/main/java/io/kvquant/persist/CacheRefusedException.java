package io.kvquant.persist;

import java.io.IOException;

/**
 * A saved cache (file or block) that must not be used: truncated, corrupted, made for another
 * model or cache config, from a newer format, or failing its authentication tag. The message is
 * one line meant for the user; callers fall back to a fresh prefill.
 */
public final class CacheRefusedException extends IOException {

    public CacheRefusedException(String message) {
        super(message);
    }
}
