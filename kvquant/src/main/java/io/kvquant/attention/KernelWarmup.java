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

    /**
     * Prefill chunks per round, in queries per chunk: a full engine chunk, then sizes whose
     * remainders reach every tail of the prefill kernel's 6 x 2 and 4 x 2 query blocks (the real
     * prompt's last chunk is any size). A round starts from an empty cache, as a prompt does, so
     * the causal diagonal tile runs without a past first.
     */
    static final int[] CHUNKS = {256, 255, 253, 251, 250};
    /** Rounds of {@link #CHUNKS}; the tokens they leave in the last round's cache outlast an fp16 window. */
    static final int ROUNDS = 4;
    /** Decode steps (append one token, attend) after the last round. */
    static final int DECODE_STEPS = 1200;

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

    /**
     * Runs the warm-up on the calling thread; returns its seconds.
     *
     * <p>How much: the JIT's second tier compiles a method after some hundreds of calls, and a
     * method with a loop is compiled on the stack sooner, but that copy serves only the call that
     * is running. Session 6's warm-up (three 256-token chunks, 160 decode steps) left most of
     * them to the real run: measured with {@code -XX:+PrintCompilation} on the bundled model, the
     * prefill kernels' tail blocks, the causal diagonal and the decode path's per-token store code
     * were compiled only during the real prompt's prefill and the first ~200 decode steps. So the
     * warm-up runs 20 prefill calls (a 2K-token prompt makes 32 on the bundled four-layer model),
     * with every tail size, and decode steps enough for every decode kernel, on at most two KV
     * heads: the kernels do not depend on the number of heads (only the split of the work does),
     * and the model's own head count would multiply the warm-up's time on the KV-heavy models.
     */
    static double run(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, int threads) {
        long t0 = System.nanoTime();
        Random r = new Random(7);
        float scale = (float) (1 / Math.sqrt(headDim));
        int kvh = Math.min(kvHeads, 2);
        int qh = kvh * (qHeads / kvHeads);
        try (DecodeAttention att = new DecodeAttention(threads)) {
            float[][] k = new float[CHUNKS.length][];
            float[][] v = new float[CHUNKS.length][];
            float[][] q = new float[CHUNKS.length][];
            float[][] o = new float[CHUNKS.length][];
            for (int c = 0; c < CHUNKS.length; c++) {
                k[c] = gaussian(r, kvh * CHUNKS[c] * headDim);
                v[c] = gaussian(r, kvh * CHUNKS[c] * headDim);
                q[c] = gaussian(r, qh * CHUNKS[c] * headDim);
                o[c] = new float[q[c].length];
            }
            for (int round = 0; round < ROUNDS; round++) {
                try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvh, headDim)) {
                    for (int c = 0; c < CHUNKS.length; c++) {
                        cache.append(0, k[c], v[c], CHUNKS[c]);
                        att.attendPrefill(cache, 0, q[c], qh, CHUNKS[c], scale, o[c]);
                    }
                    if (round == ROUNDS - 1) {
                        float[] k1 = gaussian(r, kvh * headDim);
                        float[] v1 = gaussian(r, kvh * headDim);
                        float[] q1 = gaussian(r, qh * headDim);
                        float[] o1 = new float[q1.length];
                        for (int s = 0; s < DECODE_STEPS; s++) {
                            cache.append(0, k1, v1, 1);
                            att.attend(cache, 0, q1, qh, scale, o1);
                        }
                    }
                }
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
