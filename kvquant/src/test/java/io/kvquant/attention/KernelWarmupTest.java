package io.kvquant.attention;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class KernelWarmupTest {

    /** The warm-up runs every path of a setting to the end (GQA group 2, past the fp16 window) on its own thread. */
    @ParameterizedTest
    @ValueSource(strings = {"turbo2.5", "fp16"})
    void runsToTheEndOnItsOwnThread(String spec) throws Exception {
        double secs = KernelWarmup.start(KvQuantConfig.parse(spec), 2, 64, 4, 2).get(5, TimeUnit.MINUTES);
        assertTrue(secs > 0 && Double.isFinite(secs), "seconds " + secs);
    }

    /**
     * It leaves only compiled code behind: an attention computed after it equals one computed
     * before. Not bit for bit: before the JIT has compiled the kernels, the Vector API's Java
     * fallback takes exp from {@link Math#exp}, compiled code from the JDK's vector math library,
     * and the two differ in the last ulp.
     */
    @Test
    void changesNoResult() throws Exception {
        Random r = new Random(5);
        int kvh = 2;
        int d = 64;
        int qh = 4;
        int len = 300;
        float[] k = new float[kvh * len * d];
        float[] v = new float[kvh * len * d];
        float[] q = new float[qh * d];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) r.nextGaussian();
            v[i] = (float) r.nextGaussian();
        }
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        float[] before = new float[q.length];
        float[] after = new float[q.length];
        try (LayeredKvCache c = KvCaches.create("turbo3.5", 1, kvh, d); DecodeAttention att = new DecodeAttention(2)) {
            c.append(0, k, v, len);
            att.attend(c, 0, q, qh, 0.125f, before);
            KernelWarmup.start(KvQuantConfig.parse("turbo3.5"), kvh, d, qh, 2).get(5, TimeUnit.MINUTES);
            att.attend(c, 0, q, qh, 0.125f, after);
        }
        for (int i = 0; i < before.length; i++) {
            assertEquals(before[i], after[i], 1e-5 * Math.max(1, Math.abs(before[i])), "output " + i);
        }
    }

    /** Asked to stop, it ends within one kernel call instead of running its rounds. */
    @Test
    void stopsWhenAsked() throws Exception {
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        var done = KernelWarmup.start(KvQuantConfig.parse("turbo3.5"), 2, 64, 4, 2, stop::get);
        Thread.sleep(50);
        stop.set(true);
        double secs = done.get(60, TimeUnit.SECONDS);
        assertTrue(secs > 0 && secs < KernelWarmup.BUDGET_S, "seconds " + secs);
        // already stopped: no round runs at all
        long t0 = System.nanoTime();
        KernelWarmup.start(KvQuantConfig.parse("turbo3.5"), 2, 64, 4, 2, () -> true).get(60, TimeUnit.SECONDS);
        assertTrue((System.nanoTime() - t0) / 1e9 < KernelWarmup.BUDGET_S);
    }

    @Test
    void refusesAGeometryThatCannotBe() {
        KvQuantConfig c = KvQuantConfig.parse("turbo3.5");
        assertThrows(IllegalArgumentException.class, () -> KernelWarmup.start(c, 2, 64, 3, 2)); // 3 query heads on 2 KV heads
        assertThrows(IllegalArgumentException.class, () -> KernelWarmup.start(c, 0, 64, 4, 2));
        assertThrows(IllegalArgumentException.class, () -> KernelWarmup.start(c, 2, 64, 4, 0));
    }
}
