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

    /** Tokens the decode part's cache holds before its decode steps (past a preset's fp16 window). */
    static final int PREFILL_TOKENS = 768;
    /**
     * Decode steps (append one token, attend) after the prefill. Session 6's 160 left the decode
     * path's store code (the window, the one-vector encoder, the range kernels) to be compiled
     * around the real run's 200th decode step (`-XX:+PrintCompilation`, bundled model): the JIT's
     * second tier wants some hundreds of calls of each method.
     */
    static final int DECODE_STEPS = 600;
    /**
     * The decode steps run in at least this many rounds, each on a fresh thread (see {@link #run}),
     * and more while the JIT is still compiling what they run, up to {@link #MAX_DECODE_ROUNDS}
     * or {@link #DECODE_BUDGET_S}: 600 steps in 0.1-0.2 s left the decode kernels' callers in
     * C1 code (tier 2, chosen while C2's queue was long) until the real run's 100th-200th step.
     */
    static final int DECODE_ROUNDS = 6;
    static final int MAX_DECODE_ROUNDS = 30;
    /** JIT milliseconds during a decode round (or the pause after it) that still count as quiet. */
    static final long QUIET_JIT_MS = 5;
    /** Seconds after which no further decode round starts. */
    static final double DECODE_BUDGET_S = 3;
    /**
     * Chunk lengths of one prefill round. A real prompt's last chunk is rarely a multiple of
     * anything: the odd lengths give partial key tiles (a token count that is not a multiple of
     * the vector length, an odd number of vectors), query blocks with every remainder of the
     * six-query register block, and tasks of unequal size. A branch the warm-up never took is
     * compiled as a trap: the real run's first partial tile deoptimized the compiled prefill
     * kernel back to the interpreter (session 7, docs/engine.md).
     */
    static final int[] PREFILL_CHUNKS = {256, 231, 97, 13};
    /**
     * Most prefill rounds, each on a fresh one-layer cache of the real geometry. Three chunks of 256 (session 6's
     * warm-up) left the blocked kernel in C1-compiled code: on a loaded machine most of a 2K
     * prompt's prefill then ran the Vector API's boxing fallbacks, 5–10x slower. The rounds stop
     * once one ran while the JIT compiled nothing and nothing finished in a pause after it either
     * (what it runs is compiled and nothing is queued), or after {@link #PREFILL_BUDGET_S}.
     * Whether a round got faster is no signal: C1 code is flat too.
     */
    static final int PREFILL_ROUNDS = 40;
    /** At least this many rounds. */
    static final int MIN_PREFILL_ROUNDS = 3;
    /** Longest pause between rounds while the JIT compiles what they queued. */
    static final long PAUSE_MS = 250;
    /** Seconds after which no further prefill round starts. */
    static final double PREFILL_BUDGET_S = 10;

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
        // the prefill kernel on the real geometry (one KV head took other task splits and
        // left the first real prefill of turbo3.5 no faster than session 6's warm-up)
        float[][] pk = new float[PREFILL_CHUNKS.length][];
        float[][] pv = new float[PREFILL_CHUNKS.length][];
        float[][] pq = new float[PREFILL_CHUNKS.length][];
        float[][] po = new float[PREFILL_CHUNKS.length][];
        for (int c = 0; c < PREFILL_CHUNKS.length; c++) {
            int n = PREFILL_CHUNKS[c];
            pk[c] = gaussian(r, kvHeads * n * headDim);
            pv[c] = gaussian(r, kvHeads * n * headDim);
            pq[c] = gaussian(r, qHeads * n * headDim);
            po[c] = new float[pq[c].length];
        }
        java.lang.management.CompilationMXBean jit = java.lang.management.ManagementFactory.getCompilationMXBean();
        boolean watch = jit != null && jit.isCompilationTimeMonitoringSupported();
        long compiled = watch ? jit.getTotalCompilationTime() : 0;
        for (int round = 0; round < PREFILL_ROUNDS && (System.nanoTime() - t0) / 1e9 < PREFILL_BUDGET_S; round++) {
            long r0 = System.nanoTime();
            // a fresh DecodeAttention per round: its kernels' per-thread scratch (a ThreadLocal
            // of each instance) is then created in every round, as the engine's own instance
            // does on its first prefill. Compiled from rounds where it never happened, the
            // kernel treated that branch as impossible and the real run's first scratch lookup
            // deoptimized BlockedPrefill.task (uncommon trap in ThreadLocal.get, session 7)
            try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvHeads, headDim);
                 DecodeAttention pa = new DecodeAttention(threads)) {
                for (int c = 0; c < PREFILL_CHUNKS.length; c++) {
                    int n = PREFILL_CHUNKS[c];
                    cache.append(0, pk[c], pv[c], n);
                    pa.attendPrefill(cache, 0, pq[c], qHeads, n, scale, po[c]);
                }
            }
            long now = watch ? jit.getTotalCompilationTime() : 0;
            boolean quiet = watch && now == compiled; // the JIT finished nothing during the round (any thread's)
            if (quiet && round + 1 >= MIN_PREFILL_ROUNDS) {
                // a compiled round takes tens of ms, one C2 compilation of a kernel hundreds:
                // quiet only if nothing finishes during a pause either (a queue would)
                pause(PAUSE_MS);
                long later = jit.getTotalCompilationTime();
                quiet = later == now;
                now = later;
            }
            if (Boolean.getBoolean("kvq.warmup.trace")) {
                System.err.printf("warm-up round %d: %.0f ms, JIT %d ms%n", round, (System.nanoTime() - r0) / 1e6, now - compiled);
            }
            compiled = now;
            if (round + 1 >= MIN_PREFILL_ROUNDS && (quiet || !watch)) {
                break;
            }
            if (watch && !quiet) {
                // the rounds have queued compilations: leave the compiler threads a core for a
                // while instead of running more C1 code beside them (on 2 cores they compete)
                pause(Math.min(PAUSE_MS, (System.nanoTime() - r0) / 1_000_000));
            }
        }
        // the decode kernels on the real geometry, over a cache past the fp16 window, in rounds,
        // each on a fresh thread with a fresh DecodeAttention: the real run's first decode step
        // is the first on its thread (the per-thread scratch of the code kernels and the store
        // grows there), and a branch the warm-up took only in its first steps, before the JIT
        // profiled them, was compiled as a trap: the first 50-200 real decode steps then ran
        // deoptimized code at up to twice the steady time (session 8, -Xlog:deoptimization)
        try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvHeads, headDim)) {
            cache.append(0, gaussian(r, kvHeads * PREFILL_TOKENS * headDim), gaussian(r, kvHeads * PREFILL_TOKENS * headDim),
                    PREFILL_TOKENS);
            float[] k1 = gaussian(r, kvHeads * headDim);
            float[] v1 = gaussian(r, kvHeads * headDim);
            float[] q1 = gaussian(r, qHeads * headDim);
            float[] o1 = new float[q1.length];
            long d0 = System.nanoTime();
            compiled = watch ? jit.getTotalCompilationTime() : 0;
            for (int round = 0; round < MAX_DECODE_ROUNDS && (System.nanoTime() - d0) / 1e9 < DECODE_BUDGET_S; round++) {
                long r0 = System.nanoTime();
                Thread t = new Thread(() -> {
                    try (DecodeAttention att = new DecodeAttention(threads)) {
                        for (int s = 0; s < DECODE_STEPS / DECODE_ROUNDS; s++) {
                            cache.append(0, k1, v1, 1);
                            att.attend(cache, 0, q1, qHeads, scale, o1);
                        }
                    }
                }, "kvquant-warmup-decode");
                Throwable[] failed = new Throwable[1];
                t.setUncaughtExceptionHandler((th, e) -> failed[0] = e);
                t.start();
                try {
                    t.join();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
                if (failed[0] != null) {
                    throw new IllegalStateException("warm-up decode round failed: " + failed[0], failed[0]);
                }
                // as the prefill rounds: past the minimum, stop once a round and a pause after it
                // saw the JIT finish nothing; else leave the compiler threads a core for a while
                long now = watch ? jit.getTotalCompilationTime() : 0;
                // a C2 compilation of a kernel or its callers takes 50+ ms; a few ms are the
                // small methods of the caller's own threads (tokenizing, loading the model)
                boolean quiet = watch && now - compiled <= QUIET_JIT_MS;
                if (quiet && round + 1 >= DECODE_ROUNDS) {
                    pause(PAUSE_MS);
                    long later = jit.getTotalCompilationTime();
                    quiet = later - now <= QUIET_JIT_MS;
                    now = later;
                }
                if (Boolean.getBoolean("kvq.warmup.trace")) {
                    System.err.printf("warm-up decode round %d: %.0f ms, JIT %d ms%n", round, (System.nanoTime() - r0) / 1e6,
                            now - compiled);
                }
                compiled = now;
                if (round + 1 >= DECODE_ROUNDS && (quiet || !watch)) {
                    break;
                }
                if (watch && !quiet) {
                    pause(Math.min(PAUSE_MS, Math.max(20, (System.nanoTime() - r0) / 1_000_000)));
                }
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    private static void pause(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static float[] gaussian(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }
}
