package io.kvquant.cache;

import io.kvquant.codec.VectorCodec;
import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * TurboQuant storage of one layer: one record per token and head for keys and for values
 * (codes, norms, QJL signs), plus a ring of the most recent {@code window} tokens in fp32, or
 * in fp16 ({@code winbits=16}, the presets' default: rows are widened to fp32 as they are read).
 * Tokens [0, length − window) are compressed; the rest are in the window.
 */
final class TurboStore implements LayerStore {

    private final int heads;
    private final int dim;
    private final int window;
    private final VectorCodec kc;
    private final VectorCodec vc;
    private final PagedRecords[] keys;
    private final PagedRecords[] values;
    private final float[][] winK;   // per head, window × dim ring (fp32 window), else null
    private final float[][] winV;
    private final short[][] winK16; // per head, window × dim ring (fp16 window), else null
    private final short[][] winV16;
    private final io.kvquant.simd.CodeLayout kLayout;
    private final io.kvquant.simd.CodeLayout vLayout;
    private int length;
    private int pinned;             // imported records stay records (see importRecords)

    TurboStore(Arena arena, int heads, int dim, VectorCodec keyCodec, VectorCodec valueCodec, int window, int pageTokens) {
        this(arena, heads, dim, keyCodec, valueCodec, window, pageTokens, false);
    }

    TurboStore(Arena arena, int heads, int dim, VectorCodec keyCodec, VectorCodec valueCodec, int window, int pageTokens,
               boolean window16) {
        this.heads = heads;
        this.dim = dim;
        this.window = window;
        this.kc = keyCodec;
        this.vc = valueCodec;
        kLayout = keyCodec.codeLayout();
        vLayout = valueCodec.codeLayout();
        if (kLayout == null || vLayout == null) {
            throw new IllegalArgumentException("TurboQuant storage needs codecs with a code layout, got "
                    + keyCodec.describe() + " / " + valueCodec.describe());
        }
        keys = new PagedRecords[heads];
        values = new PagedRecords[heads];
        winK = window16 ? null : new float[heads][window * dim];
        winV = window16 ? null : new float[heads][window * dim];
        winK16 = window16 ? new short[heads][window * dim] : null;
        winV16 = window16 ? new short[heads][window * dim] : null;
        for (int h = 0; h < heads; h++) {
            keys[h] = new PagedRecords(arena, kc.recordBytes(), pageTokens);
            values[h] = new PagedRecords(arena, vc.recordBytes(), pageTokens);
        }
    }

    void copyRecords(boolean key, int head, int from, int to, byte[] dst, int dstOff) {
        if (from < 0 || to > compressed() || from > to || head < 0 || head >= heads) {
            throw new IllegalArgumentException("records [" + from + ", " + to + ") of head " + head + " are not all compressed ("
                    + compressed() + " compressed tokens)");
        }
        PagedRecords pr = key ? keys[head] : values[head];
        int rb = pr.recordBytes();
        for (int t = from; t < to; t++) {
            MemorySegment.copy(pr.page(t), java.lang.foreign.ValueLayout.JAVA_BYTE, pr.offset(t), dst,
                    dstOff + (t - from) * rb, rb);
        }
    }

    VectorCodec keyCodec() {
        return kc;
    }

    VectorCodec valueCodec() {
        return vc;
    }

    @Override
    public int kvHeads() {
        return heads;
    }

    @Override
    public int headDim() {
        return dim;
    }

    @Override
    public int length() {
        return length;
    }

    private int compressed() {
        return Math.max(pinned, length - window);
    }

    @Override
    public void append(float[] k, float[] v, int tokens) {
        int newLen = length + tokens;
        int c = compressed();
        int newC = Math.max(pinned, newLen - window);
        for (int h = 0; h < heads; h++) {
            keys[h].ensureCapacity(newC);
            values[h].ensureCapacity(newC);
        }
        // 1. tokens leaving the window (or never entering it) are encoded; nothing is visible
        //    until length changes, so a failure here leaves the cache as it was.
        for (int h = 0; h < heads; h++) {
            for (int t = c; t < newC; t++) {
                float[] ksrc;
                float[] vsrc;
                int off;
                if (t < length && winK16 != null) {
                    float[] row = rows(2);
                    widen(winK16[h], (t % window) * dim, row, 0);
                    widen(winV16[h], (t % window) * dim, row, dim);
                    ksrc = row;
                    vsrc = row;
                    kc.encode(ksrc, 0, keys[h].page(t), keys[h].offset(t));
                    vc.encode(vsrc, dim, values[h].page(t), values[h].offset(t));
                    continue;
                } else if (t < length) {
                    ksrc = winK[h];
                    vsrc = winV[h];
                    off = (t % window) * dim;
                } else {
                    ksrc = k;
                    vsrc = v;
                    off = (h * tokens + t - length) * dim;
                }
                kc.encode(ksrc, off, keys[h].page(t), keys[h].offset(t));
                vc.encode(vsrc, off, values[h].page(t), values[h].offset(t));
            }
        }
        // 2. new tokens that stay in the window are copied into the ring
        for (int h = 0; h < heads; h++) {
            for (int t = Math.max(newC, length); t < newLen; t++) {
                int src = (h * tokens + t - length) * dim;
                putWindow(h, t, k, src, v, src);
            }
        }
        length = newLen;
    }

    @Override
    public void read(int from, int to, float[] kOut, float[] vOut) {
        int n = to - from;
        int c = compressed();
        for (int h = 0; h < heads; h++) {
            for (int t = from; t < to; t++) {
                int dst = (h * n + t - from) * dim;
                if (t < c) {
                    kc.decode(keys[h].page(t), keys[h].offset(t), kOut, dst);
                    vc.decode(values[h].page(t), values[h].offset(t), vOut, dst);
                } else if (winK16 != null) {
                    widen(winK16[h], (t % window) * dim, kOut, dst);
                    widen(winV16[h], (t % window) * dim, vOut, dst);
                } else {
                    System.arraycopy(winK[h], (t % window) * dim, kOut, dst, dim);
                    System.arraycopy(winV[h], (t % window) * dim, vOut, dst, dim);
                }
            }
        }
    }

    @Override
    public long bytesUsed() {
        long c = compressed();
        long w = length - c;
        return heads * (c * (kc.recordBytes() + vc.recordBytes()) + w * 2L * dim * windowBytes());
    }

    @Override
    public long bytesAllocated() {
        long b = 0;
        for (int h = 0; h < heads; h++) {
            b += keys[h].bytesAllocated() + values[h].bytesAllocated() + 2L * window * dim * windowBytes();
        }
        return b;
    }

    @Override
    public void clear() {
        length = 0;
        pinned = 0;
    }

    @Override
    public void close() {
        length = 0;
        pinned = 0;
    }

    /** Tokens per kernel call in {@link #accumulate} (bounds the scaled-weight scratch). */
    private static final int RUN = 256;

    private final ThreadLocal<float[]> weightScratch = ThreadLocal.withInitial(() -> new float[0]);

    private float[] weights(int n) {
        float[] f = weightScratch.get();
        if (f.length < n) {
            f = new float[n];
            weightScratch.set(f);
        }
        return f;
    }

    // state of one query: [g(q) for the key codec (featureSize)] [raw q (dim)] for window tokens
    @Override
    public int queryStateSize() {
        return kc.featureSize() + dim;
    }

    /** Per-channel query scale (keys were stored divided by it: {@code kscale}, see LayeredKvCache), or null. */
    private volatile float[] qScale;

    void queryScale(float[] s) {
        qScale = s;
    }

    private final ThreadLocal<float[]> qScratch = ThreadLocal.withInitial(() -> new float[headDim()]);

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        float[] s = qScale;
        if (s != null) { // ⟨q ∘ s, k ⊘ s⟩ = ⟨q, k⟩
            float[] t = qScratch.get();
            for (int j = 0; j < dim; j++) {
                t[j] = q[qo + j] * s[j];
            }
            q = t;
            qo = 0;
        }
        kc.queryFeatures(q, qo, state, so);
        System.arraycopy(q, qo, state, so + kc.featureSize(), dim);
    }

    @Override
    public void scores(int head, float[] states, int nq, int from, int to, float[] out, int stride) {
        VectorOps ops = Simd.ops();
        int c = compressed();
        int fs = kc.featureSize();
        int ss = queryStateSize();
        PagedRecords pr = keys[head];
        int end = Math.min(to, c);
        int t = from;
        while (t < end) {
            // codes are read in place from the page, a run of records at a time
            int n = Math.min(end, (t / pr.pageTokens() + 1) * pr.pageTokens()) - t;
            ops.codeScores(kLayout, pr.page(t), pr.offset(t), n, states, 0, ss, nq, out, t - from, stride);
            t += n;
        }
        for (; t < to; t++) {
            int w = (t % window) * dim;
            float[] row = winK16 == null ? winK[head] : rows(1);
            if (winK16 != null) {
                widen(winK16[head], w, row, 0);
                w = 0;
            }
            for (int i = 0; i < nq; i++) {
                out[i * stride + t - from] = ops.dot(states, i * ss + fs, row, w, dim);
            }
        }
    }

    // accumulator of one query: [Σ w·f(v) (value featureSize)] [Σ w·v for window tokens (dim)]
    @Override
    public int accumulatorSize() {
        return vc.featureSize() + dim;
    }

    @Override
    public void accumulate(int head, float[] p, int stride, int nq, int from, int to, float[] acc) {
        VectorOps ops = Simd.ops();
        int c = compressed();
        int fs = vc.featureSize();
        int as = accumulatorSize();
        PagedRecords pr = values[head];
        float[] scratch = weights((nq + 1) * RUN);
        int end = Math.min(to, c);
        int t = from;
        while (t < end) {
            int n = Math.min(RUN, Math.min(end, (t / pr.pageTokens() + 1) * pr.pageTokens()) - t);
            ops.codeAccumulate(vLayout, pr.page(t), pr.offset(t), n, p, t - from, stride, nq, acc, 0, as, scratch);
            t += n;
        }
        for (; t < to; t++) {
            int w = (t % window) * dim;
            float[] row = winV16 == null ? winV[head] : rows(1);
            if (winV16 != null) {
                widen(winV16[head], w, row, 0);
                w = 0;
            }
            for (int i = 0; i < nq; i++) {
                float x = p[i * stride + t - from];
                if (x != 0f) {
                    ops.axpy(x, row, w, acc, i * as + fs, dim);
                }
            }
        }
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        vc.finishFeatures(acc, ao, out, oo);
        int a = ao + vc.featureSize();
        for (int j = 0; j < dim; j++) {
            out[oo + j] += acc[a + j];
        }
    }

    // ---- tile expansion (blocked prefill): codes -> feature rows, window -> raw rows ----

    @Override
    public boolean expands() {
        return true;
    }

    @Override
    public int formEnd(int from, int to) {
        int c = compressed();
        return from < c ? Math.min(to, c) : to;
    }

    @Override
    public int keyWidth(int t) {
        return t < compressed() ? kc.featureSize() : dim;
    }

    @Override
    public int keyStateOffset(int t) {
        return t < compressed() ? 0 : kc.featureSize();
    }

    @Override
    public int valueWidth(int t) {
        return t < compressed() ? vc.featureSize() : dim;
    }

    @Override
    public int valueAccOffset(int t) {
        return t < compressed() ? 0 : vc.featureSize();
    }

    @Override
    public void expandKeys(int head, int from, int to, float[] dst, int ld) {
        expand(keys[head], kLayout, winK16 != null ? null : winK[head], winK16 != null ? winK16[head] : null, from, to, dst, ld);
    }

    @Override
    public void expandValues(int head, int from, int to, float[] dst, int ld) {
        expand(values[head], vLayout, winV16 != null ? null : winV[head], winV16 != null ? winV16[head] : null, from, to, dst, ld);
    }

    /** Codes to feature rows, or window rows (fp32 {@code win}, or fp16 {@code win16} widened). */
    private void expand(PagedRecords pr, io.kvquant.simd.CodeLayout lay, float[] win, short[] win16, int from, int to, float[] dst,
                        int ld) {
        int c = compressed();
        if (from < c) {
            VectorOps ops = Simd.ops();
            for (int t = from; t < to; t++) {
                ops.codeDecode(lay, pr.page(t), pr.offset(t), dst, (t - from) * ld);
            }
        } else {
            for (int t = from; t < to; t++) {
                if (win16 != null) {
                    widen(win16, (t % window) * dim, dst, (t - from) * ld);
                } else {
                    System.arraycopy(win, (t % window) * dim, dst, (t - from) * ld, dim);
                }
            }
        }
    }


    // ---- the full-precision window (fp32, or fp16 widened on read) ----

    private int windowBytes() {
        return winK16 != null ? 2 : 4;
    }

    private final ThreadLocal<float[]> rowScratch = ThreadLocal.withInitial(() -> new float[0]);

    /** A per-thread scratch of {@code n} rows. */
    private float[] rows(int n) {
        float[] f = rowScratch.get();
        if (f.length < n * dim) {
            f = new float[n * dim];
            rowScratch.set(f);
        }
        return f;
    }

    private void widen(short[] src, int so, float[] dst, int doff) {
        for (int j = 0; j < dim; j++) {
            dst[doff + j] = Float.float16ToFloat(src[so + j]);
        }
    }

    /** Stores token {@code t}'s key and value rows in the window ring (rounded to fp16 for an fp16 window). */
    private void putWindow(int h, int t, float[] k, int ko, float[] v, int vo) {
        int o = (t % window) * dim;
        if (winK16 == null) {
            System.arraycopy(k, ko, winK[h], o, dim);
            System.arraycopy(v, vo, winV[h], o, dim);
            return;
        }
        for (int j = 0; j < dim; j++) {
            winK16[h][o + j] = Float.floatToFloat16(k[ko + j]);
            winV16[h][o + j] = Float.floatToFloat16(v[vo + j]);
        }
    }

    // ---- raw records (io.kvquant.persist): what is saved is exactly what is held ----

    @Override
    public boolean rawRecords() {
        return true;
    }

    @Override
    public int recordTokens() {
        return compressed();
    }

    @Override
    public int recordBytes(boolean key) {
        return (key ? kc : vc).recordBytes();
    }

    @Override
    public void exportRecords(boolean key, int head, int from, int to, MemorySegment dst, long off) {
        if (from < 0 || to > compressed() || from > to || head < 0 || head >= heads) {
            throw new IllegalArgumentException("records [" + from + ", " + to + ") of head " + head + " are not all compressed");
        }
        (key ? keys : values)[head].copyOut(from, to, dst, off);
    }

    @Override
    public void importRecords(MemorySegment k, long kOff, MemorySegment v, long vOff, int n, float[] wk, float[] wv, int w) {
        if (length != compressed()) {
            throw new IllegalArgumentException("raw records are imported into a store without window tokens (this one holds "
                    + (length - compressed()) + ")");
        }
        int at = length;
        if (w > window) {
            throw new IllegalArgumentException(w + " full-precision tokens after " + n + " records do not fit a window of " + window);
        }
        // the records stay records, even those that a cache computing these tokens would still hold
        // in its window: they read back exactly as saved (an fp16 window could not hold their
        // decoding exactly); later tokens leave the window as usual
        int krb = kc.recordBytes();
        int vrb = vc.recordBytes();
        for (int h = 0; h < heads; h++) {
            keys[h].copyIn(k, kOff + (long) h * n * krb, at, n);
            values[h].copyIn(v, vOff + (long) h * n * vrb, at, n);
            for (int i = 0; i < w; i++) {
                putWindow(h, at + n + i, wk, (h * w + i) * dim, wv, (h * w + i) * dim);
            }
        }
        pinned = at + n;
        length = at + n + w;
    }
}
