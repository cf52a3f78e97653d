package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.cli.RunStats;
import io.kvquant.demo.sampling.Sampler;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import org.junit.jupiter.api.Test;

/**
 * Thousands of decode steps over a tiny context that is reset every 32 tokens: every ONNX
 * Runtime tensor and result must be released, so resident memory outside the Java heap stays
 * flat after warm-up.
 */
class SoakTest {
    static final int STEPS = Integer.getInteger("kvq.soak.steps", 2000);
    static final int WARMUP = 300;
    static final long BOUND = 32L << 20;

    @Test
    void nativeMemoryDoesNotGrowAcrossThousandsOfSteps() throws Exception {
        MemoryMXBean mem = ManagementFactory.getMemoryMXBean();
        try (DecoderModel model = DecoderModel.open(TestModel.dir(), new DecoderModel.Options(1, DecoderModel.Ep.CPU));
             KvCache cache = KvCaches.create("turbo3.5", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, 64);
            long rss0 = 0;
            long jvm0 = 0;
            long token = 1;
            for (int i = 0; i < STEPS; i++) {
                if (cache.length(0) >= 32) {
                    cache.clear();
                }
                token = Sampler.argmax(dec.step(token));
                if (i % 500 == 0 && Boolean.getBoolean("kvq.soak.trace")) {
                    System.out.printf("soak step %d: RSS %d MiB%n", i, RunStats.rssBytes() >> 20);
                }
                if (i == WARMUP) {
                    System.gc();
                    rss0 = RunStats.rssBytes();
                    jvm0 = mem.getHeapMemoryUsage().getCommitted() + mem.getNonHeapMemoryUsage().getCommitted();
                }
            }
            System.gc();
            long rss1 = RunStats.rssBytes();
            long jvm1 = mem.getHeapMemoryUsage().getCommitted() + mem.getNonHeapMemoryUsage().getCommitted();
            assertTrue(rss0 > 0, "/proc/self/status VmRSS is readable");
            long nativeGrowth = (rss1 - rss0) - Math.max(0, jvm1 - jvm0);
            System.out.printf("soak: %d steps, RSS %d -> %d MiB, JVM committed %+d MiB, native growth %d MiB%n",
                    STEPS, rss0 >> 20, rss1 >> 20, (jvm1 - jvm0) >> 20, nativeGrowth >> 20);
            assertTrue(nativeGrowth < BOUND, "resident memory outside the JVM grew by " + (nativeGrowth >> 20)
                    + " MiB over " + (STEPS - WARMUP) + " steps (bound " + (BOUND >> 20) + " MiB): a leak");
        }
    }
}
