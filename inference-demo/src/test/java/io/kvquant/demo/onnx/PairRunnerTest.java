package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;

/**
 * The Java decode step's helper thread ({@link PairRunner}): every part and task runs exactly
 * once whether the helper takes its share or is late, failures reach the owner, and threads that
 * do not own it run everything themselves.
 */
class PairRunnerTest {

    @Test
    void everyPartAndTaskRunsExactlyOnce() throws Exception {
        try (PairRunner r = new PairRunner()) {
            assertTrue(r.acquire());
            AtomicIntegerArray parts = new AtomicIntegerArray(2);
            for (int i = 0; i < 20_000; i++) {
                r.both(parts::incrementAndGet);
            }
            assertEquals(20_000, parts.get(0));
            assertEquals(20_000, parts.get(1));
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
            Thread[] seen = new Thread[2];
            Thread other = new Thread(() -> {
                assertFalse(r.acquire(), "taken by the first thread");
                r.both(p -> seen[p] = Thread.currentThread());
                assertFalse(r.tryForEach(4, i -> { }), "not served: the caller uses its own pool");
            });
            other.start();
            other.join();
            assertEquals(other, seen[0]);
            assertEquals(other, seen[1]);
            r.release();
            assertTrue(r.acquire(), "free again");
            r.release();
        }
    }

    @Test
    void aFailureInTheHelpersPartReachesTheOwner() {
        try (PairRunner r = new PairRunner()) {
            assertTrue(r.acquire());
            int failures = 0;
            for (int i = 0; i < 200; i++) {
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> r.both(p -> {
                    if (p == 1) {
                        throw new IllegalStateException("part 1 failed");
                    }
                }));
                assertEquals("part 1 failed", e.getMessage());
                failures++;
            }
            assertEquals(200, failures);
            AtomicIntegerArray ok = new AtomicIntegerArray(2);
            r.both(ok::incrementAndGet);
            assertEquals(1, ok.get(1), "usable after a failure");
            r.release();
        }
    }
}
