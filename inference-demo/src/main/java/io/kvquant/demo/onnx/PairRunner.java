package io.kvquant.demo.onnx;

import io.kvquant.attention.Workers;
import io.kvquant.demo.graph.DenseOps;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntConsumer;

/**
 * One helper thread for a Java decode step ({@link JavaPieces}) on a 2-thread engine: it takes
 * part 1 of each large matrix product ({@link #both}; always the same column half, so each of the
 * two cores keeps streaming the same half of the weights from its own cache: 14 MB of fp32
 * weights stream at ~8 GB/s through one core of this machine and at ~50 GB/s split over two,
 * docs/engine.md) and a share of the attention's split-K tasks ({@link #tryForEach}, lent to
 * {@link io.kvquant.attention.DecodeAttention} through {@link Workers}). It busy-waits between
 * pieces of work only while the thread that {@link #acquire}d it runs a step, and parks between
 * steps. Work is claimed, never handed over: when the helper is late (still waking up), the
 * owner runs its part too rather than waiting for it. Any other thread, or a step that finds the
 * helper taken by another decoder, runs everything itself.
 */
final class PairRunner implements DenseOps.Parallel, Workers, AutoCloseable {
    private final Thread helper;
    private volatile Thread owner;
    private volatile boolean spin;
    private volatile boolean closed;
    private volatile IntConsumer job;
    /** Tasks of the posted job: -1 for a pair ({@link #both}), else the count shared through {@link #next}. */
    private volatile int count;
    private final AtomicInteger next = new AtomicInteger();
    private volatile long posted;
    private volatile long done;
    private volatile Throwable failure;
    private final java.util.concurrent.atomic.AtomicBoolean taken = new java.util.concurrent.atomic.AtomicBoolean();
    /**
     * The last job the helper's part of has been claimed for, by the helper or by the owner when
     * the helper is late; job n is claimed by moving this from n - 1 to n.
     */
    private final AtomicLong claimed = new AtomicLong();

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
    public void both(IntConsumer task) {
        if (Thread.currentThread() != owner) {
            task.accept(0);
            task.accept(1);
            return;
        }
        long seq = post(task, -1);
        task.accept(0);
        if (claimed.compareAndSet(seq - 1, seq)) {
            task.accept(1); // the helper has not come for it yet: no waiting
            return;
        }
        await(seq);
    }

    @Override
    public boolean tryForEach(int n, IntConsumer task) {
        if (Thread.currentThread() != owner) {
            return false;
        }
        next.set(0);
        long seq = post(task, n);
        for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
            task.accept(i);
        }
        if (!claimed.compareAndSet(seq - 1, seq)) {
            await(seq); // the helper joined: it is finishing its last task
        }
        return true;
    }

    private long post(IntConsumer task, int n) {
        job = task;
        count = n;
        long seq = posted + 1;
        posted = seq;
        LockSupport.unpark(helper);
        return seq;
    }

    private void await(long seq) {
        while (done != seq) {
            Thread.onSpinWait();
        }
        Throwable f = failure;
        if (f != null) {
            failure = null;
            if (f instanceof RuntimeException re) {
                throw re;
            }
            throw new IllegalStateException(f);
        }
    }

    private void loop() {
        long seen = 0;
        while (!closed) {
            long p = posted;
            if (p != seen) {
                seen = p;
                if (claimed.compareAndSet(p - 1, p)) { // else the owner took it, or p is stale
                    try {
                        IntConsumer j = job;
                        int n = count;
                        if (n < 0) {
                            j.accept(1);
                        } else {
                            for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
                                j.accept(i);
                            }
                        }
                    } catch (Throwable t) {
                        next.set(Integer.MAX_VALUE / 2); // the owner stops after its current task
                        failure = t;
                    }
                    done = p;
                }
            } else if (spin) {
                Thread.onSpinWait();
            } else {
                LockSupport.park(this);
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        LockSupport.unpark(helper);
    }
}
