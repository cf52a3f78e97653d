package io.kvquant.attention;

import io.kvquant.cache.LayerStore;
import io.kvquant.simd.Simd;
import io.kvquant.simd.TileOps;
import io.kvquant.simd.VectorOps;
import java.util.Arrays;

/**
 * Blocked (flash-attention style) prefill on a compressed layer: for one KV head and a block of
 * query positions (every query head of the GQA group), the context is walked in tiles of
 * {@link #TILE} tokens; each tile's keys and values are expanded from the cache's codes ONCE into
 * float rows and then met by every query of the block with register-blocked matrix products
 * ({@link TileOps}), the softmax kept online (running maximum and sum per query, the accumulator
 * rescaled when the maximum grows). The causal limit is per query: query j sees tokens below
 * {@code visible[j]}; a tile that a sub-block of queries cannot see is skipped for it.
 *
 * <p>Why this beats the decode kernel for prefill: the decode kernel expands codes per query (or
 * per few queries) inside its dot products; here expansion costs O(tokens · dim) per chunk and
 * the remaining work is dense fp32 products at register speed.
 */
final class BlockedPrefill {

    /** Tokens per tile: the expanded key and value tiles (2 × 128 × featureSize floats, 128 KB at d = 128) stay in L2. */
    static final int TILE = 128;
    /** Queries per score block, a multiple of the six-query register block: their score rows (QB × TILE floats) stay in L1. */
    static final int QB = 36;

    private final ThreadLocal<Scratch> scratch = ThreadLocal.withInitial(Scratch::new);

    private static final class Scratch {
        float[] state = new float[0];
        float[] acc = new float[0];
        float[] max = new float[0];
        double[] sum = new double[0];
        int[] offsets = new int[0];
        int[] visible = new int[0];
        int[] first = new int[0];
        float[] shift = new float[0];
        float[] rows = new float[0];
        float[] kt = new float[0];
        float[] vt = new float[0];
        float[] s = new float[QB * TILE];

        void ensure(int nq, int ss, int as, int width) {
            if (offsets.length < nq) {
                offsets = new int[nq];
                visible = new int[nq];
                first = new int[nq];
                shift = new float[nq];
                max = new float[nq];
                sum = new double[nq];
            }
            if (state.length < nq * ss) {
                state = new float[nq * ss];
            }
            if (acc.length < nq * as) {
                acc = new float[nq * as];
            }
            if (rows.length < TILE * width) {
                rows = new float[TILE * width];
                kt = new float[TILE * width];
                vt = new float[TILE * width];
            }
        }
    }

