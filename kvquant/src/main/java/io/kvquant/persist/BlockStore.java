package io.kvquant.persist;

import java.io.IOException;

/**
 * A content-addressed store of prefix blocks ({@link PrefixBlocks}): keys are hex SHA-256 of
 * everything that determines a block, so a key names one block content and concurrent writers of
 * the same key write the same bytes (last writer wins). Backends: a directory
 * ({@link DirectoryBlockStore}) and Redis (in inference-demo). Implementations never put
 * credentials in messages or {@link #describe()}.
 */
public interface BlockStore extends AutoCloseable {

    /** The block stored under {@code key}, or null when there is none. */
    byte[] get(String key) throws IOException;

    /** Stores {@code block} under {@code key} (replacing any block of that key). */
    void put(String key, byte[] block) throws IOException;

    /** True if a block is stored under {@code key}. */
    boolean contains(String key) throws IOException;

    /** Where the store is, without credentials, for messages and stats. */
    String describe();

    @Override
    void close() throws IOException;
}
