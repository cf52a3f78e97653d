package io.kvquant.attention;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.LayerStore;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;

/**
 * Scaled dot-product attention for new queries against a layer of a {@link LayeredKvCache},
 * computed straight from each store's format: TurboQuant scores and value sums are computed from
 * the codes read in place from the off-heap pages (in the rotated domain; values are un-rotated
 * once per output); nothing is dequantized in bulk. Grouped-query attention: query head h reads KV
 * head h / (qHeads/kvHeads), and every key and value tile is expanded once for the whole group.
 *
 * <p>The context is processed in tiles of {@link #TILE} tokens with an online softmax (running
 * maximum and sum, the accumulator rescaled when the maximum grows). Decode splits the context
 * into split-K blocks when there are fewer KV heads than work for the threads (flash-decoding):
 * each block's partial maximum, sum and accumulator are merged exactly. Prefill runs tasks over KV
 * heads and blocks of query positions, each with the causal limit per query.
 */
public final class DecodeAttention implements AutoCloseable {

    /** Tokens per tile: scores of a tile stay in L1 while its weights are formed and applied. */
    static final int TILE = 256;
    /** Fewest tokens per split-K block chosen automatically. */
    static final int MIN_SPLIT_TOKENS = 512;

    private final int threads;
    private final int forcedSplits;
    private final ForkJoinPool pool;
    private final ThreadLocal<Scratch> scratch = ThreadLocal.withInitial(Scratch::new);
    private final ThreadLocal<Merge> merges = ThreadLocal.withInitial(Merge::new);
    private final BlockedPrefill prefill = new BlockedPrefill();
    /** False: prefill takes the per-query tile path even where the store expands tiles (tests, measurements). */
    private boolean blocked = true;

    /** Per-worker state of one task: prepared queries, a tile of scores, the running softmax. */
    private static final class Scratch {
        float[] state = new float[0];
        float[] scores = new float[0];
        float[] acc = new float[0];
        float[] max = new float[0];
        double[] sum = new double[0];
        int[] offsets = new int[0];
        int[] visible = new int[0];
        int[] heads = new int[0];
        float[] shift = new float[0];
        /** The queries' array (offsets index into it). */
        float[] q;

        void ensure(int nq, int stateSize, int accSize) {
            if (offsets.length < nq) {
                offsets = new int[nq];
                visible = new int[nq];
                heads = new int[nq];
                shift = new float[nq];
                max = new float[nq];
                sum = new double[nq];
            }
            if (state.length < nq * stateSize) {
                state = new float[nq * stateSize];
            }
            if (scores.length < nq * TILE) {
                scores = new float[nq * TILE];
            }
            if (acc.length < nq * accSize) {
                acc = new float[nq * accSize];
            }
        }
    }

    /** The caller's buffers for the partial results of split-K blocks. */
    private static final class Merge {
        float[] acc = new float[0];
        float[] max = new float[0];
        double[] sum = new double[0];
        float[] tmp = new float[0];

        void ensure(int parts, int accSize) {
            if (max.length < parts) {
                max = new float[parts];
                sum = new double[parts];
            }
            if (acc.length < parts * accSize) {
                acc = new float[parts * accSize];
            }
            if (tmp.length < accSize) {
                tmp = new float[accSize];
            }
        }
    }

    /** @param threads worker threads (1 = run on the caller's thread) */
    public DecodeAttention(int threads) {
        this(threads, 0);
    }

    /**
     * @param splits split-K blocks per KV head for {@link #attend} (0 = chosen from the context
     *               length and thread count); for tests and measurements
     */
    DecodeAttention(int threads, int splits) {
        if (threads < 1) {
            throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        }
        if (splits < 0) {
            throw new IllegalArgumentException("splits must be >= 0, got " + splits);
        }
        this.threads = threads;
        this.forcedSplits = splits;
        // the calling thread is one of the workers (see run)
        this.pool = threads > 1 ? new ForkJoinPool(threads - 1) : null;
    }

    /** Chooses the blocked prefill kernel (default) or the per-query tile path; for tests and measurements. */
    DecodeAttention blockedPrefill(boolean on) {
        this.blocked = on;
        return this;
    }

    public int threads() {
        return threads;
    }

    private volatile Workers workers;

    /**
     * Lends this attention threads for its parallel work ({@link Workers}); null: its own pool
     * only. Calls from threads the workers do not serve still use the pool.
     */
    public void workers(Workers w) {
        this.workers = w;
    }

