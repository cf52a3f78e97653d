package io.kvquant.cache;

import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Dense fp32 or fp16 storage of one layer: the baselines, and boundary layers of compressed caches. */
final class DenseStore implements LayerStore {

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort F16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    private final int heads;
    private final int dim;
    private final boolean half;
    private final PagedRecords[] keys;
    private final PagedRecords[] values;
    private final ThreadLocal<float[]> row;
    private final ThreadLocal<short[]> shorts;
    private int length;

    DenseStore(Arena arena, int heads, int dim, boolean half, int pageTokens) {
        this.heads = heads;
        this.dim = dim;
        this.half = half;
        keys = new PagedRecords[heads];
        values = new PagedRecords[heads];
        int rb = dim * (half ? 2 : 4);
        for (int h = 0; h < heads; h++) {
            keys[h] = new PagedRecords(arena, rb, pageTokens);
            values[h] = new PagedRecords(arena, rb, pageTokens);
        }
        row = ThreadLocal.withInitial(() -> new float[dim]);
        shorts = ThreadLocal.withInitial(() -> new short[dim]);
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

    @Override
    public void append(float[] k, float[] v, int tokens) {
        int newLen = length + tokens;
        for (int h = 0; h < heads; h++) {
            keys[h].ensureCapacity(newLen);
            values[h].ensureCapacity(newLen);
        }
        short[] tmp = shorts.get();
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < tokens; i++) {
                int src = (h * tokens + i) * dim;
                int t = length + i;
                write(keys[h], t, k, src, tmp);
                write(values[h], t, v, src, tmp);
            }
        }
        length = newLen;
    }

    private void write(PagedRecords pr, int t, float[] x, int src, short[] tmp) {
        MemorySegment page = pr.page(t);
        long off = pr.offset(t);
        if (half) {
            for (int j = 0; j < dim; j++) {
                tmp[j] = Float.floatToFloat16(x[src + j]);
            }
            MemorySegment.copy(tmp, 0, page, F16, off, dim);
        } else {
            MemorySegment.copy(x, src, page, F32, off, dim);
        }
    }

    private void load(PagedRecords pr, int t, float[] out, int oo) {
        MemorySegment page = pr.page(t);
        long off = pr.offset(t);
        if (half) {
            short[] tmp = shorts.get();
            MemorySegment.copy(page, F16, off, tmp, 0, dim);
            for (int j = 0; j < dim; j++) {
                out[oo + j] = Float.float16ToFloat(tmp[j]);
            }
        } else {
            MemorySegment.copy(page, F32, off, out, oo, dim);
        }
    }

    @Override
    public void read(int from, int to, float[] kOut, float[] vOut) {
        int n = to - from;
        for (int h = 0; h < heads; h++) {
            for (int t = from; t < to; t++) {
                int dst = (h * n + t - from) * dim;
                load(keys[h], t, kOut, dst);
                load(values[h], t, vOut, dst);
            }
        }
    }

    @Override
    public long bytesUsed() {
        return 2L * heads * length * dim * (half ? 2 : 4);
    }

    @Override
    public long bytesAllocated() {
        long b = 0;
        for (int h = 0; h < heads; h++) {
            b += keys[h].bytesAllocated() + values[h].bytesAllocated();
        }
        return b;
    }

    @Override
    public void clear() {
        length = 0;
    }

    @Override
    public void close() {
        length = 0;
    }

    @Override
    public int queryStateSize() {
        return dim;
    }

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        System.arraycopy(q, qo, state, so, dim);
    }

    @Override
    public void scores(int head, float[] states, int nq, int from, int to, float[] out, int stride) {
        VectorOps ops = Simd.ops();
        float[] r = row.get();
        PagedRecords pr = keys[head];
        for (int t = from; t < to; t++) {
            load(pr, t, r, 0);
            for (int i = 0; i < nq; i++) {
                out[i * stride + t - from] = ops.dot(states, i * dim, r, 0, dim);
            }
        }
    }

    @Override
    public int accumulatorSize() {
        return dim;
    }

    @Override
    public void accumulate(int head, float[] p, int stride, int nq, int from, int to, float[] acc) {
        VectorOps ops = Simd.ops();
        float[] r = row.get();
        PagedRecords pr = values[head];
        for (int t = from; t < to; t++) {
            load(pr, t, r, 0);
            for (int i = 0; i < nq; i++) {
                float w = p[i * stride + t - from];
                if (w != 0f) {
                    ops.axpy(w, r, 0, acc, i * dim, dim);
                }
            }
        }
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        System.arraycopy(acc, ao, out, oo, dim);
    }

    // ---- tile expansion (blocked prefill): one form, the vectors themselves ----

    @Override
    public boolean expands() {
        return true;
    }

    @Override
    public int keyWidth(int t) {
        return dim;
    }

    @Override
    public int keyStateOffset(int t) {
        return 0;
    }

    @Override
    public int valueWidth(int t) {
        return dim;
    }

    @Override
    public int valueAccOffset(int t) {
        return 0;
    }

    @Override
    public void expandKeys(int head, int from, int to, float[] dst, int ld) {
        for (int t = from; t < to; t++) {
            load(keys[head], t, dst, (t - from) * ld);
        }
    }

    @Override
    public void expandValues(int head, int from, int to, float[] dst, int ld) {
        for (int t = from; t < to; t++) {
            load(values[head], t, dst, (t - from) * ld);
        }
    }

    // ---- raw records (io.kvquant.persist) ----

    @Override
    public boolean rawRecords() {
        return true;
    }

    @Override
    public int recordTokens() {
        return length;
    }

    @Override
    public int recordBytes(boolean key) {
        return dim * (half ? 2 : 4);
    }

    @Override
    public void exportRecords(boolean key, int head, int from, int to, MemorySegment dst, long off) {
        if (from < 0 || to > length || from > to || head < 0 || head >= heads) {
            throw new IllegalArgumentException("records [" + from + ", " + to + ") of head " + head + " are outside " + length);
        }
        (key ? keys : values)[head].copyOut(from, to, dst, off);
    }

    @Override
    public void importRecords(MemorySegment k, long kOff, MemorySegment v, long vOff, int n, float[] wk, float[] wv, int w) {
        int rb = recordBytes(true);
        for (int h = 0; h < heads; h++) {
            keys[h].copyIn(k, kOff + (long) h * n * rb, length, n);
            values[h].copyIn(v, vOff + (long) h * n * rb, length, n);
        }
        length += n;
        if (w > 0) {
            append(wk, wv, w);
        }
    }
}