    /**
     * One task of {@link DecodeAttention#attendPrefill}: KV head {@code g}, chunk positions
     * [b0, b0 + nb) of the {@code n} new queries of every head of the group (query heads
     * g·group .. g·group + group − 1); writes their outputs. Score modifiers as in
     * {@link DecodeAttention}'s tile path ({@link ScoreMods}: window, softcap, ALiBi, sinks);
     * {@code mu}: the layer's key mean when they need true scores from a centering cache, else null.
     */
    void task(LayerStore store, int g, int group, float[] q, int n, int len, int b0, int nb, float scale, float[] out,
              ScoreMods mods, float[] mu) {
        TileOps tiles = TileOps.get();
        VectorOps ops = Simd.ops();
        int d = store.headDim();
        int ss = store.queryStateSize();
        int as = store.accumulatorSize();
        int nq = group * nb;
        int width = Math.max(Math.max(store.keyWidth(0), store.valueWidth(0)),
                Math.max(store.keyWidth(len - 1), store.valueWidth(len - 1)));
        Scratch s = scratch.get();
        s.ensure(nq, ss, as, width);
        for (int h = 0; h < group; h++) {
            for (int i = 0; i < nb; i++) {
                // query head g·group + h at chunk position b0 + i sees tokens [0, len − n + b0 + i]
                int j = h * nb + i;
                s.offsets[j] = ((g * group + h) * n + b0 + i) * d;
                s.visible[j] = len - n + b0 + i + 1;
                store.prepareQuery(q, s.offsets[j], s.state, j * ss);
                ops.scale(s.state, j * ss, ss, scale); // scores come out scaled: one pass less per tile
                s.first[j] = mods.firstVisible(s.visible[j] - 1);
                // a centering cache scores k − μ: the true score adds ⟨q, μ⟩ (softcap, sinks need it)
                s.shift[j] = mu == null ? 0f : scale * ops.dot(q, s.offsets[j], mu, g * d, d);
            }
        }
        boolean changes = mods.changesScores();
        int lowest = Integer.MAX_VALUE;
        for (int j = 0; j < nq; j++) {
            lowest = Math.min(lowest, s.first[j]);
        }
        Arrays.fill(s.acc, 0, nq * as, 0f);
        Arrays.fill(s.max, 0, nq, Float.NEGATIVE_INFINITY);
        Arrays.fill(s.sum, 0, nq, 0.0);
        int lanes = tiles.lanes();
        int end = len - n + b0 + nb;
        float[] sc = s.s;
        for (int t0 = lowest; t0 < end; ) { // tiles before every query's window hold nothing to see
            int t1 = store.formEnd(t0, Math.min(end, t0 + TILE));
            int cnt = t1 - t0;
            int kw = store.keyWidth(t0);
            int ko = store.keyStateOffset(t0);
            int vw = store.valueWidth(t0);
            int vo = store.valueAccOffset(t0);
            // expand the tile once: keys transposed ([kw][TILE], tokens contiguous), values as rows
            store.expandKeys(g, t0, t1, s.rows, kw);
            transpose(s.rows, cnt, kw, s.kt, (cnt + lanes - 1) / lanes * lanes);
            store.expandValues(g, t0, t1, s.vt, vw);
            for (int jb = 0; jb < nq; jb += QB) {
                int m = Math.min(QB, nq - jb);
                int seen = 0;
                int from = Integer.MAX_VALUE;
                for (int r = 0; r < m; r++) {
                    seen = Math.max(seen, s.visible[jb + r]);
                    from = Math.min(from, s.first[jb + r]);
                }
                if (seen <= t0 || from >= t1) {
                    continue; // no query of this block sees the tile
                }
                tiles.scoresT(s.state, jb * ss + ko, ss, m, s.kt, TILE, kw, cnt, sc, 0, TILE);
                for (int r = 0; r < m; r++) {
                    int j = jb + r;
                    int b = r * TILE;
                    int v = Math.max(0, Math.min(cnt, s.visible[j] - t0));
                    // keys [lo, v) of the tile are visible to query j
                    int lo = Math.min(v, Math.max(0, s.first[j] - t0));
                    if (v > lo) {
                        int bl = b + lo;
                        int w = v - lo;
                        if (mu != null) {
                            float sh = s.shift[j];
                            for (int k = bl; k < bl + w; k++) {
                                sc[k] += sh;
                            }
                        }
                        if (changes) {
                            mods.apply(sc, bl, w, g * group + j / nb, s.visible[j] - 1, t0 + lo);
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
                        Arrays.fill(sc, b, b + lo, 0f); // before the window: weight 0
                    }
                    Arrays.fill(sc, b + v, b + cnt, 0f); // tokens this query does not see: weight 0
                }
                tiles.accumulate(sc, 0, TILE, m, s.vt, vw, cnt, vw, s.acc, jb * as + vo, as);
            }
            t0 = t1;
        }
        for (int j = 0; j < nq; j++) {
            // a sink joins the denominator once, at the end
            ops.scale(s.acc, j * as, as, (float) (1.0 / (s.sum[j] + mods.sinkTerm(g * group + j / nb, s.max[j]))));
            store.finish(s.acc, j * as, out, s.offsets[j]);
        }
    }

    /**
     * kt[k·TILE + t] = rows[t·w + k] for t &lt; cnt; columns [cnt, padTo) zeroed. Eight rows at a
     * time: eight sequential read streams (4 KB for w = 128, in L1) and runs of eight contiguous
     * writes, instead of one pass over every row per column.
     */
    private static void transpose(float[] rows, int cnt, int w, float[] kt, int padTo) {
        int t = 0;
        for (; t + 8 <= cnt; t += 8) {
            int r0 = t * w;
            for (int k = 0; k < w; k++) {
                int o = k * TILE + t;
                int r = r0 + k;
                kt[o] = rows[r];
                kt[o + 1] = rows[r + w];
                kt[o + 2] = rows[r + 2 * w];
                kt[o + 3] = rows[r + 3 * w];
                kt[o + 4] = rows[r + 4 * w];
                kt[o + 5] = rows[r + 5 * w];
                kt[o + 6] = rows[r + 6 * w];
                kt[o + 7] = rows[r + 7 * w];
            }
        }
        for (; t < padTo; t++) {
            for (int k = 0; k < w; k++) {
                kt[k * TILE + t] = t < cnt ? rows[t * w + k] : 0f;
            }
        }
    }
}