    /**
     * Split-K blocks per KV head: about {@link #TASKS_PER_THREAD} tasks per thread even with one KV
     * head, so that the threads stay busy until the end of a step when one of them is preempted
     * or slower (each task is at least {@link #MIN_SPLIT_TOKENS} tokens; the exact merge costs
     * one accumulator per block).
     */
    int splitsFor(int len, int kvHeads) {
        if (forcedSplits > 0) {
            return Math.min(forcedSplits, len);
        }
        if (threads == 1) {
            return 1;
        }
        int want = (TASKS_PER_THREAD * threads + kvHeads - 1) / kvHeads;
        return Math.max(1, Math.min(want, len / MIN_SPLIT_TOKENS));
    }

    /** Tasks per thread that {@link #splitsFor} aims at. */
    static final int TASKS_PER_THREAD = 4;

    /**
     * One new query per head against every stored token of {@code layer} (the new token's own
     * key and value must already be appended).
     *
     * @param q   {@code [qHeads][headDim]}
     * @param out {@code [qHeads][headDim]}
     */
    public void attend(KvCache cache, int layer, float[] q, int qHeads, float scale, float[] out) {
        attend(cache, layer, q, qHeads, scale, out, ScoreMods.NONE);
    }

    /**
     * As {@link #attend(KvCache, int, float[], int, float, float[])} with score modifiers
     * (sliding window, softcap, ALiBi, sinks; see {@link ScoreMods}) for the query at position
     * length − 1.
     */
    public void attend(KvCache cache, int layer, float[] q, int qHeads, float scale, float[] out, ScoreMods mods) {
        LayerStore store = storeOf(cache, layer);
        int len = store.length();
        check(store, q, qHeads, 1, out, len);
        mods.checkHeads(qHeads);
        int kvh = store.kvHeads();
        int group = qHeads / kvh;
        int d = store.headDim();
        int start = mods.firstVisible(len - 1); // a sliding window: split-K over the keys it sees only
        float[] mu = keyMean(cache, layer, mods);
        int splits = splitsFor(len - start, kvh);
        if (splits == 1) {
            run(kvh, g -> {
                Scratch s = prepare(store, q, g * group * d, d, group, len);
                tiles(store, g, s, group, start, len, scale, mods, mu);
                for (int i = 0; i < group; i++) {
                    finish(store, s.acc, i * store.accumulatorSize(), s.sum[i] + mods.sinkTerm(g * group + i, s.max[i]),
                            out, (g * group + i) * d);
                }
            });
            return;
        }
        // split-K (flash-decoding): each task runs the online softmax over one block of the
        // context; the blocks' partial sums are merged exactly with their maxima
        int as = store.accumulatorSize();
        Merge m = merges.get();
        m.ensure(kvh * splits * group, as);
        float[] pAcc = m.acc;
        float[] pMax = m.max;
        double[] pSum = m.sum;
        run(kvh * splits, task -> {
            int g = task / splits;
            int b = task % splits;
            int from = start + (int) ((long) (len - start) * b / splits);
            int to = start + (int) ((long) (len - start) * (b + 1) / splits);
            Scratch s = prepare(store, q, g * group * d, d, group, len);
            tiles(store, g, s, group, from, to, scale, mods, mu);
            System.arraycopy(s.acc, 0, pAcc, task * group * as, group * as);
            System.arraycopy(s.max, 0, pMax, task * group, group);
            System.arraycopy(s.sum, 0, pSum, task * group, group);
        });
        float[] tmp = m.tmp;
        for (int g = 0; g < kvh; g++) {
            for (int i = 0; i < group; i++) {
                float mx = Float.NEGATIVE_INFINITY;
                for (int b = 0; b < splits; b++) {
                    mx = Math.max(mx, pMax[(g * splits + b) * group + i]);
                }
                java.util.Arrays.fill(tmp, 0, as, 0f);
                double sum = 0;
                for (int b = 0; b < splits; b++) {
                    int part = (g * splits + b) * group + i;
                    if (pMax[part] == Float.NEGATIVE_INFINITY) {
                        continue;
                    }
                    float f = (float) Math.exp(pMax[part] - mx);
                    sum += f * pSum[part];
                    Simd.ops().axpy(f, pAcc, part * as, tmp, 0, as);
                }
                // a sink joins the denominator once, after the blocks are merged
                finish(store, tmp, 0, sum + mods.sinkTerm(g * group + i, mx), out, (g * group + i) * d);
            }
        }
    }

