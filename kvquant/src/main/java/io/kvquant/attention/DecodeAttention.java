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

    /** Per-worker state of one task: prepared queries, a tile of scores, the running softmax. */
    private static final class Scratch {
        float[] state = new float[0];
        float[] scores = new float[0];
        float[] acc = new float[0];
        float[] max = new float[0];
        double[] sum = new double[0];
        int[] offsets = new int[0];
        int[] visible = new int[0];

        void ensure(int nq, int stateSize, int accSize) {
            if (offsets.length < nq) {
                offsets = new int[nq];
                visible = new int[nq];
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

    public int threads() {
        return threads;
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
        LayerStore store = storeOf(cache, layer);
        int len = store.length();
        check(store, q, qHeads, 1, out, len);
        int kvh = store.kvHeads();
        int group = qHeads / kvh;
        int d = store.headDim();
        int splits = splitsFor(len, kvh);
        if (splits == 1) {
            run(kvh, g -> {
                Scratch s = prepare(store, q, g * group * d, d, group, len);
                tiles(store, g, s, group, 0, len, scale);
                for (int i = 0; i < group; i++) {
                    finish(store, s.acc, i * store.accumulatorSize(), s.sum[i], out, (g * group + i) * d);
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
            int from = (int) ((long) len * b / splits);
            int to = (int) ((long) len * (b + 1) / splits);
            Scratch s = prepare(store, q, g * group * d, d, group, len);
            tiles(store, g, s, group, from, to, scale);
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
                finish(store, tmp, 0, sum, out, (g * group + i) * d);
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
        LayerStore store = storeOf(cache, layer);
        int len = store.length();
        check(store, q, qHeads, n, out, len);
        int d = store.headDim();
        int group = qHeads / store.kvHeads();
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
                    store.prepareQuery(q, s.offsets[j], s.state, j * ss);
                }
            }
            reset(s, nq, as);
            tiles(store, g, s, nq, 0, len - n + b0 + nb, scale);
            for (int j = 0; j < nq; j++) {
                finish(store, s.acc, j * as, s.sum[j], out, s.offsets[j]);
            }
        });
    }

    /** Queries per prefill block (per GQA group). */
    static final int PREFILL_BLOCK = 16;

    /** Prepares the {@code nq} queries at q[qo + i·qStride] (all seeing {@code len} tokens) in this thread's scratch. */
    private Scratch prepare(LayerStore store, float[] q, int qo, int qStride, int nq, int len) {
        Scratch s = scratch.get();
        int ss = store.queryStateSize();
        int as = store.accumulatorSize();
        s.ensure(nq, ss, as);
        for (int i = 0; i < nq; i++) {
            s.offsets[i] = qo + i * qStride;
            s.visible[i] = len;
            store.prepareQuery(q, s.offsets[i], s.state, i * ss);
        }
        reset(s, nq, as);
        return s;
    }

    private static void reset(Scratch s, int nq, int as) {
        java.util.Arrays.fill(s.acc, 0, nq * as, 0f);
        java.util.Arrays.fill(s.max, 0, nq, Float.NEGATIVE_INFINITY);
        java.util.Arrays.fill(s.sum, 0, nq, 0.0);
    }

    /**
     * Online softmax over tokens [from, to) of KV head {@code kvHead} for the {@code nq} queries
     * prepared in {@code s}, query j seeing only tokens below {@code s.visible[j]}: per tile, the
     * scores, a new running maximum (rescaling the accumulator when it grows), the weights and
     * their sum, then the weighted values. Leaves the unnormalized accumulators, maxima and sums.
     */
    private static void tiles(LayerStore store, int kvHead, Scratch s, int nq, int from, int to, float scale) {
        VectorOps ops = Simd.ops();
        int as = store.accumulatorSize();
        float[] sc = s.scores;
        for (int t0 = from; t0 < to; t0 += TILE) {
            int n = Math.min(TILE, to - t0);
            store.scores(kvHead, s.state, nq, t0, t0 + n, sc, TILE);
            for (int j = 0; j < nq; j++) {
                int b = j * TILE;
                int v = Math.max(0, Math.min(n, s.visible[j] - t0));
                if (v > 0) {
                    ops.scale(sc, b, v, scale);
                    float mx = ops.max(sc, b, v);
                    float old = s.max[j];
                    if (mx > old) {
                        if (old != Float.NEGATIVE_INFINITY) {
                            float f = (float) Math.exp(old - mx);
                            ops.scale(s.acc, j * as, as, f);
                            s.sum[j] *= f;
                        }
                        s.max[j] = mx;
                    }
                    s.sum[j] += ops.expSum(sc, b, v, s.max[j]);
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
        java.util.concurrent.ForkJoinTask<?>[] submitted = new java.util.concurrent.ForkJoinTask<?>[helpers];
        for (int h = 0; h < helpers; h++) {
            submitted[h] = pool.submit(worker);
        }
        RuntimeException failure = null;
        try {
            worker.run();
        } catch (RuntimeException e) {
            next.set(count); // the others stop after their current task
            failure = e;
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
