package io.kvquant.cache;

import io.kvquant.codec.VectorCodec;
import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * TurboQuant storage of one layer: one record per token and head for keys and for values
 * (codes, norms, QJL signs), plus a ring of the most recent {@code window} tokens in fp32, or
 * in fp16 ({@code winbits=16}, the presets' default: rows are widened to fp32 as they are read),
 * and between the two, optionally, a middle tier ({@code mid=}): a ring of the {@code mid}
 * tokens after the window as records of codecs with more bits.
 *
 * <p>Tokens [0, c) are records of the store's codecs, [c, m) middle-tier records and [m, length)
 * in the window, with m = length − window and c = m − mid (neither below the imported records).
 * A token leaving the window is encoded by the middle tier's codecs from its window row; one
 * leaving the middle tier is encoded by the store's codecs from its middle-tier decoding (a token
 * that skips a tier, in a long append, is encoded from the data it arrived with). With value
 * rotations ({@code vrot=K}) token t's value record is one of value codec number (t / 128) mod K:
 * each codec's share of a query's value sum is accumulated apart and rotated back in {@link #finish}.
 */
final class TurboStore implements LayerStore {

    private final int heads;
    private final int dim;
    private final int window;
    private final VectorCodec kc;
    private final VectorCodec vc;
    private final VectorCodec[] vcs;   // value codecs, one per value rotation (vcs[0] == vc)
    private final PagedRecords[] keys;
    private final PagedRecords[] values;
    private final float[][] winK;   // per head, window × dim ring (fp32 window), else null
    private final float[][] winV;
    private final short[][] winK16; // per head, window × dim ring (fp16 window), else null
    private final short[][] winV16;
    private final io.kvquant.simd.CodeLayout kLayout;
    private final io.kvquant.simd.CodeLayout vLayout;
    private final io.kvquant.simd.CodeLayout[] vLayouts;
    private static final int VB = KvQuantConfig.VALUE_ROTATION_BLOCK;
    private final int mid;              // middle-tier tokens (0: none)
    private final VectorCodec mkc;      // middle-tier codecs, or null
    private final VectorCodec mvc;
    private final io.kvquant.simd.CodeLayout mkLayout;
    private final io.kvquant.simd.CodeLayout mvLayout;
    private final PagedRecords[] midKeys;   // per head, a ring of mid records (one page, slot t % mid)
    private final PagedRecords[] midValues;
    private int length;
    private int pinned;             // imported records stay records (see importRecords)
    private int midPinned;          // imported middle-tier records stay there (see importTiers); >= pinned

    /**
     * With {@code valueCodecs.length} value rotations: token t's value record is encoded by
     * valueCodecs[(t / {@link KvQuantConfig#VALUE_ROTATION_BLOCK}) mod length] (all of one record size).
     */
    TurboStore(Arena arena, int heads, int dim, VectorCodec keyCodec, VectorCodec[] valueCodecs, int window, int pageTokens,
               boolean window16, int mid, VectorCodec midKeyCodec, VectorCodec midValueCodec) {
        this.heads = heads;
        this.dim = dim;
        this.window = window;
        this.kc = keyCodec;
        this.vc = valueCodecs[0];
        this.vcs = valueCodecs.clone();
        kLayout = keyCodec.codeLayout();
        vLayout = vc.codeLayout();
        if (kLayout == null || vLayout == null) {
            throw new IllegalArgumentException("TurboQuant storage needs codecs with a code layout, got "
                    + keyCodec.describe() + " / " + vc.describe());
        }
        vLayouts = new io.kvquant.simd.CodeLayout[vcs.length];
        for (int i = 0; i < vcs.length; i++) {
            vLayouts[i] = vcs[i].codeLayout();
            if (vLayouts[i] == null || vcs[i].recordBytes() != vc.recordBytes() || vcs[i].featureSize() != vc.featureSize()
                    || vcs[i].dim() != dim) {
                throw new IllegalArgumentException("value rotation " + i + " needs a codec like " + vc.describe() + ", got "
                        + vcs[i].describe());
            }
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
        this.mid = mid;
        if (mid > 0) {
            if (midKeyCodec == null || midValueCodec == null || midKeyCodec.codeLayout() == null
                    || midValueCodec.codeLayout() == null || midKeyCodec.dim() != dim || midValueCodec.dim() != dim) {
                throw new IllegalArgumentException("a middle tier needs codecs of dimension " + dim + " with a code layout");
            }
            mkc = midKeyCodec;
            mvc = midValueCodec;
            mkLayout = mkc.codeLayout();
            mvLayout = mvc.codeLayout();
            midKeys = new PagedRecords[heads];
            midValues = new PagedRecords[heads];
            for (int h = 0; h < heads; h++) { // allocated when the first token enters the tier
                midKeys[h] = new PagedRecords(arena, mkc.recordBytes(), mid);
                midValues[h] = new PagedRecords(arena, mvc.recordBytes(), mid);
            }
        } else {
            mkc = null;
            mvc = null;
            mkLayout = null;
            mvLayout = null;
            midKeys = null;
            midValues = null;
        }
    }

    /** Tokens of the middle tier (0: none). */
    int midTokens() {
        return mid;
    }

    VectorCodec midKeyCodec() {
        return mkc;
    }

    VectorCodec midValueCodec() {
        return mvc;
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

    /** Index of the value codec of token t's record. */
    private int rot(int t) {
        return (t / VB) % vcs.length;
    }

    /** The value codec of token t's record. */
    private VectorCodec vcOf(int t) {
        return vcs[rot(t)];
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

    /** Tokens [0, compressed()) are records of the store's codecs. */
    private int compressed() {
        return lowEnd(midEnd());
    }

    /** Tokens [compressed(), midEnd()) are middle-tier records; the rest, window rows. */
    private int midEnd() {
        return midEnd(length);
    }

    private int midEnd(int len) {
        return Math.max(midPinned, len - window);
    }

    private int lowEnd(int midEnd) {
        return Math.max(pinned, midEnd - mid);
    }

    /** Middle-tier slot of token t in its ring's single page. */
    private long midOffset(PagedRecords ring, int t) {
        return ring.offset(t % mid);
    }

    @Override
    public void append(float[] k, float[] v, int tokens) {
        int newLen = length + tokens;
        int c = compressed();
        int m = midEnd();
        int newM = midEnd(newLen);
        int newC = lowEnd(newM);
        for (int h = 0; h < heads; h++) {
            keys[h].ensureCapacity(newC);
            values[h].ensureCapacity(newC);
            if (mid > 0 && newM > newC) {
                midKeys[h].ensureCapacity(mid);
                midValues[h].ensureCapacity(mid);
            }
        }
        // 1. tokens leaving the window or the middle tier (or never entering them) are encoded;
        //    nothing is visible until length changes. The middle tier's ring slots are rewritten
        //    in step 2, after every record leaving it was re-encoded here.
        for (int h = 0; h < heads; h++) {
            for (int t = c; t < newC; t++) {
                if (t < m) { // leaves the middle tier: from its decoding
                    float[] row = rows(2);
                    mkc.decode(midKeys[h].page(0), midOffset(midKeys[h], t), row, 0);
                    mvc.decode(midValues[h].page(0), midOffset(midValues[h], t), row, dim);
                    kc.encode(row, 0, keys[h].page(t), keys[h].offset(t));
                    vcOf(t).encode(row, dim, values[h].page(t), values[h].offset(t));
                } else if (t < length) { // leaves the window
                    float[] row = windowRows(h, t);
                    kc.encode(row, 0, keys[h].page(t), keys[h].offset(t));
                    vcOf(t).encode(row, dim, values[h].page(t), values[h].offset(t));
                } else { // skips window and tier
                    int off = (h * tokens + t - length) * dim;
                    kc.encode(k, off, keys[h].page(t), keys[h].offset(t));
                    vcOf(t).encode(v, off, values[h].page(t), values[h].offset(t));
                }
            }
        }
        // 2. tokens entering the middle tier (from the window, or arriving past it) are encoded
        //    into its ring
        for (int h = 0; h < heads; h++) {
            for (int t = Math.max(newC, m); t < newM; t++) {
                if (t < length) {
                    float[] row = windowRows(h, t);
                    mkc.encode(row, 0, midKeys[h].page(0), midOffset(midKeys[h], t));
                    mvc.encode(row, dim, midValues[h].page(0), midOffset(midValues[h], t));
                } else {
                    int o = (h * tokens + t - length) * dim;
                    mkc.encode(k, o, midKeys[h].page(0), midOffset(midKeys[h], t));
                    mvc.encode(v, o, midValues[h].page(0), midOffset(midValues[h], t));
                }
            }
        }
        // 3. new tokens that stay in the window are copied into the ring
        for (int h = 0; h < heads; h++) {
            for (int t = Math.max(newM, length); t < newLen; t++) {
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
        int m = midEnd();
        for (int h = 0; h < heads; h++) {
            for (int t = from; t < to; t++) {
                int dst = (h * n + t - from) * dim;
                if (t < c) {
                    kc.decode(keys[h].page(t), keys[h].offset(t), kOut, dst);
                    vcOf(t).decode(values[h].page(t), values[h].offset(t), vOut, dst);
                } else if (t < m) {
                    mkc.decode(midKeys[h].page(0), midOffset(midKeys[h], t), kOut, dst);
                    mvc.decode(midValues[h].page(0), midOffset(midValues[h], t), vOut, dst);
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

    /** As {@link #read}, with middle-tier tokens decoded from the records they become on leaving the tier. */
    void readAsRecords(int from, int to, float[] kOut, float[] vOut) {
        read(from, to, kOut, vOut);
        int c = compressed();
        int m = midEnd();
        int n = to - from;
        if (mid == 0 || Math.max(from, c) >= Math.min(to, m)) {
            return;
        }
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment kr = a.allocate(kc.recordBytes());
            MemorySegment vr = a.allocate(vc.recordBytes());
            for (int h = 0; h < heads; h++) {
                for (int t = Math.max(from, c); t < Math.min(to, m); t++) {
                    int dst = (h * n + t - from) * dim;
                    kc.encode(kOut, dst, kr, 0);
                    kc.decode(kr, 0, kOut, dst);
                    vcOf(t).encode(vOut, dst, vr, 0);
                    vcOf(t).decode(vr, 0, vOut, dst);
                }
            }
        }
    }

    @Override
    public long bytesUsed() {
        long c = compressed();
        long m = midEnd();
        long w = length - m;
        return heads * (c * (kc.recordBytes() + vc.recordBytes()) + (m - c) * (mid > 0 ? mkc.recordBytes() + mvc.recordBytes() : 0)
                + w * 2L * dim * windowBytes());
    }

    @Override
    public long bytesAllocated() {
        long b = 0;
        for (int h = 0; h < heads; h++) {
            b += keys[h].bytesAllocated() + values[h].bytesAllocated() + 2L * window * dim * windowBytes();
            if (mid > 0) {
                b += midKeys[h].bytesAllocated() + midValues[h].bytesAllocated();
            }
        }
        return b;
    }

    @Override
    public void clear() {
        length = 0;
        pinned = 0;
        midPinned = 0;
    }

    @Override
    public void close() {
        clear();
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

    // state of one query: [g(q) for the key codec (featureSize)] [g(q) for the middle tier's key
    // codec, if any] [raw q (dim)] for window tokens
    @Override
    public int queryStateSize() {
        return kc.featureSize() + midKeyFeatures() + dim;
    }

    private int midKeyFeatures() {
        return mid > 0 ? mkc.featureSize() : 0;
    }

    private int midValueFeatures() {
        return mid > 0 ? mvc.featureSize() : 0;
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
        if (mid > 0) {
            mkc.queryFeatures(q, qo, state, so + kc.featureSize());
        }
        System.arraycopy(q, qo, state, so + kc.featureSize() + midKeyFeatures(), dim);
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
        end = Math.min(to, midEnd());
        while (t < end) { // middle tier: runs up to the ring's wrap
            PagedRecords ring = midKeys[head];
            int n = Math.min(end - t, mid - t % mid);
            ops.codeScores(mkLayout, ring.page(0), midOffset(ring, t), n, states, fs, ss, nq, out, t - from, stride);
            t += n;
        }
        fs += midKeyFeatures();
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

    // accumulator of one query: [Σ w·f(v) (value featureSize), one per value rotation] [the same
    // for the middle tier's value codec, if any] [Σ w·v for window tokens (dim)]
    @Override
    public int accumulatorSize() {
        return vcs.length * vc.featureSize() + midValueFeatures() + dim;
    }

    @Override
    public void accumulate(int head, float[] p, int stride, int nq, int from, int to, float[] acc) {
        VectorOps ops = Simd.ops();
        int c = compressed();
        int fs1 = vc.featureSize();
        int fs = vcs.length * fs1;
        int as = accumulatorSize();
        PagedRecords pr = values[head];
        float[] scratch = weights((nq + 1) * RUN);
        int end = Math.min(to, c);
        int t = from;
        while (t < end) { // runs within one page and one value rotation's block
            int n = Math.min(RUN, Math.min(Math.min(end, (t / VB + 1) * VB), (t / pr.pageTokens() + 1) * pr.pageTokens()) - t);
            int r = rot(t);
            ops.codeAccumulate(vLayouts[r], pr.page(t), pr.offset(t), n, p, t - from, stride, nq, acc, r * fs1, as, scratch);
            t += n;
        }
        end = Math.min(to, midEnd());
        while (t < end) {
            PagedRecords ring = midValues[head];
            int n = Math.min(RUN, Math.min(end - t, mid - t % mid));
            ops.codeAccumulate(mvLayout, ring.page(0), midOffset(ring, t), n, p, t - from, stride, nq, acc, fs, as, scratch);
            t += n;
        }
        fs += midValueFeatures();
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
        for (int r = 1; r < vcs.length; r++, a += vc.featureSize()) {
            addFinished(vcs[r], acc, a, out, oo);
        }
        if (mid > 0) {
            addFinished(mvc, acc, a, out, oo);
            a += mvc.featureSize();
        }
        for (int j = 0; j < dim; j++) {
            out[oo + j] += acc[a + j];
        }
    }

    /** Adds {@code codec}'s finished share (its accumulator slice at {@code a}, rotated back) to out. */
    private void addFinished(VectorCodec codec, float[] acc, int a, float[] out, int oo) {
        float[] t = rows(1);
        codec.finishFeatures(acc, a, t, 0);
        for (int j = 0; j < dim; j++) {
            out[oo + j] += t[j];
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
        int m = midEnd();
        // records: also cut at value-rotation blocks (one codec per tile)
        return from < c ? Math.min(Math.min(to, c), vcs.length > 1 ? (from / VB + 1) * VB : to) : from < m ? Math.min(to, m) : to;
    }

    @Override
    public int keyWidth(int t) {
        return t < compressed() ? kc.featureSize() : t < midEnd() ? mkc.featureSize() : dim;
    }

    @Override
    public int keyStateOffset(int t) {
        return t < compressed() ? 0 : t < midEnd() ? kc.featureSize() : kc.featureSize() + midKeyFeatures();
    }

    @Override
    public int valueWidth(int t) {
        return t < compressed() ? vc.featureSize() : t < midEnd() ? mvc.featureSize() : dim;
    }

    @Override
    public int valueAccOffset(int t) {
        int fs = vcs.length * vc.featureSize();
        return t < compressed() ? rot(t) * vc.featureSize() : t < midEnd() ? fs : fs + midValueFeatures();
    }

    @Override
    public void expandKeys(int head, int from, int to, float[] dst, int ld) {
        expand(keys[head], kLayout, mid > 0 ? midKeys[head] : null, mkLayout, winK16 != null ? null : winK[head],
                winK16 != null ? winK16[head] : null, from, to, dst, ld);
    }

    @Override
    public void expandValues(int head, int from, int to, float[] dst, int ld) {
        expand(values[head], from < compressed() ? vLayouts[rot(from)] : vLayout, mid > 0 ? midValues[head] : null, mvLayout,
                winV16 != null ? null : winV[head], winV16 != null ? winV16[head] : null, from, to, dst, ld);
    }

    /**
     * Codes to feature rows (the store's or the middle tier's), or window rows (fp32 {@code win},
     * or fp16 {@code win16} widened); [from, to) lies within one of the three (see {@link #formEnd}).
     */
    private void expand(PagedRecords pr, io.kvquant.simd.CodeLayout lay, PagedRecords ring, io.kvquant.simd.CodeLayout midLay,
                        float[] win, short[] win16, int from, int to, float[] dst, int ld) {
        int c = compressed();
        if (from < c) {
            VectorOps ops = Simd.ops();
            for (int t = from; t < to; t++) {
                ops.codeDecode(lay, pr.page(t), pr.offset(t), dst, (t - from) * ld);
            }
        } else if (from < midEnd()) {
            VectorOps ops = Simd.ops();
            for (int t = from; t < to; t++) {
                ops.codeDecode(midLay, ring.page(0), midOffset(ring, t), dst, (t - from) * ld);
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

    /** Token {@code t}'s key row then value row from the window ring, in a per-thread scratch of two rows. */
    private float[] windowRows(int h, int t) {
        float[] row = rows(2);
        int w = (t % window) * dim;
        if (winK16 != null) {
            widen(winK16[h], w, row, 0);
            widen(winV16[h], w, row, dim);
        } else {
            System.arraycopy(winK[h], w, row, 0, dim);
            System.arraycopy(winV[h], w, row, dim, dim);
        }
        return row;
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
    public int blockTokens() {
        return midEnd();
    }

    @Override
    public void exportRecords(boolean key, int head, int from, int to, MemorySegment dst, long off) {
        if (from < 0 || to > midEnd() || from > to || head < 0 || head >= heads) {
            throw new IllegalArgumentException("records [" + from + ", " + to + ") of head " + head + " are not all compressed");
        }
        int c = compressed();
        (key ? keys : values)[head].copyOut(from, Math.min(to, c), dst, off);
        // middle-tier tokens: the records they become on leaving the tier (encoded from its decoding)
        VectorCodec tier = key ? mkc : mvc;
        PagedRecords ring = mid > 0 ? (key ? midKeys : midValues)[head] : null;
        for (int t = Math.max(from, c); t < to; t++) {
            VectorCodec codec = key ? kc : vcOf(t);
            float[] row = rows(1);
            tier.decode(ring.page(0), midOffset(ring, t), row, 0);
            codec.encode(row, 0, dst, off + (long) (t - from) * codec.recordBytes());
        }
    }

    @Override
    public void importRecords(MemorySegment k, long kOff, MemorySegment v, long vOff, int n, float[] wk, float[] wv, int w) {
        importTiers(k, kOff, v, vOff, n, null, 0, wk, wv, w);
    }

    /**
     * Appends {@code n} raw records, then {@code midUse} middle-tier records (the first of each
     * head's in {@code midRec}, laid out as {@link #exportMidRecords} writes them), then {@code w}
     * decoded tokens into the window. Every
     * token stays in its tier and reads back exactly as saved, even those that a cache computing
     * these tokens would still hold in its window (an fp16 window could not hold their decoding
     * exactly); later tokens move on as usual. Only into a store holding no middle-tier or window
     * token; nothing changes on failure.
     */
    void importTiers(MemorySegment k, long kOff, MemorySegment v, long vOff, int n, byte[] midRec, int midUse, float[] wk,
                     float[] wv, int w) {
        if (length != midEnd()) {
            throw new IllegalArgumentException("records are imported into a store without window tokens (this one holds "
                    + (length - midEnd()) + ")");
        }
        if (length != compressed()) {
            throw new IllegalArgumentException("records are imported into a store without middle-tier tokens (this one holds "
                    + (length - compressed()) + ")");
        }
        if (w > window) {
            throw new IllegalArgumentException(w + " decoded tokens after " + n + " records" + (midUse > 0 ? " and " + midUse
                    + " middle-tier records" : "") + " do not fit a window of " + window);
        }
        int midSaved = 0;
        if (midUse > 0) {
            if (mid == 0) {
                throw new IllegalArgumentException("middle-tier records for a store without a middle tier");
            }
            int per = heads * (mkc.recordBytes() + mvc.recordBytes());
            midSaved = midRec.length / per;
            if (midRec.length % per != 0 || midUse > midSaved || midSaved > mid) {
                throw new IllegalArgumentException(midUse + " middle-tier tokens of " + heads + " heads x (" + mkc.recordBytes()
                        + " + " + mvc.recordBytes() + ") bytes are not in " + midRec.length + " bytes of saved records "
                        + "(a middle tier of " + mid + ")");
            }
        }
        int at = length;
        int krb = kc.recordBytes();
        int vrb = vc.recordBytes();
        for (int h = 0; h < heads; h++) {
            keys[h].copyIn(k, kOff + (long) h * n * krb, at, n);
            values[h].copyIn(v, vOff + (long) h * n * vrb, at, n);
        }
        if (midUse > 0) {
            int o = 0;
            for (PagedRecords[] rings : new PagedRecords[][] {midKeys, midValues}) {
                for (int h = 0; h < heads; h++) {
                    PagedRecords ring = rings[h];
                    ring.ensureCapacity(mid);
                    int rb = ring.recordBytes();
                    for (int i = 0; i < midUse; i++) {
                        int t = at + n + i;
                        MemorySegment.copy(midRec, o + i * rb, ring.page(0), java.lang.foreign.ValueLayout.JAVA_BYTE,
                                midOffset(ring, t), rb);
                    }
                    o += midSaved * rb;
                }
            }
        }
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < w; i++) {
                putWindow(h, at + n + midUse + i, wk, (h * w + i) * dim, wv, (h * w + i) * dim);
            }
        }
        pinned = at + n;
        midPinned = at + n + midUse;
        length = at + n + midUse + w;
    }

    /**
     * The middle tier's records in token order, keys then values: [head][token][record bytes]
     * each (for saving a cache exactly; null without a middle tier or when it holds nothing).
     */
    byte[] exportMidRecords() {
        int n = midEnd() - compressed();
        if (mid == 0 || n == 0) {
            return null;
        }
        int krb = mkc.recordBytes();
        int vrb = mvc.recordBytes();
        byte[] out = new byte[heads * n * (krb + vrb)];
        int c = compressed();
        int o = 0;
        for (PagedRecords[] rings : new PagedRecords[][] {midKeys, midValues}) {
            for (int h = 0; h < heads; h++) {
                PagedRecords ring = rings[h];
                int rb = ring.recordBytes();
                for (int t = c; t < c + n; t++) {
                    MemorySegment.copy(ring.page(0), java.lang.foreign.ValueLayout.JAVA_BYTE, midOffset(ring, t), out, o, rb);
                    o += rb;
                }
            }
        }
        return out;
    }
}
