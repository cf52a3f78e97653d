package io.kvquant.simd;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link VectorOps} on the Vector API (jdk.incubator.vector). Loaded only when {@link Simd}
 * chooses the vector path, so the library runs without the incubator module. Loops are
 * head / vector body / scalar tail; results match {@link ScalarOps} to float rounding.
 */
final class PanamaOps implements VectorOps {

    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    static final int L = F.length();

    @Override
    public float dot(float[] a, int ao, float[] b, int bo, int n) {
        int i = 0;
        int bound = F.loopBound(n);
        FloatVector acc = FloatVector.zero(F);
        if (bound >= 2 * L) {
            FloatVector acc2 = FloatVector.zero(F);
            int b2 = n - n % (2 * L);
            for (; i < b2; i += 2 * L) {
                acc = FloatVector.fromArray(F, a, ao + i).fma(FloatVector.fromArray(F, b, bo + i), acc);
                acc2 = FloatVector.fromArray(F, a, ao + i + L).fma(FloatVector.fromArray(F, b, bo + i + L), acc2);
            }
            acc = acc.add(acc2);
        }
        for (; i < bound; i += L) {
            acc = FloatVector.fromArray(F, a, ao + i).fma(FloatVector.fromArray(F, b, bo + i), acc);
        }
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            s += a[ao + i] * b[bo + i];
        }
        return s;
    }

    @Override
    public void axpy(float alpha, float[] x, int xo, float[] y, int yo, int n) {
        int i = 0;
        int bound = F.loopBound(n);
        FloatVector va = FloatVector.broadcast(F, alpha);
        for (; i < bound; i += L) {
            FloatVector.fromArray(F, x, xo + i).fma(va, FloatVector.fromArray(F, y, yo + i)).intoArray(y, yo + i);
        }
        for (; i < n; i++) {
            y[yo + i] += alpha * x[xo + i];
        }
    }

    @Override
    public void scale(float[] x, int o, int n, float s) {
        int i = 0;
        int bound = F.loopBound(n);
        for (; i < bound; i += L) {
            FloatVector.fromArray(F, x, o + i).mul(s).intoArray(x, o + i);
        }
        for (; i < n; i++) {
            x[o + i] *= s;
        }
    }

    @Override
    public float sumOfSquares(float[] x, int o, int n) {
        int i = 0;
        int bound = F.loopBound(n);
        FloatVector acc = FloatVector.zero(F);
        for (; i < bound; i += L) {
            FloatVector v = FloatVector.fromArray(F, x, o + i);
            acc = v.fma(v, acc);
        }
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            s += x[o + i] * x[o + i];
        }
        return s;
    }

    @Override
    public void multiply(float[] x, int xo, float[] y, int yo, float[] out, int oo, int n) {
        int i = 0;
        int bound = F.loopBound(n);
        for (; i < bound; i += L) {
            FloatVector.fromArray(F, x, xo + i).mul(FloatVector.fromArray(F, y, yo + i)).intoArray(out, oo + i);
        }
        for (; i < n; i++) {
            out[oo + i] = x[xo + i] * y[yo + i];
        }
    }

    @Override
    public void fwht(float[] x, int o, int n) {
        int h = 1;
        // Butterflies narrower than a vector: scalar.
        for (; h < n && h < L; h <<= 1) {
            for (int i = 0; i < n; i += h << 1) {
                for (int j = i; j < i + h; j++) {
                    float a = x[o + j];
                    float b = x[o + j + h];
                    x[o + j] = a + b;
                    x[o + j + h] = a - b;
                }
            }
        }
        // Wide butterflies: whole vectors.
        for (; h < n; h <<= 1) {
            for (int i = 0; i < n; i += h << 1) {
                for (int j = i; j < i + h; j += L) {
                    FloatVector a = FloatVector.fromArray(F, x, o + j);
                    FloatVector b = FloatVector.fromArray(F, x, o + j + h);
                    a.add(b).intoArray(x, o + j);
                    a.sub(b).intoArray(x, o + j + h);
                }
            }
        }
    }

    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VectorSpecies<Float> F8 = FloatVector.SPECIES_256;
    private static final VectorSpecies<Integer> I8 = IntVector.SPECIES_256;
    private static final IntVector[] SHIFTS = new IntVector[5];

    static {
        for (int b = 1; b <= 4; b++) {
            int[] sh = new int[8];
            for (int i = 0; i < 8; i++) {
                sh[i] = i * b;
            }
            SHIFTS[b] = IntVector.fromArray(I8, sh, 0);
        }
    }

    /**
     * Eight codes at a time: the 8·bits bits are one little-endian int, broadcast, shifted per
     * lane, masked, and used as indices into the centroid table held in one or two vectors.
     */
    @Override
    public void decodeCodes(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] out, int oo) {
        if (bits > 4 || table.length < 16) {
            ScalarOps.INSTANCE.decodeCodes(buf, bo, bits, table, n, scale, out, oo);
            return;
        }
        FloatVector t0 = FloatVector.fromArray(F8, table, 0).mul(scale);
        FloatVector t1 = FloatVector.fromArray(F8, table, 8).mul(scale);
        IntVector shifts = SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I8, (1 << bits) - 1);
        int groups = n >>> 3;
        int g = 0;
        if (bits <= 3) {
            for (; g < groups; g++) {
                int word = (int) INT_LE.get(buf, bo + g * bits);
                FloatVector idx = (FloatVector) IntVector.broadcast(I8, word).lanewise(VectorOperators.LSHR, shifts).and(mask)
                        .convert(VectorOperators.I2F, 0);
                idx.selectFrom(t0).intoArray(out, oo + (g << 3));
            }
        } else {
            // 16 centroids: look up the low 3 bits in both halves and blend on the high bit
            IntVector seven = IntVector.broadcast(I8, 7);
            for (; g < groups; g++) {
                int word = (int) INT_LE.get(buf, bo + g * bits);
                IntVector v = IntVector.broadcast(I8, word).lanewise(VectorOperators.LSHR, shifts).and(mask);
                FloatVector lo = (FloatVector) v.and(seven).convert(VectorOperators.I2F, 0);
                var high = v.compare(VectorOperators.GT, 7).cast(F8);
                lo.selectFrom(t0).blend(lo.selectFrom(t1), high).intoArray(out, oo + (g << 3));
            }
        }
        int done = groups << 3;
        if (done < n) {
            // tail: codes continue at bit offset done·bits, which is byte aligned (done is a multiple of 8)
            ScalarOps.INSTANCE.decodeCodes(buf, bo + done * bits / 8, bits, table, n - done, scale, out, oo + done);
        }
    }

    /** Eight centroid values for code group g (bits ≤ 4, table in t0/t1). */
    private static FloatVector lanes(byte[] buf, int bo, int bits, int g, IntVector shifts, IntVector mask,
                                     FloatVector t0, FloatVector t1) {
        int word = (int) INT_LE.get(buf, bo + g * bits);
        IntVector v = IntVector.broadcast(I8, word).lanewise(VectorOperators.LSHR, shifts).and(mask);
        if (bits <= 3) {
            return ((FloatVector) v.convert(VectorOperators.I2F, 0)).selectFrom(t0);
        }
        FloatVector lo = (FloatVector) v.and(7).convert(VectorOperators.I2F, 0);
        var high = v.compare(VectorOperators.GT, 7).cast(F8);
        return lo.selectFrom(t0).blend(lo.selectFrom(t1), high);
    }

    @Override
    public void decodeDot(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] q, int qo, int qs, int nq,
                          float[] out, int oo, int os) {
        if (bits > 4 || table.length < 16 || F8.length() != 8) {
            ScalarOps.INSTANCE.decodeDot(buf, bo, bits, table, n, scale, q, qo, qs, nq, out, oo, os);
            return;
        }
        FloatVector t0 = FloatVector.fromArray(F8, table, 0);
        FloatVector t1 = FloatVector.fromArray(F8, table, 8);
        IntVector shifts = SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I8, (1 << bits) - 1);
        int groups = n >>> 3;
        int done = groups << 3;
        // up to four queries per pass, each with its own accumulator in a register
        for (int i0 = 0; i0 < nq; i0 += 4) {
            int m = Math.min(4, nq - i0);
            FloatVector a0 = FloatVector.zero(F8);
            FloatVector a1 = FloatVector.zero(F8);
            FloatVector a2 = FloatVector.zero(F8);
            FloatVector a3 = FloatVector.zero(F8);
            int b0 = qo + i0 * qs;
            for (int g = 0; g < groups; g++) {
                FloatVector c = lanes(buf, bo, bits, g, shifts, mask, t0, t1);
                int j = g << 3;
                a0 = c.fma(FloatVector.fromArray(F8, q, b0 + j), a0);
                if (m > 1) {
                    a1 = c.fma(FloatVector.fromArray(F8, q, b0 + qs + j), a1);
                }
                if (m > 2) {
                    a2 = c.fma(FloatVector.fromArray(F8, q, b0 + 2 * qs + j), a2);
                }
                if (m > 3) {
                    a3 = c.fma(FloatVector.fromArray(F8, q, b0 + 3 * qs + j), a3);
                }
            }
            out[oo + i0 * os] += scale * a0.reduceLanes(VectorOperators.ADD);
            if (m > 1) {
                out[oo + (i0 + 1) * os] += scale * a1.reduceLanes(VectorOperators.ADD);
            }
            if (m > 2) {
                out[oo + (i0 + 2) * os] += scale * a2.reduceLanes(VectorOperators.ADD);
            }
            if (m > 3) {
                out[oo + (i0 + 3) * os] += scale * a3.reduceLanes(VectorOperators.ADD);
            }
        }
        if (done < n) {
            ScalarOps.INSTANCE.decodeDot(buf, bo + done * bits / 8, bits, table, n - done, scale, q, qo + done, qs, nq, out, oo, os);
        }
    }

    @Override
    public float max(float[] x, int o, int n) {
        int i = 0;
        int bound = F.loopBound(n);
        float m = Float.NEGATIVE_INFINITY;
        if (bound > 0) {
            FloatVector acc = FloatVector.fromArray(F, x, o);
            for (i = L; i < bound; i += L) {
                acc = acc.max(FloatVector.fromArray(F, x, o + i));
            }
            m = acc.reduceLanes(VectorOperators.MAX);
        }
        for (; i < n; i++) {
            m = Math.max(m, x[o + i]);
        }
        return m;
    }

    @Override
    public float expSum(float[] x, int o, int n, float m) {
        int i = 0;
        int bound = F.loopBound(n);
        FloatVector acc = FloatVector.zero(F);
        for (; i < bound; i += L) {
            FloatVector e = FloatVector.fromArray(F, x, o + i).sub(m).lanewise(VectorOperators.EXP);
            e.intoArray(x, o + i);
            acc = acc.add(e);
        }
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            float e = (float) Math.exp(x[o + i] - m);
            x[o + i] = e;
            s += e;
        }
        return s;
    }

    // ---- In-place code kernels -------------------------------------------------------------------
    // A group of L codes (L = vector lanes, 8 or 16) is expanded into one float vector: its L·bits
    // bits are read as one (L = 8) or two (L = 16) little-endian ints, broadcast, shifted per lane,
    // masked, and used as indices into the centroid table held in one or two vectors (the table
    // holds raw float bits as ints, so the look-up is a lane permute without conversions).

    static final VectorSpecies<Integer> I = VectorSpecies.of(int.class, F.vectorShape());
    private static final java.lang.foreign.ValueLayout.OfInt INT_SEG = java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
    private static final java.lang.foreign.ValueLayout.OfShort SHORT_SEG = java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Vector code path: 8 or 16 lanes (a group of L codes is then a whole number of bytes). */
    static final boolean CODE_VECTOR = L == 8 || L == 16;
    private static final IntVector[] CODE_SHIFTS = new IntVector[9];
    private static final jdk.incubator.vector.VectorMask<Integer> UPPER;

    static {
        if (CODE_VECTOR) {
            for (int b = 1; b <= 8; b++) {
                int[] sh = new int[L];
                for (int i = 0; i < L; i++) {
                    sh[i] = (i % 8) * b;
                }
                CODE_SHIFTS[b] = IntVector.fromArray(I, sh, 0);
            }
            boolean[] up = new boolean[L];
            for (int i = 8; i < L; i++) {
                up[i] = true;
            }
            UPPER = jdk.incubator.vector.VectorMask.fromArray(I, up, 0);
        } else {
            UPPER = null;
        }
    }

    /** True when part p of {@code lay} runs on the vector path (else the scalar reference does it). */
    private static boolean vectorPart(CodeLayout lay, int p) {
        return CODE_VECTOR && lay.bits[p] <= 4 && (1 << lay.bits[p]) <= 2 * L && lay.count[p] >= L;
    }

    /** Little-endian int at {@code pos}; near the end of the segment, the bytes that exist, shifted down. */
    private static int word(java.lang.foreign.MemorySegment seg, long pos, long end) {
        if (pos + 4 <= end) {
            return seg.get(INT_SEG, pos);
        }
        return seg.get(INT_SEG, end - 4) >>> (8 * (int) (pos + 4 - end));
    }

    /** The L codes of {@code bits} bits starting at byte {@code pos}, one per int lane. */
    private static IntVector codeLanes(java.lang.foreign.MemorySegment seg, long pos, long end, int bits, IntVector shifts,
                                       IntVector mask) {
        IntVector v = IntVector.broadcast(I, word(seg, pos, end));
        if (L == 16) {
            v = v.blend(IntVector.broadcast(I, word(seg, pos + bits, end)), UPPER);
        }
        return v.lanewise(VectorOperators.LSHR, shifts).and(mask);
    }

    /** Table look-up of int-lane codes: t0 holds entries [0, L), t1 entries [L, 2L) (null when unused). */
    private static FloatVector lookup(IntVector codes, IntVector t0, IntVector t1) {
        IntVector r = codes.selectFrom(t0);
        if (t1 != null) {
            r = r.blend(codes.selectFrom(t1), codes.compare(VectorOperators.GE, L));
        }
        return r.reinterpretAsFloats();
    }

    private static IntVector tableVector(float[] table, int from) {
        return FloatVector.fromArray(F, table, from).reinterpretAsInts();
    }

    @Override
    public void codeScores(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] g, int go, int gs, int nq,
                           float[] out, int oo, int os) {
        int rb = lay.recordBytes;
        for (int i = 0; i < nq; i++) {
            java.util.Arrays.fill(out, oo + i * os, oo + i * os + n, 0f);
        }
        long end = seg.byteSize();
        for (int p = 0; p < lay.parts(); p++) {
            if (!vectorPart(lay, p)) {
                scalarPartScores(lay, p, seg, off, n, g, go, gs, nq, out, oo, os, 0, lay.count[p]);
                continue;
            }
            int bits = lay.bits[p];
            IntVector shifts = CODE_SHIFTS[bits];
            IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
            IntVector t0 = tableVector(lay.table[p], 0);
            IntVector t1 = (1 << bits) > L ? tableVector(lay.table[p], L) : null;
            int groups = lay.count[p] / L;
            int gb = L * bits / 8; // bytes per group
            long co = lay.codeOff[p];
            long so = lay.scaleOff[p];
            int fo = go + lay.featOff[p];
            int t = 0;
            if (nq == 1) {
                // four tokens per pass: one query load feeds four independent FMA chains
                for (; t + 4 <= n; t += 4) {
                    long r0 = off + (long) t * rb;
                    long r1 = r0 + rb;
                    long r2 = r1 + rb;
                    long r3 = r2 + rb;
                    FloatVector a0 = FloatVector.zero(F);
                    FloatVector a1 = FloatVector.zero(F);
                    FloatVector a2 = FloatVector.zero(F);
                    FloatVector a3 = FloatVector.zero(F);
                    for (int k = 0; k < groups; k++) {
                        FloatVector q = FloatVector.fromArray(F, g, fo + k * L);
                        long c = co + (long) k * gb;
                        a0 = lookup(codeLanes(seg, r0 + c, end, bits, shifts, mask), t0, t1).fma(q, a0);
                        a1 = lookup(codeLanes(seg, r1 + c, end, bits, shifts, mask), t0, t1).fma(q, a1);
                        a2 = lookup(codeLanes(seg, r2 + c, end, bits, shifts, mask), t0, t1).fma(q, a2);
                        a3 = lookup(codeLanes(seg, r3 + c, end, bits, shifts, mask), t0, t1).fma(q, a3);
                    }
                    out[oo + t] += half(seg, r0 + so) * a0.reduceLanes(VectorOperators.ADD);
                    out[oo + t + 1] += half(seg, r1 + so) * a1.reduceLanes(VectorOperators.ADD);
                    out[oo + t + 2] += half(seg, r2 + so) * a2.reduceLanes(VectorOperators.ADD);
                    out[oo + t + 3] += half(seg, r3 + so) * a3.reduceLanes(VectorOperators.ADD);
                }
            }
            for (; t < n; t++) {
                long rec = off + (long) t * rb;
                float sc = half(seg, rec + so);
                // up to four queries per pass, each with its own accumulator
                for (int i0 = 0; i0 < nq; i0 += 4) {
                    int m = Math.min(4, nq - i0);
                    FloatVector a0 = FloatVector.zero(F);
                    FloatVector a1 = FloatVector.zero(F);
                    FloatVector a2 = FloatVector.zero(F);
                    FloatVector a3 = FloatVector.zero(F);
                    int b0 = fo + i0 * gs;
                    for (int k = 0; k < groups; k++) {
                        FloatVector c = lookup(codeLanes(seg, rec + co + (long) k * gb, end, bits, shifts, mask), t0, t1);
                        int j = k * L;
                        a0 = c.fma(FloatVector.fromArray(F, g, b0 + j), a0);
                        if (m > 1) {
                            a1 = c.fma(FloatVector.fromArray(F, g, b0 + gs + j), a1);
                        }
                        if (m > 2) {
                            a2 = c.fma(FloatVector.fromArray(F, g, b0 + 2 * gs + j), a2);
                        }
                        if (m > 3) {
                            a3 = c.fma(FloatVector.fromArray(F, g, b0 + 3 * gs + j), a3);
                        }
                    }
                    int ob = oo + i0 * os + t;
                    out[ob] += sc * a0.reduceLanes(VectorOperators.ADD);
                    if (m > 1) {
                        out[ob + os] += sc * a1.reduceLanes(VectorOperators.ADD);
                    }
                    if (m > 2) {
                        out[ob + 2 * os] += sc * a2.reduceLanes(VectorOperators.ADD);
                    }
                    if (m > 3) {
                        out[ob + 3 * os] += sc * a3.reduceLanes(VectorOperators.ADD);
                    }
                }
            }
            if (groups * L < lay.count[p]) {
                scalarPartScores(lay, p, seg, off, n, g, go, gs, nq, out, oo, os, groups * L, lay.count[p]);
            }
        }
    }

    private static float half(java.lang.foreign.MemorySegment seg, long pos) {
        return Float.float16ToFloat(seg.get(SHORT_SEG, pos));
    }

    /** Scalar scores of codes [j0, j1) of part p, added to out. */
    private static void scalarPartScores(CodeLayout lay, int p, java.lang.foreign.MemorySegment seg, long off, int n, float[] g, int go,
                                         int gs, int nq, float[] out, int oo, int os, int j0, int j1) {
        float[] tab = lay.table[p];
        for (int t = 0; t < n; t++) {
            long rec = off + (long) t * lay.recordBytes;
            float sc = ScalarOps.scaleOf(lay, p, seg, rec);
            for (int i = 0; i < nq; i++) {
                int qb = go + i * gs + lay.featOff[p];
                float s = 0f;
                for (int j = j0; j < j1; j++) {
                    s += tab[ScalarOps.code(lay, p, seg, rec, j)] * g[qb + j];
                }
                out[oo + i * os + t] += sc * s;
            }
        }
    }

    @Override
    public void codeAccumulate(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] w, int wo, int ws, int nq,
                               float[] acc, int ao, int as, float[] scratch) {
        int rb = lay.recordBytes;
        long end = seg.byteSize();
        for (int p = 0; p < lay.parts(); p++) {
            int bits = lay.bits[p];
            long so = lay.scaleOff[p];
            // weights with the record's scale folded in, query-major
            for (int t = 0; t < n; t++) {
                float sc = half(seg, off + (long) t * rb + so);
                for (int i = 0; i < nq; i++) {
                    scratch[i * n + t] = w[wo + i * ws + t] * sc;
                }
            }
            int groups = vectorPart(lay, p) ? lay.count[p] / L : 0;
            if (groups > 0) {
                IntVector shifts = CODE_SHIFTS[bits];
                IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
                IntVector t0 = tableVector(lay.table[p], 0);
                IntVector t1 = (1 << bits) > L ? tableVector(lay.table[p], L) : null;
                int gb = L * bits / 8;
                long co = off + lay.codeOff[p];
                // token-major over a block of two output vectors: the accumulators of up to four
                // queries stay in registers for the whole run of tokens
                for (int k = 0; k < groups; k += 2) {
                    boolean two = k + 1 < groups;
                    for (int i0 = 0; i0 < nq; i0 += 4) {
                        int m = Math.min(4, nq - i0);
                        int ab = ao + i0 * as + lay.featOff[p] + k * L;
                        FloatVector a00 = FloatVector.fromArray(F, acc, ab);
                        FloatVector a01 = two ? FloatVector.fromArray(F, acc, ab + L) : FloatVector.zero(F);
                        FloatVector a10 = m > 1 ? FloatVector.fromArray(F, acc, ab + as) : FloatVector.zero(F);
                        FloatVector a11 = m > 1 && two ? FloatVector.fromArray(F, acc, ab + as + L) : FloatVector.zero(F);
                        FloatVector a20 = m > 2 ? FloatVector.fromArray(F, acc, ab + 2 * as) : FloatVector.zero(F);
                        FloatVector a21 = m > 2 && two ? FloatVector.fromArray(F, acc, ab + 2 * as + L) : FloatVector.zero(F);
                        FloatVector a30 = m > 3 ? FloatVector.fromArray(F, acc, ab + 3 * as) : FloatVector.zero(F);
                        FloatVector a31 = m > 3 && two ? FloatVector.fromArray(F, acc, ab + 3 * as + L) : FloatVector.zero(F);
                        int wb = i0 * n;
                        for (int t = 0; t < n; t++) {
                            long pos = co + (long) t * rb + (long) k * gb;
                            FloatVector c0 = lookup(codeLanes(seg, pos, end, bits, shifts, mask), t0, t1);
                            FloatVector c1 = two ? lookup(codeLanes(seg, pos + gb, end, bits, shifts, mask), t0, t1) : c0;
                            FloatVector w0 = FloatVector.broadcast(F, scratch[wb + t]);
                            a00 = c0.fma(w0, a00);
                            a01 = c1.fma(w0, a01);
                            if (m > 1) {
                                FloatVector w1 = FloatVector.broadcast(F, scratch[wb + n + t]);
                                a10 = c0.fma(w1, a10);
                                a11 = c1.fma(w1, a11);
                            }
                            if (m > 2) {
                                FloatVector w2 = FloatVector.broadcast(F, scratch[wb + 2 * n + t]);
                                a20 = c0.fma(w2, a20);
                                a21 = c1.fma(w2, a21);
                            }
                            if (m > 3) {
                                FloatVector w3 = FloatVector.broadcast(F, scratch[wb + 3 * n + t]);
                                a30 = c0.fma(w3, a30);
                                a31 = c1.fma(w3, a31);
                            }
                        }
                        a00.intoArray(acc, ab);
                        if (two) {
                            a01.intoArray(acc, ab + L);
                        }
                        if (m > 1) {
                            a10.intoArray(acc, ab + as);
                            if (two) {
                                a11.intoArray(acc, ab + as + L);
                            }
                        }
                        if (m > 2) {
                            a20.intoArray(acc, ab + 2 * as);
                            if (two) {
                                a21.intoArray(acc, ab + 2 * as + L);
                            }
                        }
                        if (m > 3) {
                            a30.intoArray(acc, ab + 3 * as);
                            if (two) {
                                a31.intoArray(acc, ab + 3 * as + L);
                            }
                        }
                    }
                }
            }
            int j0 = groups * L;
            if (j0 < lay.count[p]) {
                float[] tab = lay.table[p];
                for (int t = 0; t < n; t++) {
                    long rec = off + (long) t * rb;
                    for (int i = 0; i < nq; i++) {
                        float wn = scratch[i * n + t];
                        int a = ao + i * as + lay.featOff[p];
                        for (int j = j0; j < lay.count[p]; j++) {
                            acc[a + j] += wn * tab[ScalarOps.code(lay, p, seg, rec, j)];
                        }
                    }
                }
            }
        }
    }

    @Override
    public void codeDecode(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, float[] out, int oo) {
        long end = seg.byteSize();
        for (int p = 0; p < lay.parts(); p++) {
            float sc = half(seg, off + lay.scaleOff[p]);
            int groups = vectorPart(lay, p) ? lay.count[p] / L : 0;
            int o = oo + lay.featOff[p];
            if (groups > 0) {
                int bits = lay.bits[p];
                IntVector shifts = CODE_SHIFTS[bits];
                IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
                IntVector t0 = tableVector(lay.table[p], 0);
                IntVector t1 = (1 << bits) > L ? tableVector(lay.table[p], L) : null;
                int gb = L * bits / 8;
                long co = off + lay.codeOff[p];
                for (int k = 0; k < groups; k++) {
                    lookup(codeLanes(seg, co + (long) k * gb, end, bits, shifts, mask), t0, t1).mul(sc).intoArray(out, o + k * L);
                }
            }
            float[] tab = lay.table[p];
            for (int j = groups * L; j < lay.count[p]; j++) {
                out[o + j] = sc * tab[ScalarOps.code(lay, p, seg, off, j)];
            }
        }
    }

    @Override
    public String name() {
        return "vector(" + F.vectorBitSize() + "-bit)";
    }
}
