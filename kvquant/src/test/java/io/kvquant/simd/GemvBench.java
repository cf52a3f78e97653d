package io.kvquant.simd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * How fast {@link GemvOps} streams a set of weight matrices (256 x 768 fp32 each, as the bundled
 * model's layers) with one thread or with the columns split between threads, each thread always
 * taking the same columns (what the engine's Java decode step does). Prints GB/s per round. Run
 * after {@code mvn -DskipTests install}: {@code java --add-modules jdk.incubator.vector -cp
 * kvquant/target/test-classes:kvquant/target/classes io.kvquant.simd.GemvBench MATRICES THREADS [K N]}
 * (18 matrices of 256 x 768: 14 MB, about the bundled model's weights; 40 of 1024 x 2048: 335 MB,
 * about the benchmark model's, streamed from memory).
 */
public final class GemvBench {
    private GemvBench() {
    }

    public static void main(String[] args) throws Exception {
        int mats = Integer.parseInt(args[0]);
        int threads = Integer.parseInt(args[1]);
        int k = args.length > 3 ? Integer.parseInt(args[2]) : 256;
        int n = args.length > 3 ? Integer.parseInt(args[3]) : 768;
        try (Arena arena = Arena.ofShared()) {
            // each matrix k x n; the default shape is the bundled model's
            MemorySegment[] w = new MemorySegment[mats];
            for (int i = 0; i < mats; i++) {
                w[i] = arena.allocate(4L * k * n, 64);
                for (long j = 0; j < (long) k * n; j++) {
                    w[i].setAtIndex(ValueLayout.JAVA_FLOAT, j, (float) Math.sin(j));
                }
            }
            float[] x = new float[k];
            for (int i = 0; i < k; i++) {
                x[i] = (float) Math.cos(i);
            }
            float[] y = new float[n];
            GemvOps g = GemvOps.get();
            ExecutorService ex = Executors.newFixedThreadPool(threads);
            int it = (int) Math.max(2, 200L * 256 * 768 * 18 / ((long) k * n * mats));
            for (int rep = 0; rep < 8; rep++) {
                long t = System.nanoTime();
                Future<?>[] f = new Future<?>[threads];
                for (int th = 0; th < threads; th++) {
                    int n0 = th * n / threads;
                    int n1 = (th + 1) * n / threads;
                    f[th] = ex.submit(() -> {
                        for (int r = 0; r < it; r++) {
                            for (MemorySegment m : w) {
                                g.gemv(x, 0, k, m, 0, n, y, 0, n0, n1);
                            }
                        }
                    });
                }
                for (Future<?> ff : f) {
                    ff.get();
                }
                double s = (System.nanoTime() - t) / 1e9;
                System.out.printf("%.1f MB of weights, %d thread(s): %.2f GB/s%n", 4.0 * k * n * mats / 1e6, threads,
                        4.0 * k * n * mats * it / s / 1e9);
            }
            ex.shutdown();
        }
    }
}
