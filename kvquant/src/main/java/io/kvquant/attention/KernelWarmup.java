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
     * Tokens the decode part's cache holds before its first decode step, at least: past a preset's
     * fp16 window and middle tier, so that decode steps run the kernels of all three ({@link #prefillTokens}).
     */
    static final int PREFILL_TOKENS = 768;

    /** Tokens of the decode part's first append: records, the middle tier (when there is one) and the window all present. */
    static int prefillTokens(KvQuantConfig cfg) {
        return Math.max(PREFILL_TOKENS, cfg.window() + cfg.mid() + 256);
    }
    /**
     * Decode steps (append one token, attend) per round. Session 6's 160 steps in all left the
     * decode path's store code to be compiled around the real run's 200th decode step (the
     * JIT's second tier wants some hundreds of calls of each method); session 7's 600 in one go
     * ran in 0.1-0.2 s, before C2 got to the kernels' callers (DecodeAttention.tiles/attend,
     * left in tier-2 C1 code while C2's queue was long), and on one thread, so that the real
     * run's first step, the first on its thread, took traps where the per-thread scratch grows:
     * at 8K the first 48 real steps ran at ~10 ms against ~4 ms later (session 8). So every
     * round runs its steps on a fresh thread with a fresh {@link DecodeAttention}, and the steps
     * are spread over the rounds, beside the prefill rounds, while the JIT works.
     */
    static final int DECODE_STEPS_PER_ROUND = 100;
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
     * Most rounds. Each round is the prefill chunks on a fresh one-layer cache of the real
     * geometry, a burst of small prefill calls (see {@link #burst}) and
     * {@link #DECODE_STEPS_PER_ROUND} decode steps. Three chunks of 256 (session 6's warm-up)
     * left the blocked kernel in C1-compiled code: on a loaded machine most of a 2K prompt's
     * prefill then ran the Vector API's boxing fallbacks, 5–10x slower. The rounds stop once
     * one ran while the JIT compiled nothing and nothing finished in a pause after it either
     * (what they run is compiled and nothing is queued), or after {@link #BUDGET_S}. Whether a
     * round got faster is no signal: C1 code is flat too.
     */
    static final int ROUNDS = 40;
    /** At least this many rounds: 600 decode steps and ~2,000 small prefill tasks. */
    static final int MIN_ROUNDS = 6;
    /** Longest pause between rounds while the JIT compiles what they queued. */
    static final long PAUSE_MS = 250;
    /** Seconds after which no further round starts. */
    static final double BUDGET_S = 8;

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
        return start(cfg, kvHeads, headDim, qHeads, threads, () -> false);
    }

    /**
     * As {@link #start(KvQuantConfig, int, int, int, int)}, ending early once {@code stop} says so:
     * it is asked between one kernel call and the next (a prefill chunk, a decode step), so the
     * warm-up ends within one call of it (an application that gives up before its work starts
     * leaves nothing running for seconds).
     */
    public static CompletableFuture<Double> start(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, int threads,
                                                  java.util.function.BooleanSupplier stop) {
        if (kvHeads < 1 || headDim < 1 || qHeads < kvHeads || qHeads % kvHeads != 0 || threads < 1) {
            throw new IllegalArgumentException("warm-up geometry: kvHeads " + kvHeads + ", headDim " + headDim + ", qHeads "
                    + qHeads + ", threads " + threads);
        }
        CompletableFuture<Double> done = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            try {
                done.complete(run(cfg, kvHeads, headDim, qHeads, threads, stop));
            } catch (Throwable e) {
                done.completeExceptionally(e);
            }
        }, "kvquant-warmup");
        t.setDaemon(true);
        t.start();
        return done;
    }

    /** Runs the warm-up on the calling thread; returns its seconds. */
    static double run(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, int threads,
                      java.util.function.BooleanSupplier stop) {
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
        float[] bk = gaussian(r, kvHeads * BURST_TOKENS * headDim);
        float[] bv = gaussian(r, kvHeads * BURST_TOKENS * headDim);
        float[] bq = gaussian(r, qHeads * BURST_TOKENS * headDim);
        float[] bo = new float[bq.length];
        float[] k1 = gaussian(r, kvHeads * headDim);
        float[] v1 = gaussian(r, kvHeads * headDim);
        float[] q1 = gaussian(r, qHeads * headDim);
        float[] o1 = new float[q1.length];
        java.lang.management.CompilationMXBean jit = java.lang.management.ManagementFactory.getCompilationMXBean();
        boolean watch = jit != null && jit.isCompilationTimeMonitoringSupported();
        long compiled = watch ? jit.getTotalCompilationTime() : 0;
        // the past of every other prefill round: past the window and the middle tier, if there is one
        int tierPast = cfg.mid() > 0 ? cfg.window() + cfg.mid() + 64 : 0;
        float[] tk = gaussian(r, kvHeads * tierPast * headDim);
        float[] tv = gaussian(r, kvHeads * tierPast * headDim);
        // the decode steps' cache, past the fp16 window and the middle tier; it grows by one round's
        // steps per round
        int pre = prefillTokens(cfg);
        try (LayeredKvCache dc = KvCaches.create(cfg, 1, kvHeads, headDim)) {
            dc.append(0, gaussian(r, kvHeads * pre * headDim), gaussian(r, kvHeads * pre * headDim), pre);
            for (int round = 0; round < ROUNDS && (System.nanoTime() - t0) / 1e9 < BUDGET_S && !stop.getAsBoolean(); round++) {
                long r0 = System.nanoTime();
                // a fresh DecodeAttention per round: its kernels' per-thread scratch (a ThreadLocal
                // of each instance) is then created in every round, as the engine's own instance
                // does on its first prefill. Compiled from rounds where it never happened, the
                // kernel treated that branch as impossible and the real run's first scratch lookup
                // deoptimized BlockedPrefill.task (uncommon trap in ThreadLocal.get, session 7)
                try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvHeads, headDim);
                     DecodeAttention pa = new DecodeAttention(threads)) {
                    if (round % 2 == 1 && tierPast > 0) {
                        // every other round over a past of records, middle tier and window: a real
                        // prompt's chunks after the first window + tier tokens meet all three, and
                        // the first such chunk took 106 ms instead of 7 while its kernel path was
                        // compiled only from rounds that never saw records (session 10)
                        cache.append(0, tk, tv, tierPast);
                    }
                    for (int c = 0; c < PREFILL_CHUNKS.length && !stop.getAsBoolean(); c++) {
                        int n = PREFILL_CHUNKS[c];
                        cache.append(0, pk[c], pv[c], n);
                        pa.attendPrefill(cache, 0, pq[c], qHeads, n, scale, po[c]);
                    }
                    if (round > 0) { // round 0 runs interpreted: the burst would cost most there
                        burst(cfg, kvHeads, headDim, qHeads, pa, bk, bv, bq, bo, scale, stop);
                    }
                }
                decodeRound(dc, k1, v1, q1, o1, qHeads, scale, threads, stop);
                long now = watch ? jit.getTotalCompilationTime() : 0;
                boolean quiet = watch && now == compiled; // the JIT finished nothing during the round (any thread's)
                if (quiet && round + 1 >= MIN_ROUNDS) {
                    // a compiled round takes tens of ms, one C2 compilation of a kernel hundreds:
                    // quiet only if nothing finishes during a pause either (a queue would)
                    pause(PAUSE_MS);
                    long later = jit.getTotalCompilationTime();
                    quiet = later == now;
                    now = later;
                }
                if (Boolean.getBoolean("kvq.warmup.trace")) {
                    System.err.printf("warm-up round %d: %.0f ms, JIT %d ms (uptime %d)%n", round, (System.nanoTime() - r0) / 1e6,
                            now - compiled, java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime());
                }
                compiled = now;
                if (round + 1 >= MIN_ROUNDS && (quiet || !watch)) {
                    break;
                }
                if (watch && !quiet) {
                    // the rounds have queued compilations: leave the compiler threads a core for a
                    // while instead of running more C1 code beside them (on 2 cores they compete)
                    pause(Math.min(PAUSE_MS, (System.nanoTime() - r0) / 1_000_000));
                }
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    /** {@link #DECODE_STEPS_PER_ROUND} decode steps on {@code cache}, on a fresh thread with a fresh {@link DecodeAttention}. */
    private static void decodeRound(LayeredKvCache cache, float[] k1, float[] v1, float[] q1, float[] o1, int qHeads, float scale,
                                    int threads, java.util.function.BooleanSupplier stop) {
        Throwable[] failed = new Throwable[1];
        Thread t = new Thread(() -> {
            try (DecodeAttention att = new DecodeAttention(threads)) {
                for (int s = 0; s < DECODE_STEPS_PER_ROUND && !stop.getAsBoolean(); s++) {
                    cache.append(0, k1, v1, 1);
                    att.attend(cache, 0, q1, qHeads, scale, o1);
                }
            } catch (Throwable e) {
                failed[0] = e;
            }
        }, "kvquant-warmup-decode");
        t.start();
        try {
            t.join(); // also makes the thread's appends visible to the next round's thread
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("warm-up interrupted", e);
        }
        if (failed[0] != null) {
            throw new IllegalStateException("warm-up decode round failed: " + failed[0], failed[0]);
        }
    }

    /**
     * Many small prefill calls. C2 compiles a method once it has been called some hundreds of
     * times (HotSpot's tier-4 thresholds count invocations first), and a round of real-sized
     * chunks calls the prefill task only ~4 x kvHeads times. Rounds stopped as JIT-quiet with
     * the prefill kernels still in profiling C1 code below those counts, and in about half the
     * runs the real 2K prefill's attention then took 0.9 s against 0.2-0.3 s while C2 caught up
     * (session 8, PrintCompilation). A burst adds {@value #BURST_CALLS} x kvHeads task calls
     * per round for a few milliseconds once compiled.
     */
    private static void burst(KvQuantConfig cfg, int kvHeads, int headDim, int qHeads, DecodeAttention pa, float[] k, float[] v,
                              float[] q, float[] o, float scale, java.util.function.BooleanSupplier stop) {
        for (int b = 0; b < BURST_CALLS && !stop.getAsBoolean(); b += BURST_RESET) {
            try (LayeredKvCache cache = KvCaches.create(cfg, 1, kvHeads, headDim)) {
                for (int i = b; i < Math.min(BURST_CALLS, b + BURST_RESET) && !stop.getAsBoolean(); i++) {
                    cache.append(0, k, v, BURST_TOKENS);
                    pa.attendPrefill(cache, 0, q, qHeads, BURST_TOKENS, scale, o);
                }
            }
        }
    }

    /** Calls per burst, tokens per call, calls per cache (the cache stays small, so the calls stay cheap). */
    static final int BURST_CALLS = 200;
    static final int BURST_TOKENS = 5;
    static final int BURST_RESET = 40;

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
