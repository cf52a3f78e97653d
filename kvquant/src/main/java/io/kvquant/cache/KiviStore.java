package io.kvquant.cache;

import io.kvquant.codec.BitPacking;
import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * KIVI-style baseline (Liu et al., 2024): keys quantized per channel over groups of G tokens,
 * values per token over groups of G channels, asymmetric min/scale (fp16) and b-bit codes, with
 * a residual of recent tokens in fp32 (at least {@code residual} tokens; tokens move out in whole
 * key groups). Implemented here so comparisons at equal bits are honest.
 */
final class KiviStore implements LayerStore {

    private static final ValueLayout.OfShort F16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    private final int heads;
    private final int dim;
    private final int bits;
    private final int group;
    private final int residual;
    private final int vGroups;         // channel groups per value vector
    private final int vGroupSize;
    private final PagedRecords[] keyGroups;  // one record per group of G tokens
    private final PagedRecords[] vals;       // one record per token
    private final int kCodeBytes;            // per token inside a key group
    private final int vCodeBytes;
    private final float[][] resK;            // per head: ring of (residual + group) tokens
    private final float[][] resV;
    private final int resCap;
    private int length;
    private final ThreadLocal<byte[]> codes;

    KiviStore(Arena arena, int heads, int dim, int bits, int group, int residual, int pageTokens) {
        this.heads = heads;
        this.dim = dim;
        this.bits = bits;
        this.group = group;
        this.residual = residual;
        this.vGroupSize = Math.min(group, dim);
        if (dim % vGroupSize != 0) {
            throw new IllegalArgumentException("KIVI group size " + group + " must divide the head dimension " + dim);
        }
        this.vGroups = dim / vGroupSize;
        kCodeBytes = BitPacking.packedBytes(dim, bits);
        vCodeBytes = BitPacking.packedBytes(dim, bits);
        keyGroups = new PagedRecords[heads];
        vals = new PagedRecords[heads];
        int groupsPerPage = Math.max(1, pageTokens / group);
        for (int h = 0; h < heads; h++) {
            keyGroups[h] = new PagedRecords(arena, group * kCodeBytes + dim * 4, groupsPerPage);
            vals[h] = new PagedRecords(arena, vCodeBytes + vGroups * 4, pageTokens);
        }
        resCap = residual + group;
        resK = new float[heads][resCap * dim];
        resV = new float[heads][resCap * dim];
        codes = ThreadLocal.withInitial(() -> new byte[Math.max(dim, group) + 8]);
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

    /** Tokens held in quantized form: whole groups, leaving at least {@code residual} tokens. */
    private int quantizedFor(int len) {
        int q = Math.max(0, len - residual);
        return q - q % group;
    }

    @Override
    public void append(float[] k, float[] v, int tokens) {
        int newLen = length + tokens;
        int q = quantizedFor(length);
        int newQ = quantizedFor(newLen);
        for (int h = 0; h < heads; h++) {
            keyGroups[h].ensureCapacity(newQ / group);
            vals[h].ensureCapacity(newQ);
        }
        float[] gk = new float[group * dim];
        for (int h = 0; h < heads; h++) {
            for (int g0 = q; g0 < newQ; g0 += group) {
                for (int i = 0; i < group; i++) {
                    int t = g0 + i;
                    float[] ks = t < length ? resK[h] : k;
                    float[] vs = t < length ? resV[h] : v;
                    int off = t < length ? (t % resCap) * dim : (h * tokens + t - length) * dim;
                    System.arraycopy(ks, off, gk, i * dim, dim);
                    writeValue(h, t, vs, off);
                }
                writeKeyGroup(h, g0 / group, gk);
            }
        }
        for (int h = 0; h < heads; h++) {
            for (int t = Math.max(length, newQ); t < newLen; t++) {
                int src = (h * tokens + t - length) * dim;
                System.arraycopy(k, src, resK[h], (t % resCap) * dim, dim);
                System.arraycopy(v, src, resV[h], (t % resCap) * dim, dim);
            }
        }
        length = newLen;
    }

    private static float fp16(float x) {
        return Float.float16ToFloat(Float.floatToFloat16(x));
    }

    private void writeKeyGroup(int h, int g, float[] gk) {
        MemorySegment page = keyGroups[h].page(g);
        long off = keyGroups[h].offset(g);
        int levels = (1 << bits) - 1;
        float[] mn = new float[dim];
        float[] sc = new float[dim];
        for (int c = 0; c < dim; c++) {
            float lo = Float.POSITIVE_INFINITY;
            float hi = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < group; i++) {
                float x = gk[i * dim + c];
                lo = Math.min(lo, x);
                hi = Math.max(hi, x);
            }
            mn[c] = fp16(lo);
            sc[c] = fp16((hi - mn[c]) / levels);
            page.set(F16, off + (long) group * kCodeBytes + c * 2L, Float.floatToFloat16(mn[c]));
            page.set(F16, off + (long) group * kCodeBytes + dim * 2L + c * 2L, Float.floatToFloat16(sc[c]));
        }
        byte[] cd = codes.get();
        byte[] packed = new byte[kCodeBytes];
        for (int i = 0; i < group; i++) {
            for (int c = 0; c < dim; c++) {
                cd[c] = (byte) code(gk[i * dim + c], mn[c], sc[c], levels);
            }
            BitPacking.pack(cd, dim, bits, packed, 0);
            MemorySegment.copy(packed, 0, page, ValueLayout.JAVA_BYTE, off + (long) i * kCodeBytes, kCodeBytes);
        }
    }

