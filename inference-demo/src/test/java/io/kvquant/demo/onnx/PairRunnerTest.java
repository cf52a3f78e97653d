package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;

/**
 * The Java decode step's helper thread ({@link PairRunner}): every chunk and task runs exactly
 * once whether the helper takes its share, steals, or is late; failures reach the owner; threads
 * that do not own it run everything themselves.
 */
class PairRunnerTest {

    @Test
    void everyPartAndTaskRunsExactlyOnce() throws Exception {
        try (PairRunner r = new PairRunner()) {
            assertTrue(r.acquire());
            for (int n : new int[] {2, 5, 8}) {
                AtomicIntegerArray parts = new AtomicIntegerArray(n);
                for (int i = 0; i < 10_000; i++) {
                    r.split(n, parts::incrementAndGet);
                }
                for (int c = 0; c < n; c++) {
                    assertEquals(10_000, parts.get(c), "chunk " + c + " of " + n);
                }
            }
            for (int n : new int[] {2, 3, 17, 64}) {
                AtomicIntegerArray tasks = new AtomicIntegerArray(n);
                for (int i = 0; i < 2_000; i++) {
                    assertTrue(r.tryForEach(n, tasks::incrementAndGet));
                }
                for (int t = 0; t < n; t++) {
                    assertEquals(2_000, tasks.get(t), "task " + t + " of " + n);
                }
            }
            r.release();
        }
    }

    @Test
    void anotherThreadRunsEverythingItselfAndOneOwnerAtATime() throws Exception {
        try (PairRunner r = new PairRunner()) {
            assertTrue(r.acquire());
            Thread[] seen = new Thread[4];
            Thread other = new Thread(() -> {
                assertFalse(r.acquire(), "taken by the first thread");
                r.split(4, p -> seen[p] = Thread.currentThread());
                assertFalse(r.tryForEach(4, i -> { }), "not served: the caller uses its own pool");
            });
            other.start();
            other.join();
            for (Thread t : seen) {
                assertEquals(other, t);
            }
            r.release();
            assertTrue(r.acquire(), "free again");
            r.release();
        }
    }

    @Test
    void aFailureInAnyChunkReachesTheOwner() {
        try (PairRunner r = new PairRunner()) {
            assertTrue(r.acquire());
            int failures = 0;
            for (int i = 0; i < 200; i++) {
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> r.split(8, p -> {
                    if (p == 7) {
                        throw new IllegalStateException("chunk 7 failed");
                    }
                }));
                assertEquals("chunk 7 failed", e.getMessage());
                failures++;
            }
            assertEquals(200, failures);
            AtomicIntegerArray ok = new AtomicIntegerArray(2);
            r.split(2, ok::incrementAndGet);
            assertEquals(1, ok.get(1), "usable after a failure");
            r.release();
        }
    }
}
