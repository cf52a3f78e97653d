package io.kvquant.demo.onnx;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;

/**
 * What the JVM itself says a piece of code allocates and holds, for the no-dense-past checks:
 * heap bytes allocated by every live thread (HotSpot's per-thread counters), the capacity of
 * direct buffers, and the heap still in use after full collections. None of it is reported by
 * the code under test, so a dense copy cannot hide from it by not counting itself.
 */
public final class MemoryMeter {
    private MemoryMeter() {
    }

    /** Heap bytes allocated so far by all live threads. */
    public static long allocated() {
        com.sun.management.ThreadMXBean t = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long[] ids = t.getAllThreadIds();
        long sum = 0;
        for (long b : t.getThreadAllocatedBytes(ids)) {
            sum += Math.max(0, b);
        }
        return sum;
    }

    /** Heap bytes allocated so far by the calling thread. */
    public static long allocatedByThisThread() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    /** Capacity of all direct byte buffers (where ONNX Runtime inputs live without a copy). */
    public static long direct() {
        for (BufferPoolMXBean b : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if (b.getName().equals("direct")) {
                return b.getTotalCapacity();
            }
        }
        throw new IllegalStateException("no direct buffer pool bean");
    }

    /** Heap in use after full collections: what is reachable. */
    public static long heapAfterGc() {
        long used = Long.MAX_VALUE;
        for (int i = 0; i < 4; i++) {
            System.gc();
            used = Math.min(used, ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
        }
        return used;
    }

    /** Bytes of a dense fp32 past (keys and values, every layer) of {@code tokens} tokens. */
    public static long densePast(int layers, int kvHeads, int headDim, int tokens) {
        return 2L * layers * kvHeads * headDim * tokens * 4;
    }
}