    private static int code(float x, float mn, float sc, int levels) {
        if (sc <= 0f || !Float.isFinite(sc)) {
            return 0;
        }
        int c = Math.round((x - mn) / sc);
        return Math.max(0, Math.min(levels, c));
    }

    private void writeValue(int h, int t, float[] v, int off) {
        MemorySegment page = vals[h].page(t);
        long base = vals[h].offset(t);
        int levels = (1 << bits) - 1;
        byte[] cd = codes.get();
        for (int g = 0; g < vGroups; g++) {
            float lo = Float.POSITIVE_INFINITY;
            float hi = Float.NEGATIVE_INFINITY;
            for (int j = g * vGroupSize; j < (g + 1) * vGroupSize; j++) {
                lo = Math.min(lo, v[off + j]);
                hi = Math.max(hi, v[off + j]);
            }
            float mn = fp16(lo);
            float sc = fp16((hi - mn) / levels);
            page.set(F16, base + vCodeBytes + g * 4L, Float.floatToFloat16(mn));
            page.set(F16, base + vCodeBytes + g * 4L + 2, Float.floatToFloat16(sc));
            for (int j = g * vGroupSize; j < (g + 1) * vGroupSize; j++) {
                cd[j] = (byte) code(v[off + j], mn, sc, levels);
            }
        }
        byte[] packed = new byte[vCodeBytes];
        BitPacking.pack(cd, dim, bits, packed, 0);
        MemorySegment.copy(packed, 0, page, ValueLayout.JAVA_BYTE, base, vCodeBytes);
    }

    private void readKey(int h, int t, float[] out, int oo) {
        int g = t / group;
        MemorySegment page = keyGroups[h].page(g);
        long off = keyGroups[h].offset(g);
        byte[] cd = codes.get();
        BitPacking.unpack(page, off + (long) (t % group) * kCodeBytes, dim, bits, cd, new byte[kCodeBytes]);
        long mOff = off + (long) group * kCodeBytes;
        for (int c = 0; c < dim; c++) {
            float mn = Float.float16ToFloat(page.get(F16, mOff + c * 2L));
            float sc = Float.float16ToFloat(page.get(F16, mOff + dim * 2L + c * 2L));
            out[oo + c] = mn + sc * (cd[c] & 0xFF);
        }
    }

    private void readValue(int h, int t, float[] out, int oo) {
        MemorySegment page = vals[h].page(t);
        long base = vals[h].offset(t);
        byte[] cd = codes.get();
        BitPacking.unpack(page, base, dim, bits, cd, new byte[vCodeBytes]);
        for (int g = 0; g < vGroups; g++) {
            float mn = Float.float16ToFloat(page.get(F16, base + vCodeBytes + g * 4L));
            float sc = Float.float16ToFloat(page.get(F16, base + vCodeBytes + g * 4L + 2));
            for (int j = g * vGroupSize; j < (g + 1) * vGroupSize; j++) {
                out[oo + j] = mn + sc * (cd[j] & 0xFF);
            }
        }
    }

