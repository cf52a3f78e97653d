package io.kvquant.demo.onnx;

import io.kvquant.attention.Workers;
import io.kvquant.demo.graph.DenseOps;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntConsumer;

/**
 * One helper thread for a Java decode step ({@link JavaPieces}) on a 2-thread engine. A large
 * matrix product is cut into column chunks ({@link #split}): the owner (the thread that
 * {@link #acquire}d the helper) starts on the first half of them, the helper on the second half,
 * so each core keeps streaming the same columns of the weights from its own cache (14 MB of fp32
 * weights stream at 8–12 GB/s through one core of this machine and at 28–60 GB/s split over two,
 * docs/engine.md). The helper also takes a share of the attention's split-K tasks
 * ({@link #tryForEach}, lent to {@link io.kvquant.attention.DecodeAttention} through
 * {@link Workers}). Work is claimed chunk by chunk, never handed over: whoever runs out takes
 * what is left of the other's half from its far end, so a helper that is still waking up, or that
 * the OS has preempted, holds up at most the one chunk it is running. The helper busy-waits
 * between products only while the owner's step runs, and parks between steps. Any other thread,
 * or a step that finds the helper taken by another decoder, runs everything itself.
 */
final class PairRunner implements DenseOps.Parallel, Workers, AutoCloseable {

    /** One posted piece of work: tasks [0, n), the owner's range and the helper's, each [next, end) packed in a long. */
    private static final class Job {
        final IntConsumer task;
        final int n;
        final AtomicLong[] range = new AtomicLong[2];
        final AtomicInteger finished = new AtomicInteger();
        volatile Throwable failure;

        Job(IntConsumer task, int n, int split) {
            this.task = task;
            this.n = n;
            range[0] = new AtomicLong(pack(0, split));
            range[1] = new AtomicLong(pack(split, n));
        }

        /** Runs tasks for side {@code side} (0 owner, 1 helper): its own range from the front, then the other's from the back. */
        void work(int side) {
            for (int i = take(range[side], true); i >= 0; i = take(range[side], true)) {
                run(i);
            }
            for (int i = take(range[1 - side], false); i >= 0; i = take(range[1 - side], false)) {
                run(i);
            }
        }

        private void run(int i) {
            try {
                task.accept(i);
            } catch (Throwable t) {
                failure = t;
            } finally {
                finished.incrementAndGet();
            }
        }

        private static long pack(int next, int end) {
            return (long) next << 32 | (end & 0xffffffffL);
        }

        /** Claims the first or the last task left in {@code r}, or returns -1 when none is. */
        private static int take(AtomicLong r, boolean first) {
            while (true) {
                long v = r.get();
                int next = (int) (v >>> 32);
                int end = (int) v;
                if (next >= end) {
                    return -1;
                }
                if (r.compareAndSet(v, first ? pack(next + 1, end) : pack(next, end - 1))) {
                    return first ? next : end - 1;
                }
            }
        }
    }

    private final Thread helper;
    private volatile Thread owner;
    private volatile boolean spin;
    private volatile boolean closed;
    private volatile Job current;
    private final AtomicBoolean taken = new AtomicBoolean();

    PairRunner() {
        helper = new Thread(this::loop, "kvq-dense-helper");
        helper.setDaemon(true);
        helper.start();
    }

    /** Takes the helper for the calling thread's step; false when another thread has it. */
    boolean acquire() {
        if (closed || !taken.compareAndSet(false, true)) {
            return false;
        }
        owner = Thread.currentThread();
        spin = true;
        LockSupport.unpark(helper);
        return true;
    }

    void release() {
        spin = false;
        owner = null;
        taken.set(false);
    }

    @Override
    public void split(int n, IntConsumer task) {
        if (Thread.currentThread() != owner || n < 2) {
            for (int i = 0; i < n; i++) {
                task.accept(i);
            }
            return;
        }
        run(new Job(task, n, (n + 1) / 2));
    }

    @Override
    public boolean tryForEach(int n, IntConsumer task) {
        if (Thread.currentThread() != owner) {
            return false;
        }
        run(new Job(task, n, n)); // one shared range: the helper takes from its back
        return true;
    }

    private void run(Job j) {
        current = j;
        LockSupport.unpark(helper);
        j.work(0);
        long t0 = 0;
        while (j.finished.get() < j.n) {
            // the helper is finishing its last chunk; if that takes long it has lost its core
            // (a JIT compiler thread, another process): yield ours rather than spin against it
            if (t0 == 0) {
                t0 = System.nanoTime();
            } else if (System.nanoTime() - t0 > YIELD_AFTER_NANOS) {
                Thread.yield();
                continue;
            }
            Thread.onSpinWait();
        }
        current = null;
        Throwable f = j.failure;
        if (f != null) {
            if (f instanceof RuntimeException re) {
                throw re;
            }
            if (f instanceof Error e) {
                throw e;
            }
            throw new IllegalStateException(f);
        }
    }

    private void loop() {
        Job last = null;
        long idleSince = 0;
        while (!closed) {
            Job j = current;
            if (j != null && j != last) {
                last = j;
                j.work(1);
                idleSince = 0;
            } else if (spin) {
                // between products: spin a while, then offer the core to whatever else is runnable
                // (yield returns at once when nothing is), so a third thread does not preempt the owner
                if (idleSince == 0) {
                    idleSince = System.nanoTime();
                } else if (System.nanoTime() - idleSince > YIELD_AFTER_NANOS) {
                    Thread.yield();
                    continue;
                }
                Thread.onSpinWait();
            } else {
                LockSupport.park(this);
                idleSince = 0;
            }
        }
    }

    /** How long a wait spins before it yields the core at each turn. */
    static final long YIELD_AFTER_NANOS = 20_000;

    @Override
    public void close() {
        closed = true;
        LockSupport.unpark(helper);
    }
}
