package io.kvquant.attention;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import java.util.Random;
import java.util.concurrent.CompletableFuture;

/**
 * Runs the attention kernels of one cache setting on a small synthetic cache so that the JIT
 * compiles them before the real work starts. Until C2 has compiled them, the Vector API kernels
 * run as Java fallbacks that box every vector; measured in the engine, the first decode tokens
 * paid 0.6–0.9 s for it (docs/engine.md). An application starts this while it loads its model
 * (ONNX Runtime's session creation leaves cores idle) and waits for it before its first prefill.
 *
 * <p>It touches no state of the caller: its cache, queries and threads are its own; what it
 * leaves behind is compiled code. Random data is enough: the kernels do not branch on values.
 */
public final class KernelWarmup {

    /** Tokens the warm-up cache holds before its decode steps (past a preset's fp16 window). */
    static final int PREFILL_TOKENS = 768;
    /** Decode steps (append one token, attend) after the prefill. */
    static final int DECODE_STEPS = 160;
    /** Queries per prefill chunk. */
    static final int CHUNK = 256;

    private KernelWarmup() {
    }

    /**
     * Starts the warm-up on a daemon thread.
     *
     * @param cfg     the cache setting the real run will use (its kernels are the ones compiled)
     * @param kvHeads KV heads of the model
     * @param headDim head size
     * @param qHeads  query heads (a multiple of kvHeads)
     * @param threads attention threads, as the real run's {@link DecodeAttention}
     * @return completes with the seconds the warm-up ran
     */
    public static CompletableFuture<Double> start(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, int threads) {
        if (kvHeads < 1 || headDim < 1 || qHeads < kvHeads || qHeads % kvHeads != 0 || threads < 1) {
            throw new IllegalArgumentException("warm-up geometry: kvHeads " + kvHeads + ", headDim " + headDim + ", qHeads "
                    + qHeads + ", threads " + threads);
        }
        CompletableFuture<Double> done = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            try {
                done.complete(run(cfg, kvHeads, headDim, qHeads, threads));
            } catch (Throwable e) {
                done.completeExceptionally(e);
            }
        }, "kvquant-warmup");
        t.setDaemon(true);
        t.start();
        return done;
    }

    /** Runs the warm-up on the calling thread; returns its seconds. */
    static double run(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, int threads) {
        long t0 = System.nanoTime();
        Random r = new Random(7);
        float scale = (float) (1 / Math.sqrt(headDim));
        try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvHeads, headDim);
             DecodeAttention att = new DecodeAttention(threads)) {
            float[] k = gaussian(r, kvHeads * CHUNK * headDim);
            float[] v = gaussian(r, kvHeads * CHUNK * headDim);
            float[] q = gaussian(r, qHeads * CHUNK * headDim);
            float[] out = new float[q.length];
            for (int done = 0; done < PREFILL_TOKENS; done += CHUNK) {
                cache.append(0, k, v, CHUNK);
                att.attendPrefill(cache, 0, q, qHeads, CHUNK, scale, out);
            }
            float[] k1 = gaussian(r, kvHeads * headDim);
            float[] v1 = gaussian(r, kvHeads * headDim);
            float[] q1 = gaussian(r, qHeads * headDim);
            float[] o1 = new float[q1.length];
            for (int s = 0; s < DECODE_STEPS; s++) {
                cache.append(0, k1, v1, 1);
                att.attend(cache, 0, q1, qHeads, scale, o1);
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    private static float[] gaussian(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }
}