    @Override
    public void read(int from, int to, float[] kOut, float[] vOut) {
        int n = to - from;
        int q = quantizedFor(length);
        for (int h = 0; h < heads; h++) {
            for (int t = from; t < to; t++) {
                int dst = (h * n + t - from) * dim;
                if (t < q) {
                    readKey(h, t, kOut, dst);
                    readValue(h, t, vOut, dst);
                } else {
                    System.arraycopy(resK[h], (t % resCap) * dim, kOut, dst, dim);
                    System.arraycopy(resV[h], (t % resCap) * dim, vOut, dst, dim);
                }
            }
        }
    }

    @Override
    public long bytesUsed() {
        long q = quantizedFor(length);
        long r = length - q;
        long keyBytes = (q / group) * ((long) group * kCodeBytes + dim * 4L);
        long valBytes = q * (vCodeBytes + vGroups * 4L);
        return heads * (keyBytes + valBytes + r * 2L * dim * 4);
    }

    @Override
    public long bytesAllocated() {
        long b = 0;
        for (int h = 0; h < heads; h++) {
            b += keyGroups[h].bytesAllocated() + vals[h].bytesAllocated() + 2L * resCap * dim * 4;
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

    // state of one query: [q (dim)] [q·scale per channel, scratch (dim)]
    @Override
    public int queryStateSize() {
        return 2 * dim;
    }

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        System.arraycopy(q, qo, state, so, dim);
    }

    @Override
    public void scores(int head, float[] states, int nq, int from, int to, float[] out, int stride) {
        int q = quantizedFor(length);
        int ss = queryStateSize();
        byte[] cd = codes.get();
        byte[] scratch = new byte[kCodeBytes];
        float[] base = new float[nq];
        int t = from;
        int end = Math.min(to, q);
        while (t < end) {
            int g = t / group;
            MemorySegment page = keyGroups[head].page(g);
            long off = keyGroups[head].offset(g);
            long mOff = off + (long) group * kCodeBytes;
            java.util.Arrays.fill(base, 0f);
            for (int c = 0; c < dim; c++) {
                float mn = Float.float16ToFloat(page.get(F16, mOff + c * 2L));
                float sc = Float.float16ToFloat(page.get(F16, mOff + dim * 2L + c * 2L));
                for (int i = 0; i < nq; i++) {
                    base[i] += states[i * ss + c] * mn;
                    states[i * ss + dim + c] = states[i * ss + c] * sc;
                }
            }
            int gEnd = Math.min(end, (g + 1) * group);
            for (; t < gEnd; t++) {
                BitPacking.unpack(page, off + (long) (t % group) * kCodeBytes, dim, bits, cd, scratch);
                for (int i = 0; i < nq; i++) {
                    float s = base[i];
                    int o = i * ss + dim;
                    for (int c = 0; c < dim; c++) {
                        s += states[o + c] * (cd[c] & 0xFF);
                    }
                    out[i * stride + t - from] = s;
                }
            }
        }
        VectorOps ops = Simd.ops();
        for (; t < to; t++) {
            for (int i = 0; i < nq; i++) {
                out[i * stride + t - from] = ops.dot(states, i * ss, resK[head], (t % resCap) * dim, dim);
            }
        }
    }

    @Override
    public int accumulatorSize() {
        return dim;
    }

    @Override
    public void accumulate(int head, float[] p, int stride, int nq, int from, int to, float[] acc) {
        int q = quantizedFor(length);
        float[] row = new float[dim];
        VectorOps ops = Simd.ops();
        for (int t = from; t < to; t++) {
            float[] src;
            int so;
            if (t < q) {
                readValue(head, t, row, 0);
                src = row;
                so = 0;
            } else {
                src = resV[head];
                so = (t % resCap) * dim;
            }
            for (int i = 0; i < nq; i++) {
                float w = p[i * stride + t - from];
                if (w != 0f) {
                    ops.axpy(w, src, so, acc, i * dim, dim);
                }
            }
        }
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        System.arraycopy(acc, ao, out, oo, dim);
    }
}
