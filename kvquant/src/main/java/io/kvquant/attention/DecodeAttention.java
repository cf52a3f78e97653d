package io.kvquant.attention;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.LayerStore;
import io.kvquant.cache.LayeredKvCache;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.stream.IntStream;

/**
 * Scaled dot-product attention for new queries against a layer of a {@link LayeredKvCache},
 * computed straight from each store's format: TurboQuant scores come from look-up tables over
 * the codes and values are summed in the rotated domain and un-rotated once per output; nothing
 * is dequantized in bulk. Grouped-query attention: query head h reads KV head h / (qHeads/kvHeads).
 * Parallel over query heads with a fixed thread count.
 */
public final class DecodeAttention implements AutoCloseable {

    private final int threads;
    private final ForkJoinPool pool;
    private final ThreadLocal<Scratch> scratch = ThreadLocal.withInitial(Scratch::new);

    private static final class Scratch {
        float[] state = new float[0];
        float[] scores = new float[0];
        float[] acc = new float[0];
        int[] offsets = new int[0];
        int[] visible = new int[0];

        void ensureQueries(int nq) {
            if (offsets.length < nq) {
                offsets = new int[nq];
                visible = new int[nq];
            }
        }

        void ensure(int s, int n, int a) {
            if (state.length < s) {
                state = new float[s];
            }
            if (scores.length < n) {
                scores = new float[Math.max(n, scores.length * 3 / 2)];
            }
            if (acc.length < a) {
                acc = new float[a];
            }
        }
    }

    /** @param threads worker threads (1 = run on the caller's thread) */
    public DecodeAttention(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        }
        this.threads = threads;
        this.pool = threads > 1 ? new ForkJoinPool(threads) : null;
    }

    public int threads() {
        return threads;
    }

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
        int group = qHeads / store.kvHeads();
        int d = store.headDim();
        run(store.kvHeads(), g -> attendGroup(store, g, q, g * group * d, d, group, len, scale, out));
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
        // Queries in blocks of PREFILL_BLOCK positions: one pass over the stored tokens expands
        // each key and value record once for all the block's queries of a GQA group (instead of
        // once per query), with the causal limit applied per query.
        int blocks = (n + PREFILL_BLOCK - 1) / PREFILL_BLOCK;
        run(store.kvHeads() * blocks, task -> {
            int g = task / blocks;
            int b0 = (task % blocks) * PREFILL_BLOCK;
            int nb = Math.min(PREFILL_BLOCK, n - b0);
            Scratch s = scratch.get();
            s.ensureQueries(group * nb);
            for (int h = 0; h < group; h++) {
                for (int i = 0; i < nb; i++) {
                    // query head g·group + h, position b0 + i sees tokens [0, len − n + b0 + i]
                    s.offsets[h * nb + i] = ((g * group + h) * n + b0 + i) * d;
                    s.visible[h * nb + i] = len - n + b0 + i + 1;
                }
            }
            attendCausal(store, g, q, s.offsets, s.visible, group * nb, len - n + b0 + nb, scale, out);
        });
    }

    /** Queries per prefill block (per GQA group); bounds the score buffer at block·group·length floats. */
    static final int PREFILL_BLOCK = 16;

    /**
     * Softmax attention for the first {@code nq} queries at {@code offsets}, query j seeing only the first
     * {@code visible[j]} of the {@code end} tokens scored.
     */
    private void attendCausal(LayerStore store, int kvHead, float[] q, int[] offsets, int[] visible, int nq, int end,
                              float scale, float[] out) {
        Scratch s = scratch.get();
        int ss = store.queryStateSize();
        int as = store.accumulatorSize();
        s.ensure(ss * nq, end * nq, as * nq);
        float[] sc = s.scores;
        for (int j = 0; j < nq; j++) {
            store.prepareQuery(q, offsets[j], s.state, j * ss);
        }
        store.scores(kvHead, s.state, nq, 0, end, sc, end);
        for (int j = 0; j < nq; j++) {
            int b = j * end;
            int v = visible[j];
            float max = Float.NEGATIVE_INFINITY;
            for (int t = 0; t < v; t++) {
                sc[b + t] *= scale;
                max = Math.max(max, sc[b + t]);
            }
            double sum = 0;
            for (int t = 0; t < v; t++) {
                float e = (float) Math.exp(sc[b + t] - max);
                sc[b + t] = e;
                sum += e;
            }
            float inv = (float) (1.0 / sum);
            for (int t = 0; t < v; t++) {
                sc[b + t] *= inv;
            }
            java.util.Arrays.fill(sc, b + v, b + end, 0f); // future tokens: weight 0 (skipped)
        }
        java.util.Arrays.fill(s.acc, 0, as * nq, 0f);
        store.accumulate(kvHead, sc, end, nq, 0, end, s.acc);
        for (int j = 0; j < nq; j++) {
            store.finish(s.acc, j * as, out, offsets[j]);
        }
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

    private void run(int count, Task task) {
        if (pool == null || count == 1) {
            for (int i = 0; i < count; i++) {
                task.run(i);
            }
            return;
        }
        try {
            pool.submit(() -> IntStream.range(0, count).parallel().forEach(task::run)).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("attention interrupted", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException re) {
                throw re;
            }
            throw new IllegalStateException(e.getCause());
        }
    }

    /**
     * Softmax(q·K[0..len)ᵀ·scale)·V[0..len) for the {@code nq} query heads of KV head {@code kvHead}:
     * query i at q[qo + i·qStride], its output at the same offset of {@code out}.
     */
    private void attendGroup(LayerStore store, int kvHead, float[] q, int qo, int qStride, int nq, int len, float scale,
                             float[] out) {
        Scratch s = scratch.get();
        s.ensureQueries(nq);
        for (int i = 0; i < nq; i++) {
            s.offsets[i] = qo + i * qStride;
            s.visible[i] = len;
        }
        attendCausal(store, kvHead, q, s.offsets, s.visible, nq, len, scale, out);
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