    /**
     * Prefill form: {@code n} queries per head for the last {@code n} stored positions, causal
     * (query i sees tokens [0, length − n + i]).
     *
     * @param q   {@code [qHeads][n][headDim]}
     * @param out {@code [qHeads][n][headDim]}
     */
    public void attendPrefill(KvCache cache, int layer, float[] q, int qHeads, int n, float scale, float[] out) {
        attendPrefill(cache, layer, q, qHeads, n, scale, out, ScoreMods.NONE);
    }

    /**
     * As {@link #attendPrefill(KvCache, int, float[], int, int, float, float[])} with score
     * modifiers (see {@link ScoreMods}); query i is at position length − n + i.
     */
    public void attendPrefill(KvCache cache, int layer, float[] q, int qHeads, int n, float scale, float[] out,
                              ScoreMods mods) {
        LayerStore store = storeOf(cache, layer);
        int len = store.length();
        check(store, q, qHeads, n, out, len);
        mods.checkHeads(qHeads);
        float[] mu = keyMean(cache, layer, mods);
        int d = store.headDim();
        int group = qHeads / store.kvHeads();
        if (blocked && store.expands()) {
            // tasks over KV heads and blocks of query positions, enough for every thread; each
            // expands every tile of the context once for all its queries (BlockedPrefill)
            int kvh = store.kvHeads();
            int want = threads == 1 ? 1 : (2 * threads + kvh - 1) / kvh;
            int pb = Math.max(1, Math.min(n, Math.max((n + want - 1) / want, (MIN_PREFILL_QUERIES + group - 1) / group)));
            int nblocks = (n + pb - 1) / pb;
            run(kvh * nblocks, task -> {
                int b0 = (task % nblocks) * pb;
                prefill.task(store, task / nblocks, group, q, n, len, b0, Math.min(pb, n - b0), scale, out, mods, mu);
            });
            return;
        }
        int ss = store.queryStateSize();
        int as = store.accumulatorSize();
        // Tasks over KV heads and blocks of PREFILL_BLOCK query positions: each task runs the tiled
        // online softmax over the tokens its block sees, so every key and value tile is expanded
        // once for all the block's queries of a GQA group, with the causal limit per query.
        int blocks = (n + PREFILL_BLOCK - 1) / PREFILL_BLOCK;
        run(store.kvHeads() * blocks, task -> {
            int g = task / blocks;
            int b0 = (task % blocks) * PREFILL_BLOCK;
            int nb = Math.min(PREFILL_BLOCK, n - b0);
            int nq = group * nb;
            Scratch s = scratch.get();
            s.ensure(nq, ss, as);
            for (int h = 0; h < group; h++) {
                for (int i = 0; i < nb; i++) {
                    // query head g·group + h, position b0 + i sees tokens [0, len − n + b0 + i]
                    int j = h * nb + i;
                    s.offsets[j] = ((g * group + h) * n + b0 + i) * d;
                    s.visible[j] = len - n + b0 + i + 1;
                    s.heads[j] = g * group + h;
                    store.prepareQuery(q, s.offsets[j], s.state, j * ss);
                }
            }
            reset(s, nq, as);
            s.q = q;
            tiles(store, g, s, nq, 0, len - n + b0 + nb, scale, mods, mu);
            for (int j = 0; j < nq; j++) {
                finish(store, s.acc, j * as, s.sum[j] + mods.sinkTerm(s.heads[j], s.max[j]), out, s.offsets[j]);
            }
        });
    }

    /** Queries per prefill block (per GQA group) of the per-query tile path (stores that do not expand tiles). */
    static final int PREFILL_BLOCK = 16;
    /** Fewest queries (positions × group heads) per task of the blocked prefill path. */
    static final int MIN_PREFILL_QUERIES = 64;

    /**
     * Prepares the {@code nq} queries at q[qo + i·qStride] (all seeing {@code len} tokens) in this
     * thread's scratch; q is [qHeads][qStride], so query i is head qo / qStride + i.
     */
    private Scratch prepare(LayerStore store, float[] q, int qo, int qStride, int nq, int len) {
        Scratch s = scratch.get();
        int ss = store.queryStateSize();
        int as = store.accumulatorSize();
        s.ensure(nq, ss, as);
        for (int i = 0; i < nq; i++) {
            s.offsets[i] = qo + i * qStride;
            s.visible[i] = len;
            s.heads[i] = qo / qStride + i;
            store.prepareQuery(q, s.offsets[i], s.state, i * ss);
        }
        reset(s, nq, as);
        s.q = q;
        return s;
    }

