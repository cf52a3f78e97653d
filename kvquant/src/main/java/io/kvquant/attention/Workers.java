package io.kvquant.attention;

import java.util.function.IntConsumer;

/**
 * Threads a caller lends {@link DecodeAttention} for one step's parallel work instead of its own
 * pool: an engine that already keeps a helper thread busy-waiting through a decode step (the Java
 * decode step's matrix products, in the demo's engine) runs the attention's split-K tasks on it
 * too, rather than waking a second pool's thread on a 2-core machine.
 */
public interface Workers {

    /**
     * Runs {@code task.accept(i)} for every {@code i < count}, on the calling thread and on
     * helpers, and returns when all are done; or returns false at once, having run nothing, when
     * these workers do not serve the calling thread (the attention then uses its own pool).
     */
    boolean tryForEach(int count, IntConsumer task);
}
