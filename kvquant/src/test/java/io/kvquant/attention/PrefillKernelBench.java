package io.kvquant.attention;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.Random;

/**
 * Not a test: the measurement behind the blocked-prefill figures in README and docs/kernels.md.
 * One layer of 8 KV heads × 128 dims holding {@code past + chunk} random tokens, one prefill of
 * {@code chunk} queries per head, on the blocked kernel and on the per-query tile path, timed in
 * the calling thread's CPU time (robust to other load on the machine; use 1 thread).
 *
 * <pre>
 * mvn -q -pl kvquant test-compile
 * java --add-modules jdk.incubator.vector -cp kvquant/target/classes:kvquant/target/test-classes \
 *     io.kvquant.attention.PrefillKernelBench turbo3.5 4096 256 [repeats]
 * </pre>
 */
public final class PrefillKernelBench {

    private PrefillKernelBench() {
    }

    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: PrefillKernelBench SPEC PAST CHUNK [REPEATS]");
            System.exit(2);
        }
        String spec = args[0];
        int past = Integer.parseInt(args[1]);
        int n = Integer.parseInt(args[2]);
        int repeats = args.length > 3 ? Integer.parseInt(args[3]) : 12;
        int kvh = 8;
        int d = 128;
        int len = past + n;
        Random r = new Random(1);
        float[] k = new float[kvh * len * d];
        float[] v = new float[kvh * len * d];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) r.nextGaussian();
            v[i] = (float) r.nextGaussian();
        }
        float[] q = new float[kvh * n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        float[] out = new float[q.length];
        float scale = (float) (1 / Math.sqrt(d));
        double flops = 4.0 * kvh * n * (past + n / 2.0) * d; // scores and value sums, causal
        ThreadMXBean mx = ManagementFactory.getThreadMXBean();
        try (LayeredKvCache c = KvCaches.create(spec, 1, kvh, d);
             DecodeAttention blocked = new DecodeAttention(1);
             DecodeAttention tiles = new DecodeAttention(1).blockedPrefill(false)) {
            c.append(0, k, v, len);
            for (int rep = 0; rep < repeats; rep++) {
                long t0 = mx.getCurrentThreadCpuTime();
                blocked.attendPrefill(c, 0, q, kvh, n, scale, out);
                long t1 = mx.getCurrentThreadCpuTime();
                tiles.attendPrefill(c, 0, q, kvh, n, scale, out);
                long t2 = mx.getCurrentThreadCpuTime();
                System.out.printf(java.util.Locale.ROOT, "%s past=%d chunk=%d: blocked %.1f ms (%.1f GFLOP/s), tile path %.1f ms, %.2fx%n",
                        spec, past, n, (t1 - t0) / 1e6, flops / (t1 - t0), (t2 - t1) / 1e6, (double) (t2 - t1) / (t1 - t0));
            }
        }
    }
}