    private static void reset(Scratch s, int nq, int as) {
        java.util.Arrays.fill(s.acc, 0, nq * as, 0f);
        java.util.Arrays.fill(s.max, 0, nq, Float.NEGATIVE_INFINITY);
        java.util.Arrays.fill(s.sum, 0, nq, 0.0);
    }

    /**
     * Online softmax over tokens [from, to) of KV head {@code kvHead} for the {@code nq} queries
     * prepared in {@code s}, query j (head {@code s.heads[j]}, position {@code s.visible[j] − 1})
     * seeing only tokens below {@code s.visible[j]} and, with a sliding window, from
     * {@code mods.firstVisible(position)} on: per tile, the scores (scaled, then modified by
     * {@link ScoreMods#apply}), a new running maximum (rescaling the accumulator when it grows),
     * the weights and their sum, then the weighted values. Leaves the unnormalized accumulators,
     * maxima and sums (sinks are added by the caller, once, to the final sums). {@code mu}: the
     * key mean of a centering cache when the modifiers need true scores (see {@link #keyMean}),
     * else null.
     */
    private static void tiles(LayerStore store, int kvHead, Scratch s, int nq, int from, int to, float scale,
                              ScoreMods mods, float[] mu) {
        VectorOps ops = Simd.ops();
        int as = store.accumulatorSize();
        float[] sc = s.scores;
        boolean windowed = mods.window() > 0;
        boolean changes = mods.changesScores();
        if (mu != null) {
            int d = store.headDim();
            for (int j = 0; j < nq; j++) {
                s.shift[j] = scale * ops.dot(s.q, s.offsets[j], mu, kvHead * d, d);
            }
        }
        if (windowed) { // tiles before every query's window hold nothing to see
            int lowest = Integer.MAX_VALUE;
            for (int j = 0; j < nq; j++) {
                lowest = Math.min(lowest, mods.firstVisible(s.visible[j] - 1));
            }
            from = Math.max(from, lowest);
        }
        for (int t0 = from; t0 < to; t0 += TILE) {
            int n = Math.min(TILE, to - t0);
            store.scores(kvHead, s.state, nq, t0, t0 + n, sc, TILE);
            for (int j = 0; j < nq; j++) {
                int b = j * TILE;
                int v = Math.max(0, Math.min(n, s.visible[j] - t0));
                // keys [lo, v) of the tile are visible to query j
                int lo = windowed ? Math.min(v, Math.max(0, mods.firstVisible(s.visible[j] - 1) - t0)) : 0;
                if (v > lo) {
                    int bl = b + lo;
                    int w = v - lo;
                    ops.scale(sc, bl, w, scale);
                    if (mu != null) { // the true scores: ⟨q, k − μ⟩ + ⟨q, μ⟩
                        float sh = s.shift[j];
                        for (int k = bl; k < bl + w; k++) {
                            sc[k] += sh;
                        }
                    }
                    if (changes) {
                        mods.apply(sc, bl, w, s.heads[j], s.visible[j] - 1, t0 + lo);
                    }
                    float mx = ops.max(sc, bl, w);
                    float old = s.max[j];
                    if (mx > old) {
                        if (old != Float.NEGATIVE_INFINITY) {
                            float f = (float) Math.exp(old - mx);
                            ops.scale(s.acc, j * as, as, f);
                            s.sum[j] *= f;
                        }
                        s.max[j] = mx;
                    }
                    s.sum[j] += ops.expSum(sc, bl, w, s.max[j]);
                }
                if (lo > 0) {
                    java.util.Arrays.fill(sc, b, b + lo, 0f); // before the window: weight 0
                }
                java.util.Arrays.fill(sc, b + v, b + n, 0f); // tokens this query does not see: weight 0
            }
            store.accumulate(kvHead, sc, TILE, nq, t0, t0 + n, s.acc);
        }
    }

    /** out[oo..oo+d) = the store's output for accumulator acc[ao..) divided by {@code sum}. */
    private static void finish(LayerStore store, float[] acc, int ao, double sum, float[] out, int oo) {
        Simd.ops().scale(acc, ao, store.accumulatorSize(), (float) (1.0 / sum));
        store.finish(acc, ao, out, oo);
    }

    /**
     * A centering cache stores k − μ, so its scores are the true ones minus ⟨q, μ⟩, a constant
     * per query that softmax ignores but softcapping (nonlinear) and sinks (compared with the
     * true scores) do not: the key mean of the layer ([kvHeads][headDim]) when the modifiers need
     * the true scores and the cache centers keys, else null.
     */
    private static float[] keyMean(KvCache cache, int layer, ScoreMods mods) {
        return mods.needsTrueScores() && cache instanceof LayeredKvCache lc && lc.centered() ? lc.keyMean(layer) : null;
    }

