package io.kvquant.attention;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.codec.Codecs;
import io.kvquant.codec.QjlKind;
import io.kvquant.codec.RotationKind;
import io.kvquant.codec.VectorCodec;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.Arrays;
import java.util.Locale;
import java.util.Random;

/**
 * Not a test: a CPU-time microbenchmark of the decode-side kernels, for profiling and A/B runs
 * (the reported figures come from {@code kvq bench codec} / {@code kvq bench attention}).
 *
 * <pre>
 * mvn -q -pl kvquant test-compile
 * java --add-modules jdk.incubator.vector -cp kvquant/target/classes:kvquant/target/test-classes \
 *     io.kvquant.attention.DecodeKernelBench codec [bits]
 * java ... io.kvquant.attention.DecodeKernelBench attend SPEC CONTEXT KV_HEADS Q_HEADS [repeats]
 * </pre>
 */
public final class DecodeKernelBench {

    private DecodeKernelBench() {
    }

    public static void main(String[] args) {
        if (args.length > 0 && args[0].equals("codec")) {
            codec(args.length > 1 ? Double.parseDouble(args[1]) : 3.5);
        } else if (args.length >= 5 && args[0].equals("attend")) {
            attend(args[1], Integer.parseInt(args[2]), Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                    args.length > 5 ? Integer.parseInt(args[5]) : 15);
        } else {
            System.err.println("usage: DecodeKernelBench codec [bits] | attend SPEC CONTEXT KV_HEADS Q_HEADS [REPEATS]");
            System.exit(2);
        }
    }

    private static void codec(double bits) {
        int d = 128;
        int n = 4096;
        VectorCodec c = Codecs.turbo(d, bits, false, RotationKind.HADAMARD, QjlKind.GAUSSIAN, 7, false);
        Random r = new Random(1);
        float[] x = new float[n * d];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        MemorySegment recs = Arena.ofAuto().allocate((long) c.recordBytes() * n, 64);
        float[] out = new float[d];
        ThreadMXBean mx = ManagementFactory.getThreadMXBean();
        io.kvquant.simd.VectorOps ops = io.kvquant.simd.Simd.ops();
        double[] best = {Double.MAX_VALUE, Double.MAX_VALUE, Double.MAX_VALUE, Double.MAX_VALUE};
        for (int rep = 0; rep < 60; rep++) {
            long t0 = mx.getCurrentThreadCpuTime();
            for (int i = 0; i < n; i++) {
                c.encode(x, i * d, recs, (long) i * c.recordBytes());
            }
            long t1 = mx.getCurrentThreadCpuTime();
            long b1 = ((com.sun.management.ThreadMXBean) mx).getCurrentThreadAllocatedBytes();
            float s = 0;
            for (int i = 0; i < n; i++) {
                c.decode(recs, (long) i * c.recordBytes(), out, 0);
                s += out[i % d];
            }
            long t2 = mx.getCurrentThreadCpuTime();
            long alloc = ((com.sun.management.ThreadMXBean) mx).getCurrentThreadAllocatedBytes() - b1;
            for (int i = 0; i < n; i++) {
                ops.codeDecode(c.codeLayout(), recs, (long) i * c.recordBytes(), out, 0);
                s += out[i % d];
            }
            long t3 = mx.getCurrentThreadCpuTime();
            io.kvquant.codec.Rotation rot = ((io.kvquant.codec.TurboQuantMse) c).rotation();
            for (int i = 0; i < n; i++) {
                rot.unrotate(x, i * d, out, 0);
                s += out[i % d];
            }
            long t4 = mx.getCurrentThreadCpuTime();
            if (rep >= 20) {
                best[0] = Math.min(best[0], (t1 - t0) / (double) n);
                best[1] = Math.min(best[1], (t2 - t1) / (double) n);
                best[2] = Math.min(best[2], (t3 - t2) / (double) n);
                best[3] = Math.min(best[3], (t4 - t3) / (double) n);
            }
            if (rep == 59) {
                System.out.printf(Locale.ROOT, "bits %.1f (best of 40): encode %.0f ns, decode %.0f ns (%.2f M/s), expand %.0f ns, unrotate %.0f ns, decode allocates %.1f B/vector [%s]%n",
                        bits, best[0], best[1], 1e3 / best[1], best[2], best[3], alloc / (double) n, s);
            }
        }
    }

    private static void attend(String spec, int len, int kvh, int qh, int repeats) {
        int d = 128;
        Random r = new Random(1);
        float[] k = new float[kvh * len * d];
        float[] v = new float[kvh * len * d];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) r.nextGaussian();
            v[i] = (float) r.nextGaussian();
        }
        float[] q = new float[qh * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian();
        }
        float[] out = new float[q.length];
        float scale = (float) (1 / Math.sqrt(d));
        ThreadMXBean mx = ManagementFactory.getThreadMXBean();
        try (LayeredKvCache c = KvCaches.create(spec, 1, kvh, d);
             DecodeAttention a = new DecodeAttention(1)) {
            c.append(0, k, v, len);
            double[] ms = new double[repeats];
            for (int w = 0; w < 10; w++) {
                a.attend(c, 0, q, qh, scale, out);
            }
            for (int rep = 0; rep < repeats; rep++) {
                long t0 = mx.getCurrentThreadCpuTime();
                a.attend(c, 0, q, qh, scale, out);
                ms[rep] = (mx.getCurrentThreadCpuTime() - t0) / 1e6;
            }
            Arrays.sort(ms);
            System.out.printf(Locale.ROOT, "%s ctx=%d kv=%d q=%d: median %.3f ms (min %.3f) out[0]=%s%n", spec, len, kvh, qh,
                    ms[repeats / 2], ms[0], out[0]);
        }
    }
}