    private static LayerStore storeOf(KvCache cache, int layer) {
        if (!(cache instanceof LayeredKvCache lc)) {
            throw new IllegalArgumentException("decode attention needs a cache made by KvCaches, got " + cache.getClass().getName());
        }
        return lc.store(layer);
    }

    private static void check(LayerStore store, float[] q, int qHeads, int n, float[] out, int len) {
        if (qHeads < store.kvHeads() || qHeads % store.kvHeads() != 0) {
            throw new IllegalArgumentException(qHeads + " query heads cannot share " + store.kvHeads()
                    + " KV heads (query heads must be a multiple of KV heads)");
        }
        long need = (long) qHeads * n * store.headDim();
        if (q.length != need || out.length != need) {
            throw new IllegalArgumentException("queries and output must hold " + need + " floats ([" + qHeads + "][" + n + "]["
                    + store.headDim() + "]), got " + q.length + " and " + out.length);
        }
        if (len < n || len == 0) {
            throw new IllegalArgumentException("layer holds " + len + " tokens, fewer than the " + n + " queries");
        }
    }

    /** How long the caller spins for helpers still running their last task before it blocks. */
    static final long END_SPIN_NANOS = 200_000;

    private interface Task {
        void run(int i);
    }

    /**
     * Runs tasks 0..count−1 on the pool's workers and the calling thread together: each takes the
     * next task index from a shared counter until none is left, so a worker that the OS preempts
     * (a shared machine) holds up at most the one task it is running while the others take the
     * rest; the caller works instead of waiting for a hand-off.
     */
    private void run(int count, Task task) {
        Workers w = workers;
        if (w != null && count > 1 && w.tryForEach(count, task::run)) {
            return;
        }
        if (pool == null || count == 1) {
            for (int i = 0; i < count; i++) {
                task.run(i);
            }
            return;
        }
        java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
        Runnable worker = () -> {
            for (int i = next.getAndIncrement(); i < count; i = next.getAndIncrement()) {
                task.run(i);
            }
        };
        int helpers = Math.min(threads, count) - 1;
        java.util.concurrent.atomic.AtomicInteger busy = new java.util.concurrent.atomic.AtomicInteger(helpers);
        Runnable helper = () -> {
            try {
                worker.run();
            } finally {
                busy.decrementAndGet();
            }
        };
        java.util.concurrent.ForkJoinTask<?>[] submitted = new java.util.concurrent.ForkJoinTask<?>[helpers];
        for (int h = 0; h < helpers; h++) {
            submitted[h] = pool.submit(helper);
        }
        RuntimeException failure = null;
        try {
            worker.run();
        } catch (RuntimeException e) {
            next.set(count); // the others stop after their current task
            failure = e;
        }
        // the helpers are finishing their last tasks (a fraction of a millisecond): wait for them
        // spinning for a while rather than parking at once, so that the step does not end with an
        // OS wake-up of the caller on its critical path
        long spinEnd = System.nanoTime() + END_SPIN_NANOS;
        while (busy.get() > 0 && System.nanoTime() < spinEnd) {
            Thread.onSpinWait();
        }
        for (java.util.concurrent.ForkJoinTask<?> f : submitted) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("attention interrupted", e);
            } catch (ExecutionException e) {
                next.set(count);
                if (failure == null) {
                    failure = e.getCause() instanceof RuntimeException re ? re : new IllegalStateException(e.getCause());
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    /** Exact reference: dense softmax attention on float arrays ([len][d] keys and values of one head). */
    public static void reference(float[] q, int qo, float[] keys, float[] values, int len, int d, float scale, float[] out, int oo) {
        double[] p = new double[len];
        double max = Double.NEGATIVE_INFINITY;
        for (int t = 0; t < len; t++) {
            double s = 0;
            for (int j = 0; j < d; j++) {
                s += (double) q[qo + j] * keys[t * d + j];
            }
            p[t] = s * scale;
            max = Math.max(max, p[t]);
        }
        double sum = 0;
        for (int t = 0; t < len; t++) {
            p[t] = Math.exp(p[t] - max);
            sum += p[t];
        }
        for (int j = 0; j < d; j++) {
            double a = 0;
            for (int t = 0; t < len; t++) {
                a += p[t] * values[t * d + j];
            }
            out[oo + j] = (float) (a / sum);
        }
    }

    @Override
    public void close() {
        if (pool != null) {
            pool.shutdown();
        }
    }
}
