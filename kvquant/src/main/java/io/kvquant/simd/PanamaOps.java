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

    // In-vector butterflies of the Walsh–Hadamard transform: for h < L the partner of lane i is
    // lane i ^ h; lanes with bit h clear take a + b, the others a − b (a the lower lane), exactly
    // the scalar butterfly's two operations, so the transform is bit-identical to ScalarOps.fwht.
    private static final jdk.incubator.vector.VectorShuffle<Float> SW1 = swap(1);
    private static final jdk.incubator.vector.VectorShuffle<Float> SW2 = swap(2);
    private static final jdk.incubator.vector.VectorShuffle<Float> SW4 = swap(4);
    private static final jdk.incubator.vector.VectorShuffle<Float> SW8 = swap(8);
    private static final jdk.incubator.vector.VectorMask<Float> HI1 = high(1);
    private static final jdk.incubator.vector.VectorMask<Float> HI2 = high(2);
    private static final jdk.incubator.vector.VectorMask<Float> HI4 = high(4);
    private static final jdk.incubator.vector.VectorMask<Float> HI8 = high(8);
    /** In-vector butterflies for L = 8 or 16 lanes; other widths use scalar small stages. */
    private static final boolean FWHT_IN_VECTOR = L == 8 || L == 16;

    private static jdk.incubator.vector.VectorShuffle<Float> swap(int h) {
        int[] idx = new int[L];
        for (int i = 0; i < L; i++) {
            idx[i] = h < L ? i ^ h : i;
        }
        return jdk.incubator.vector.VectorShuffle.fromArray(F, idx, 0);
    }

    private static jdk.incubator.vector.VectorMask<Float> high(int h) {
        boolean[] m = new boolean[L];
        for (int i = 0; i < L; i++) {
            m[i] = (i & h) != 0;
        }
        return jdk.incubator.vector.VectorMask.fromArray(F, m, 0);
    }

    private static FloatVector butterfly(FloatVector x, jdk.incubator.vector.VectorShuffle<Float> sw,
                                         jdk.incubator.vector.VectorMask<Float> hi) {
        FloatVector y = x.rearrange(sw);
        return x.add(y).blend(y.sub(x), hi);
    }

    @Override
    public void fwht(float[] x, int o, int n) {
        int h = 1;
        if (FWHT_IN_VECTOR && n >= L) {
            // all butterflies narrower than a vector, one vector at a time, in registers
            for (int i = 0; i < n; i += L) {
                FloatVector v = FloatVector.fromArray(F, x, o + i);
                v = butterfly(v, SW1, HI1);
                v = butterfly(v, SW2, HI2);
                v = butterfly(v, SW4, HI4);
                if (L == 16) {
                    v = butterfly(v, SW8, HI8);
                }
                v.intoArray(x, o + i);
            }
            h = L;
        }
        // Butterflies narrower than a vector on other widths: scalar.
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

    // Signs of the in-vector butterflies: +1 on lanes with bit h clear (they take a + b), −1 on the
    // others (they take b' − a' with b' the lower partner): x·s + partner is exactly the scalar
    // butterfly's single addition or subtraction (x·±1 is exact, fma rounds once).
    private static final FloatVector SG1 = signs(1);
    private static final FloatVector SG2 = signs(2);
    private static final FloatVector SG4 = signs(4);
    private static final FloatVector SG8 = signs(8);

    private static FloatVector signs(int h) {
        float[] s = new float[L];
        for (int i = 0; i < L; i++) {
            s[i] = (i & h) != 0 ? -1f : 1f;
        }
        return FloatVector.fromArray(F, s, 0);
    }

    /** One in-vector butterfly (kept tiny so that C2 always inlines it). */
    private static FloatVector bf(FloatVector v, jdk.incubator.vector.VectorShuffle<Float> sw, FloatVector sg) {
        return v.fma(sg, v.rearrange(sw));
    }

    /**
     * The width-1 butterfly with the partner lanes swapped by rotating each 64-bit pair of floats
     * by 32 bits (the Vector API reinterprets lanes in little-endian order, so lane 2k and 2k + 1
     * trade places): the same values as {@code v.rearrange(SW1)}, so the same result bit for bit,
     * but shifts instead of a cross-lane permute, whose latency (about 8 cycles on Zen 3 against
     * 4 for an FMA, measured) made the butterfly chain of a Hadamard round latency-bound.
     */
    private static FloatVector bf1(FloatVector v) {
        return v.fma(SG1, v.reinterpretAsLongs().lanewise(VectorOperators.ROL, 32).reinterpretAsFloats());
    }

    @Override
    public void hadamardRound(float[] x, int xo, float[] y, int yo, int n, float[] pre, float[] post) {
        int nv = n / L;
        if (!FWHT_IN_VECTOR || n % L != 0 || (nv != 4 && nv != 8 && nv != 16)) {
            ScalarOps.hadamardRoundWith(this, x, xo, y, yo, n, pre, post);
            return;
        }
        round(x, xo, y, yo, n, pre, post);
    }

    @Override
    public void hadamardRound(float[] x, int xo, float[] y, int yo, int n, float[] post) {
        int nv = n / L;
        if (!FWHT_IN_VECTOR || n % L != 0 || (nv != 4 && nv != 8 && nv != 16)) {
            VectorOps.super.hadamardRound(x, xo, y, yo, n, post);
            return;
        }
        round(x, xo, y, yo, n, null, post);
    }

    /** The in-register round for 4, 8 or 16 vectors; {@code pre} null means ones. */
    private static void round(float[] x, int xo, float[] y, int yo, int n, float[] pre, float[] post) {
        int nv = n / L;
        // Phase A: blocks of four consecutive vectors: pre-multiply, in-vector butterflies, then the
        // butterflies of widths L and 2L between the four.
        for (int i = 0; i < n; i += 4 * L) {
            FloatVector a = FloatVector.fromArray(F, x, xo + i);
            FloatVector b = FloatVector.fromArray(F, x, xo + i + L);
            FloatVector c = FloatVector.fromArray(F, x, xo + i + 2 * L);
            FloatVector d = FloatVector.fromArray(F, x, xo + i + 3 * L);
            if (pre != null) { // null: pre = ones, skipped (a multiply by one is exact)
                a = a.mul(FloatVector.fromArray(F, pre, i));
                b = b.mul(FloatVector.fromArray(F, pre, i + L));
                c = c.mul(FloatVector.fromArray(F, pre, i + 2 * L));
                d = d.mul(FloatVector.fromArray(F, pre, i + 3 * L));
            }
            // butterflies of widths 1..L/2 inside each vector
            a = bf(bf(bf1(a), SW2, SG2), SW4, SG4);
            b = bf(bf(bf1(b), SW2, SG2), SW4, SG4);
            c = bf(bf(bf1(c), SW2, SG2), SW4, SG4);
            d = bf(bf(bf1(d), SW2, SG2), SW4, SG4);
            if (L == 16) {
                a = bf(a, SW8, SG8);
                b = bf(b, SW8, SG8);
                c = bf(c, SW8, SG8);
                d = bf(d, SW8, SG8);
            }
            FloatVector a1 = a.add(b);
            FloatVector b1 = a.sub(b);
            FloatVector c1 = c.add(d);
            FloatVector d1 = c.sub(d);
            a = a1.add(c1);
            c = a1.sub(c1);
            b = b1.add(d1);
            d = b1.sub(d1);
            if (nv == 4) {
                a = a.mul(FloatVector.fromArray(F, post, i));
                b = b.mul(FloatVector.fromArray(F, post, i + L));
                c = c.mul(FloatVector.fromArray(F, post, i + 2 * L));
                d = d.mul(FloatVector.fromArray(F, post, i + 3 * L));
            }
            a.intoArray(y, yo + i);
            b.intoArray(y, yo + i + L);
            c.intoArray(y, yo + i + 2 * L);
            d.intoArray(y, yo + i + 3 * L);
        }
        if (nv == 8) {
            // width 4L: vectors r and r + 4
            for (int r = 0; r < 4; r++) {
                int i = r * L;
                FloatVector a = FloatVector.fromArray(F, y, yo + i);
                FloatVector b = FloatVector.fromArray(F, y, yo + i + 4 * L);
                (a.add(b)).mul(FloatVector.fromArray(F, post, i)).intoArray(y, yo + i);
                (a.sub(b)).mul(FloatVector.fromArray(F, post, i + 4 * L)).intoArray(y, yo + i + 4 * L);
            }
        } else if (nv == 16) {
            // widths 4L and 8L: vectors r, r + 4, r + 8, r + 12
            for (int r = 0; r < 4; r++) {
                int i = r * L;
                FloatVector a = FloatVector.fromArray(F, y, yo + i);
                FloatVector b = FloatVector.fromArray(F, y, yo + i + 4 * L);
                FloatVector c = FloatVector.fromArray(F, y, yo + i + 8 * L);
                FloatVector d = FloatVector.fromArray(F, y, yo + i + 12 * L);
                FloatVector a1 = a.add(b);
                FloatVector b1 = a.sub(b);
                FloatVector c1 = c.add(d);
                FloatVector d1 = c.sub(d);
                (a1.add(c1)).mul(FloatVector.fromArray(F, post, i)).intoArray(y, yo + i);
                (b1.add(d1)).mul(FloatVector.fromArray(F, post, i + 4 * L)).intoArray(y, yo + i + 4 * L);
                (a1.sub(c1)).mul(FloatVector.fromArray(F, post, i + 8 * L)).intoArray(y, yo + i + 8 * L);
                (b1.sub(d1)).mul(FloatVector.fromArray(F, post, i + 12 * L)).intoArray(y, yo + i + 12 * L);
            }
        }
    }

    private static final VectorSpecies<Double> D = jdk.incubator.vector.DoubleVector.SPECIES_PREFERRED;

    @Override
    public double sumOfSquaresDouble(float[] x, int o, int n) {
        int i = 0;
        double s = 0;
        if (D.vectorBitSize() == F.vectorBitSize() && L >= 4) {
            // each float vector widened in two halves (parts 0 and 1) to doubles; squares exact in double
            jdk.incubator.vector.DoubleVector a0 = jdk.incubator.vector.DoubleVector.zero(D);
            jdk.incubator.vector.DoubleVector a1 = jdk.incubator.vector.DoubleVector.zero(D);
            for (int bound = F.loopBound(n); i < bound; i += L) {
                FloatVector f = FloatVector.fromArray(F, x, o + i);
                jdk.incubator.vector.DoubleVector v0 = (jdk.incubator.vector.DoubleVector) f.convertShape(VectorOperators.F2D, D, 0);
                jdk.incubator.vector.DoubleVector v1 = (jdk.incubator.vector.DoubleVector) f.convertShape(VectorOperators.F2D, D, 1);
                a0 = v0.fma(v0, a0);
                a1 = v1.fma(v1, a1);
            }
            s = a0.add(a1).reduceLanes(VectorOperators.ADD);
        }
        for (; i < n; i++) {
            s += (double) x[o + i] * x[o + i];
        }
        return s;
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
    /** 5i mod 20: a 5-bit code's place in its lane quad's 20 bits (quantizePack5). */
    private static final IntVector QUAD_SHIFTS;
    /** Lanes 4q..4q+3 (the 5-bit code path reads four codes per int word). */
    @SuppressWarnings("unchecked")
    private static final jdk.incubator.vector.VectorMask<Integer>[] QUAD = new jdk.incubator.vector.VectorMask[4];

    static {
        if (CODE_VECTOR) {
            for (int b = 1; b <= 8; b++) {
                int[] sh = new int[L];
                for (int i = 0; i < L; i++) {
                    // 5 bits: lane i's code starts at bit 5i; its quad q = i / 4 is read from the int
                    // word at byte 20q / 8 (bytes 0, 2, 5, 7), so it is shifted by 5i − 8·(20q / 8)
                    sh[i] = b == 5 ? 5 * i - 8 * (20 * (i / 4) / 8) : (i % 8) * b;
                }
                CODE_SHIFTS[b] = IntVector.fromArray(I, sh, 0);
            }
            int[] qs = new int[L];
            for (int i = 0; i < L; i++) {
                qs[i] = 5 * (i % 4);
            }
            QUAD_SHIFTS = IntVector.fromArray(I, qs, 0);
            for (int q = 0; q < 4; q++) {
                boolean[] in = new boolean[L];
                for (int i = 0; i < L; i++) {
                    in[i] = i / 4 == q;
                }
                QUAD[q] = jdk.incubator.vector.VectorMask.fromArray(I, in, 0);
            }
            boolean[] up = new boolean[L];
            for (int i = 8; i < L; i++) {
                up[i] = true;
            }
            UPPER = jdk.incubator.vector.VectorMask.fromArray(I, up, 0);
        } else {
            UPPER = null;
            QUAD_SHIFTS = null;
        }
    }

    /** True when part p of {@code lay} runs on the vector path (else the scalar reference does it). */
    private static boolean vectorPart(CodeLayout lay, int p) {
        return CODE_VECTOR && lay.bits[p] <= 5 && (1 << lay.bits[p]) <= 4 * L && lay.count[p] >= L;
    }

    /**
     * How many of the n records from {@code off} may be read with whole-int code words: a group's
     * word starts inside its record and reads at most 3 bytes past the record's end, so the record
     * must be followed by 4 bytes of the segment. The records after those (the last of a page)
     * are copied to a padded buffer first.
     */
    private static int safeRecords(long off, int rb, int n, long end) {
        long room = end - 4 - off; // record t is safe when (t + 1)·rb <= room
        return (int) Math.max(0, Math.min(n, room / rb));
    }

    private static final ThreadLocal<java.lang.foreign.MemorySegment> PAD = new ThreadLocal<>();

    /** The record at {@code rec} copied to the start of a per-thread buffer with slack after it. */
    private static java.lang.foreign.MemorySegment padded(CodeLayout lay, java.lang.foreign.MemorySegment seg, long rec) {
        java.lang.foreign.MemorySegment pad = PAD.get();
        if (pad == null || pad.byteSize() < lay.recordBytes + 8L) {
            pad = java.lang.foreign.Arena.ofAuto().allocate(Math.max(512, lay.recordBytes + 8L), 64);
            PAD.set(pad);
        }
        java.lang.foreign.MemorySegment.copy(seg, rec, pad, 0, lay.recordBytes);
        return pad;
    }

    /** The L codes of {@code bits} bits starting at byte {@code pos}, one per int lane. */
    private static IntVector codeLanes(java.lang.foreign.MemorySegment seg, long pos, int bits, IntVector shifts, IntVector mask) {
        IntVector v = IntVector.broadcast(I, seg.get(INT_SEG, pos));
        if (bits == 5) { // 4 codes (20 bits) per int word: words at bytes 0, 2 (then 5, 7 for 16 lanes)
            v = v.blend(IntVector.broadcast(I, seg.get(INT_SEG, pos + 2)), QUAD[1]);
            if (L == 16) {
                v = v.blend(IntVector.broadcast(I, seg.get(INT_SEG, pos + 5)), QUAD[2])
                        .blend(IntVector.broadcast(I, seg.get(INT_SEG, pos + 7)), QUAD[3]);
            }
            return v.lanewise(VectorOperators.LSHR, shifts).and(mask);
        }
        if (L == 16) {
            v = v.blend(IntVector.broadcast(I, seg.get(INT_SEG, pos + bits)), UPPER);
        }
        return v.lanewise(VectorOperators.LSHR, shifts).and(mask);
    }

    /**
     * Table look-up of int-lane codes: t0 holds entries [0, L), t1 [L, 2L), t2 and t3 [2L, 4L);
     * {@code tables} of them are used (1, 2 or 4: {@link #tables}).
     */
    private static FloatVector lookup(IntVector codes, IntVector t0, IntVector t1, IntVector t2, IntVector t3, int tables) {
        IntVector r = codes.selectFrom(t0);
        if (tables > 1) {
            r = r.blend(codes.selectFrom(t1), codes.compare(VectorOperators.GE, L));
            if (tables > 2) {
                r = r.blend(codes.selectFrom(t2), codes.compare(VectorOperators.GE, 2 * L));
                r = r.blend(codes.selectFrom(t3), codes.compare(VectorOperators.GE, 3 * L));
            }
        }
        return r.reinterpretAsFloats();
    }

    /** Table vectors a part of {@code bits}-bit codes needs: its 2^bits entries over L lanes. */
    private static int tables(int bits) {
        int t = Math.max(1, (1 << bits) / L);
        return t == 3 ? 4 : t;
    }

    private static IntVector tableVector(float[] table, int from) {
        return FloatVector.fromArray(F, table, from).reinterpretAsInts();
    }

    @Override
    public void codeScores(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] g, int go, int gs, int nq,
                           float[] out, int oo, int os) {
        // the run of records is copied once into a per-thread heap buffer with slack after it: the
        // kernels then read int words from a byte[] (bounds checks C2 hoists out of the loops, and
        // the last record of a page needs no special case)
        for (int t = 0; t < n; t += COPY_RUN) {
            int m = Math.min(COPY_RUN, n - t);
            byte[] buf = codeBuffer(seg, off + (long) t * lay.recordBytes, m, lay.recordBytes);
            scoresRange(lay, buf, 0, m, g, go, gs, nq, out, oo + t, os);
        }
    }

    /** Scores of n records whose word reads all stay inside {@code seg}. */
    private static void scoresRange(CodeLayout lay, byte[] seg, int off, int n, float[] g, int go, int gs,
                                    int nq, float[] out, int oo, int os) {
        int rb = lay.recordBytes;
        for (int i = 0; i < nq; i++) {
            java.util.Arrays.fill(out, oo + i * os, oo + i * os + n, 0f);
        }
        for (int p = 0; p < lay.parts(); p++) {
            if (!vectorPart(lay, p)) {
                scalarPartScores(lay, p, seg, off, n, g, go, gs, nq, out, oo, os, 0, lay.count[p]);
                continue;
            }
            int bits = lay.bits[p];
            int groups = lay.count[p] / L;
            int gb = L * bits / 8; // bytes per group
            int co = lay.codeOff[p];
            int so = lay.scaleOff[p];
            int fo = go + lay.featOff[p];
            int i = 0;
            // eight queries per pass when the group has them: one expansion of the codes for all
            for (; i + 8 <= nq; i += 8) {
                scoresQ8(seg, off, rb, n, bits, lay.table[p], groups, gb, co, so, g, fo + i * gs, gs, out, oo + i * os, os);
            }
            for (; i + 4 <= nq; i += 4) {
                scoresQ4(seg, off, rb, n, bits, lay.table[p], groups, gb, co, so, g, fo + i * gs, gs, out, oo + i * os, os);
            }
            if (i + 2 <= nq) {
                scoresQ2(seg, off, rb, n, bits, lay.table[p], groups, gb, co, so, g, fo + i * gs, gs, out, oo + i * os, os);
                i += 2;
            }
            if (i < nq) {
                scoresQ1(seg, off, rb, n, bits, lay.table[p], groups, gb, co, so, g, fo + i * gs, gs, out, oo + i * os, os);
            }
            if (groups * L < lay.count[p]) {
                scalarPartScores(lay, p, seg, off, n, g, go, gs, nq, out, oo, os, groups * L, lay.count[p]);
            }
        }
    }

    /** Scores of 8 queries (rows g[fo + i·gs]), token by token, each with its own accumulator. */
    private static void scoresQ8(byte[] seg, int off, int rb, int n, int bits, float[] table, int groups, int gb, int co, int so,
                                  float[] g, int fo, int gs, float[] out, int oo, int os) {
        // the look-up vectors are built here, not passed in: a vector argument of a call C2 does
        // not inline is boxed on every call (one allocation per tile and part at decode)
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        for (int t = 0; t < n; t++) {
            int rec = off + t * rb;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            FloatVector a4 = FloatVector.zero(F);
            FloatVector a5 = FloatVector.zero(F);
            FloatVector a6 = FloatVector.zero(F);
            FloatVector a7 = FloatVector.zero(F);
            for (int k = 0; k < groups; k++) {
                FloatVector c = lookup(codeLanes(seg, rec + co + k * gb, bits, shifts, mask), t0, t1, t2, t3, tt);
                int j = fo + k * L;
                a0 = c.fma(FloatVector.fromArray(F, g, j), a0);
                a1 = c.fma(FloatVector.fromArray(F, g, j + gs), a1);
                a2 = c.fma(FloatVector.fromArray(F, g, j + 2 * gs), a2);
                a3 = c.fma(FloatVector.fromArray(F, g, j + 3 * gs), a3);
                a4 = c.fma(FloatVector.fromArray(F, g, j + 4 * gs), a4);
                a5 = c.fma(FloatVector.fromArray(F, g, j + 5 * gs), a5);
                a6 = c.fma(FloatVector.fromArray(F, g, j + 6 * gs), a6);
                a7 = c.fma(FloatVector.fromArray(F, g, j + 7 * gs), a7);
            }
            float sc = half(seg, rec + so);
            out[oo + t] += sc * a0.reduceLanes(VectorOperators.ADD);
            out[oo + t + os] += sc * a1.reduceLanes(VectorOperators.ADD);
            out[oo + t + 2 * os] += sc * a2.reduceLanes(VectorOperators.ADD);
            out[oo + t + 3 * os] += sc * a3.reduceLanes(VectorOperators.ADD);
            out[oo + t + 4 * os] += sc * a4.reduceLanes(VectorOperators.ADD);
            out[oo + t + 5 * os] += sc * a5.reduceLanes(VectorOperators.ADD);
            out[oo + t + 6 * os] += sc * a6.reduceLanes(VectorOperators.ADD);
            out[oo + t + 7 * os] += sc * a7.reduceLanes(VectorOperators.ADD);
        }
    }

    /** Scores of 4 queries (rows g[fo + i·gs]), token by token, each with its own accumulator. */
    private static void scoresQ4(byte[] seg, int off, int rb, int n, int bits, float[] table, int groups, int gb, int co, int so,
                                  float[] g, int fo, int gs, float[] out, int oo, int os) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        for (int t = 0; t < n; t++) {
            int rec = off + t * rb;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            for (int k = 0; k < groups; k++) {
                FloatVector c = lookup(codeLanes(seg, rec + co + k * gb, bits, shifts, mask), t0, t1, t2, t3, tt);
                int j = fo + k * L;
                a0 = c.fma(FloatVector.fromArray(F, g, j), a0);
                a1 = c.fma(FloatVector.fromArray(F, g, j + gs), a1);
                a2 = c.fma(FloatVector.fromArray(F, g, j + 2 * gs), a2);
                a3 = c.fma(FloatVector.fromArray(F, g, j + 3 * gs), a3);
            }
            float sc = half(seg, rec + so);
            out[oo + t] += sc * a0.reduceLanes(VectorOperators.ADD);
            out[oo + t + os] += sc * a1.reduceLanes(VectorOperators.ADD);
            out[oo + t + 2 * os] += sc * a2.reduceLanes(VectorOperators.ADD);
            out[oo + t + 3 * os] += sc * a3.reduceLanes(VectorOperators.ADD);
        }
    }

    /** Scores of 2 queries (rows g[fo + i·gs]), token by token, each with its own accumulator. */
    private static void scoresQ2(byte[] seg, int off, int rb, int n, int bits, float[] table, int groups, int gb, int co, int so,
                                  float[] g, int fo, int gs, float[] out, int oo, int os) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        for (int t = 0; t < n; t++) {
            int rec = off + t * rb;
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            for (int k = 0; k < groups; k++) {
                FloatVector c = lookup(codeLanes(seg, rec + co + k * gb, bits, shifts, mask), t0, t1, t2, t3, tt);
                int j = fo + k * L;
                a0 = c.fma(FloatVector.fromArray(F, g, j), a0);
                a1 = c.fma(FloatVector.fromArray(F, g, j + gs), a1);
            }
            float sc = half(seg, rec + so);
            out[oo + t] += sc * a0.reduceLanes(VectorOperators.ADD);
            out[oo + t + os] += sc * a1.reduceLanes(VectorOperators.ADD);
        }
    }

    /** Scores of 1 query (rows g[fo + i·gs]), token by token, each with its own accumulator. */
    private static void scoresQ1(byte[] seg, int off, int rb, int n, int bits, float[] table, int groups, int gb, int co, int so,
                                  float[] g, int fo, int gs, float[] out, int oo, int os) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        for (int t = 0; t < n; t++) {
            int rec = off + t * rb;
            FloatVector a0 = FloatVector.zero(F);
            for (int k = 0; k < groups; k++) {
                FloatVector c = lookup(codeLanes(seg, rec + co + k * gb, bits, shifts, mask), t0, t1, t2, t3, tt);
                int j = fo + k * L;
                a0 = c.fma(FloatVector.fromArray(F, g, j), a0);
            }
            float sc = half(seg, rec + so);
            out[oo + t] += sc * a0.reduceLanes(VectorOperators.ADD);
        }
    }

    private static float half(java.lang.foreign.MemorySegment seg, long pos) {
        return Float.float16ToFloat(seg.get(SHORT_SEG, pos));
    }

    private static final VarHandle SHORT_LE = MethodHandles.byteArrayViewVarHandle(short[].class, ByteOrder.LITTLE_ENDIAN);

    private static float half(byte[] buf, int pos) {
        return Float.float16ToFloat((short) SHORT_LE.get(buf, pos));
    }

    /** Most records copied at once (callers pass runs of up to 256: one attention tile). */
    private static final int COPY_RUN = 256;
    /** Slack after a copied run: a group's int word reads at most 3 bytes past its record. */
    private static final int SLACK = 8;
    private static final ThreadLocal<byte[]> CODES = ThreadLocal.withInitial(() -> new byte[0]);

    /**
     * Records [off, off + n·rb) of {@code seg} copied (one bulk copy, one bounds check) to the
     * start of this thread's heap buffer, which has at least {@link #SLACK} bytes after them.
     */
    private static byte[] codeBuffer(java.lang.foreign.MemorySegment seg, long off, int n, int rb) {
        int bytes = n * rb;
        byte[] buf = CODES.get();
        if (buf.length < bytes + SLACK) {
            buf = new byte[Math.max(bytes, COPY_RUN * rb) + SLACK];
            CODES.set(buf);
        }
        java.lang.foreign.MemorySegment.copy(seg, java.lang.foreign.ValueLayout.JAVA_BYTE, off, buf, 0, bytes);
        return buf;
    }

    /** As {@link #codeLanes(java.lang.foreign.MemorySegment, long, int, IntVector, IntVector)} from a heap buffer. */
    private static IntVector codeLanes(byte[] buf, int pos, int bits, IntVector shifts, IntVector mask) {
        IntVector v = IntVector.broadcast(I, (int) INT_LE.get(buf, pos));
        if (bits == 5) {
            v = v.blend(IntVector.broadcast(I, (int) INT_LE.get(buf, pos + 2)), QUAD[1]);
            if (L == 16) {
                v = v.blend(IntVector.broadcast(I, (int) INT_LE.get(buf, pos + 5)), QUAD[2])
                        .blend(IntVector.broadcast(I, (int) INT_LE.get(buf, pos + 7)), QUAD[3]);
            }
            return v.lanewise(VectorOperators.LSHR, shifts).and(mask);
        }
        if (L == 16) {
            v = v.blend(IntVector.broadcast(I, (int) INT_LE.get(buf, pos + bits)), UPPER);
        }
        return v.lanewise(VectorOperators.LSHR, shifts).and(mask);
    }

    /** Code j of part p of the record at {@code rec} of a heap buffer (the scalar tails). */
    private static int codeAt(CodeLayout lay, int p, byte[] buf, int rec, int j) {
        int bits = lay.bits[p];
        int bit = j * bits;
        int idx = rec + lay.codeOff[p] + (bit >>> 3);
        int shift = bit & 7;
        int v = Byte.toUnsignedInt(buf[idx]) >>> shift;
        if (shift + bits > 8) {
            v |= Byte.toUnsignedInt(buf[idx + 1]) << (8 - shift);
        }
        return v & ((1 << bits) - 1);
    }

    /** Scalar scores of codes [j0, j1) of part p, added to out. */
    private static void scalarPartScores(CodeLayout lay, int p, byte[] seg, int off, int n, float[] g, int go,
                                         int gs, int nq, float[] out, int oo, int os, int j0, int j1) {
        float[] tab = lay.table[p];
        for (int t = 0; t < n; t++) {
            int rec = off + t * lay.recordBytes;
            float sc = half(seg, rec + lay.scaleOff[p]);
            for (int i = 0; i < nq; i++) {
                int qb = go + i * gs + lay.featOff[p];
                float s = 0f;
                for (int j = j0; j < j1; j++) {
                    s += tab[codeAt(lay, p, seg, rec, j)] * g[qb + j];
                }
                out[oo + i * os + t] += sc * s;
            }
        }
    }

    @Override
    public void codeAccumulate(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] w, int wo, int ws, int nq,
                               float[] acc, int ao, int as, float[] scratch) {
        for (int t = 0; t < n; t += COPY_RUN) {
            int m = Math.min(COPY_RUN, n - t);
            byte[] buf = codeBuffer(seg, off + (long) t * lay.recordBytes, m, lay.recordBytes);
            accumulateRange(lay, buf, 0, m, w, wo + t, ws, nq, acc, ao, as, scratch);
        }
    }

    /** Accumulation of n records whose word reads all stay inside {@code seg}. */
    private static void accumulateRange(CodeLayout lay, byte[] seg, int off, int n, float[] w, int wo, int ws,
                                        int nq, float[] acc, int ao, int as, float[] scratch) {
        int rb = lay.recordBytes;
        int lastScale = -1;
        for (int p = 0; p < lay.parts(); p++) {
            int bits = lay.bits[p];
            if (lay.scaleOff[p] != lastScale) {
                // weights with the record's scale folded in, query-major: scratch[i·n + t]
                lastScale = lay.scaleOff[p];
                int nb = nq * n;
                for (int t = 0; t < n; t++) {
                    scratch[nb + t] = half(seg, off + t * rb + lastScale);
                }
                for (int i = 0; i < nq; i++) {
                    ScalarOps.multiplyInto(w, wo + i * ws, scratch, nb, scratch, i * n, n);
                }
            }
            int groups = vectorPart(lay, p) ? lay.count[p] / L : 0;
            if (groups > 0) {
                int gb = L * bits / 8;
                int co = off + lay.codeOff[p];
                // token-major over a block of two output vectors: the accumulators of up to four
                // queries stay in registers for the whole run of tokens
                int base = ao + lay.featOff[p];
                for (int k = 0; k + 1 < groups; k += 2) {
                    int i = 0;
                    for (; i + 4 <= nq; i += 4) {
                        accumulateQ4(seg, co, rb, n, n, k, bits, lay.table[p], gb, scratch, i * n, acc, base + i * as + k * L, as);
                    }
                    if (i + 2 <= nq) {
                        accumulateQ2(seg, co, rb, n, n, k, bits, lay.table[p], gb, scratch, i * n, acc, base + i * as + k * L, as);
                        i += 2;
                    }
                    if (i < nq) {
                        accumulateQ1(seg, co, rb, n, n, k, bits, lay.table[p], gb, scratch, i * n, acc, base + i * as + k * L, as);
                    }
                }
                if (groups % 2 == 1) {
                    for (int i = 0; i < nq; i++) {
                        accumulateOne(seg, co, rb, n, n, groups - 1, bits, lay.table[p], gb, scratch, i * n, acc,
                                base + i * as + (groups - 1) * L);
                    }
                }
            }
            int j0 = groups * L;
            if (j0 < lay.count[p]) {
                float[] tab = lay.table[p];
                for (int t = 0; t < n; t++) {
                    int rec = off + t * rb;
                    for (int i = 0; i < nq; i++) {
                        float wn = scratch[i * n + t];
                        int a = ao + i * as + lay.featOff[p];
                        for (int j = j0; j < lay.count[p]; j++) {
                            acc[a + j] += wn * tab[codeAt(lay, p, seg, rec, j)];
                        }
                    }
                }
            }
        }
    }

    /**
     * Token-major accumulation of 4 queries (weights scratch[wb + i·n + t]) into two output vectors from
     * code group k (accumulators acc[ab + i·as ..]): the accumulators stay in registers for the whole run of tokens.
     */
    private static void accumulateQ4(byte[] seg, int co, int rb, int nt, int n, int k, int bits, float[] table, int gb,
                                     float[] scratch, int wb, float[] acc, int ab, int as) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        FloatVector a00 = FloatVector.fromArray(F, acc, ab);
        FloatVector a01 = FloatVector.fromArray(F, acc, ab + L);
        FloatVector a10 = FloatVector.fromArray(F, acc, ab + as);
        FloatVector a11 = FloatVector.fromArray(F, acc, ab + as + L);
        FloatVector a20 = FloatVector.fromArray(F, acc, ab + 2 * as);
        FloatVector a21 = FloatVector.fromArray(F, acc, ab + 2 * as + L);
        FloatVector a30 = FloatVector.fromArray(F, acc, ab + 3 * as);
        FloatVector a31 = FloatVector.fromArray(F, acc, ab + 3 * as + L);
        int pos = co + k * gb;
        for (int t = 0; t < nt; t++, pos += rb) {
            FloatVector c0 = lookup(codeLanes(seg, pos, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector c1 = lookup(codeLanes(seg, pos + gb, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector w0 = FloatVector.broadcast(F, scratch[wb + t]);
            a00 = c0.fma(w0, a00);
            a01 = c1.fma(w0, a01);
            FloatVector w1 = FloatVector.broadcast(F, scratch[wb + n + t]);
            a10 = c0.fma(w1, a10);
            a11 = c1.fma(w1, a11);
            FloatVector w2 = FloatVector.broadcast(F, scratch[wb + 2 * n + t]);
            a20 = c0.fma(w2, a20);
            a21 = c1.fma(w2, a21);
            FloatVector w3 = FloatVector.broadcast(F, scratch[wb + 3 * n + t]);
            a30 = c0.fma(w3, a30);
            a31 = c1.fma(w3, a31);
        }
        a00.intoArray(acc, ab);
        a01.intoArray(acc, ab + L);
        a10.intoArray(acc, ab + as);
        a11.intoArray(acc, ab + as + L);
        a20.intoArray(acc, ab + 2 * as);
        a21.intoArray(acc, ab + 2 * as + L);
        a30.intoArray(acc, ab + 3 * as);
        a31.intoArray(acc, ab + 3 * as + L);
    }

    /**
     * Token-major accumulation of 2 queries (weights scratch[wb + i·n + t]) into two output vectors from
     * code group k (accumulators acc[ab + i·as ..]): the accumulators stay in registers for the whole run of tokens.
     */
    private static void accumulateQ2(byte[] seg, int co, int rb, int nt, int n, int k, int bits, float[] table, int gb,
                                     float[] scratch, int wb, float[] acc, int ab, int as) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        FloatVector a00 = FloatVector.fromArray(F, acc, ab);
        FloatVector a01 = FloatVector.fromArray(F, acc, ab + L);
        FloatVector a10 = FloatVector.fromArray(F, acc, ab + as);
        FloatVector a11 = FloatVector.fromArray(F, acc, ab + as + L);
        int pos = co + k * gb;
        for (int t = 0; t < nt; t++, pos += rb) {
            FloatVector c0 = lookup(codeLanes(seg, pos, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector c1 = lookup(codeLanes(seg, pos + gb, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector w0 = FloatVector.broadcast(F, scratch[wb + t]);
            a00 = c0.fma(w0, a00);
            a01 = c1.fma(w0, a01);
            FloatVector w1 = FloatVector.broadcast(F, scratch[wb + n + t]);
            a10 = c0.fma(w1, a10);
            a11 = c1.fma(w1, a11);
        }
        a00.intoArray(acc, ab);
        a01.intoArray(acc, ab + L);
        a10.intoArray(acc, ab + as);
        a11.intoArray(acc, ab + as + L);
    }

    /**
     * Token-major accumulation of 1 query (weights scratch[wb + i·n + t]) into two output vectors from
     * code group k (accumulators acc[ab + i·as ..]): the accumulators stay in registers for the whole run of tokens.
     */
    private static void accumulateQ1(byte[] seg, int co, int rb, int nt, int n, int k, int bits, float[] table, int gb,
                                     float[] scratch, int wb, float[] acc, int ab, int as) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        FloatVector a00 = FloatVector.fromArray(F, acc, ab);
        FloatVector a01 = FloatVector.fromArray(F, acc, ab + L);
        int pos = co + k * gb;
        for (int t = 0; t < nt; t++, pos += rb) {
            FloatVector c0 = lookup(codeLanes(seg, pos, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector c1 = lookup(codeLanes(seg, pos + gb, bits, shifts, mask), t0, t1, t2, t3, tt);
            FloatVector w0 = FloatVector.broadcast(F, scratch[wb + t]);
            a00 = c0.fma(w0, a00);
            a01 = c1.fma(w0, a01);
        }
        a00.intoArray(acc, ab);
        a01.intoArray(acc, ab + L);
    }

    /** As {@link #accumulateQ1} for a single output vector (the last group of an odd count), one query. */
    private static void accumulateOne(byte[] seg, int co, int rb, int nt, int n, int k, int bits, float[] table, int gb,
                                      float[] scratch, int wb, float[] acc, int ab) {
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
        int tt = tables(bits);
        IntVector t0 = tableVector(table, 0);
        IntVector t1 = tableVector(table, L);
        IntVector t2 = tt == 4 ? tableVector(table, 2 * L) : t0;
        IntVector t3 = tt == 4 ? tableVector(table, 3 * L) : t0;
        FloatVector a = FloatVector.fromArray(F, acc, ab);
        int pos = co + k * gb;
        for (int t = 0; t < nt; t++, pos += rb) {
            a = lookup(codeLanes(seg, pos, bits, shifts, mask), t0, t1, t2, t3, tt).fma(FloatVector.broadcast(F, scratch[wb + t]), a);
        }
        a.intoArray(acc, ab);
    }

    @Override
    public void codeDecode(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, float[] out, int oo) {
        if (safeRecords(off, lay.recordBytes, 1, seg.byteSize()) == 0) {
            seg = padded(lay, seg, off);
            off = 0;
        }
        for (int p = 0; p < lay.parts(); p++) {
            float sc = half(seg, off + lay.scaleOff[p]);
            int groups = vectorPart(lay, p) ? lay.count[p] / L : 0;
            int o = oo + lay.featOff[p];
            if (groups > 0) {
                int bits = lay.bits[p];
                IntVector shifts = CODE_SHIFTS[bits];
                IntVector mask = IntVector.broadcast(I, (1 << bits) - 1);
                // the table scaled once per record: the look-up then yields sc·table[code] directly
                IntVector t0 = FloatVector.fromArray(F, lay.table[p], 0).mul(sc).reinterpretAsInts();
                IntVector t1 = FloatVector.fromArray(F, lay.table[p], L).mul(sc).reinterpretAsInts();
                int tt = tables(bits);
                IntVector t2 = tt == 4 ? FloatVector.fromArray(F, lay.table[p], 2 * L).mul(sc).reinterpretAsInts() : t0;
                IntVector t3 = tt == 4 ? FloatVector.fromArray(F, lay.table[p], 3 * L).mul(sc).reinterpretAsInts() : t0;
                int gb = L * bits / 8;
                long co = off + lay.codeOff[p];
                for (int k = 0; k < groups; k++) {
                    lookup(codeLanes(seg, co + (long) k * gb, bits, shifts, mask), t0, t1, t2, t3, tt).intoArray(out, o + k * L);
                }
            }
            float[] tab = lay.table[p];
            for (int j = groups * L; j < lay.count[p]; j++) {
                out[o + j] = sc * tab[ScalarOps.code(lay, p, seg, off, j)];
            }
        }
    }

    @Override
    public void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, int bits, java.lang.foreign.MemorySegment dst,
                             long off) {
        quantizePack(y, yo, n, scale, boundaries, VectorOps.searchTable(boundaries, bits), bits, dst, off);
    }

    @Override
    public void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, float[] search, int bits,
                             java.lang.foreign.MemorySegment dst, long off) {
        if (bits == 5 && CODE_VECTOR && search != null && search.length >= 16 * 5) {
            quantizePack5(y, yo, n, scale, boundaries, search, dst, off);
            return;
        }
        if (!CODE_VECTOR || search == null || bits > 4 || search.length < 16 * bits) {
            ScalarOps.INSTANCE.quantizePack(y, yo, n, scale, boundaries, bits, dst, off);
            return;
        }
        int groups = n / L;
        int gb = L * bits / 8; // bytes per group of L codes (a whole number: L is 8 or 16)
        IntVector shifts = CODE_SHIFTS[bits];
        IntVector zero = IntVector.zero(I);
        IntVector one = IntVector.broadcast(I, 1);
        float b0 = search[0];
        IntVector s1 = bits > 1 ? FloatVector.fromArray(F, search, 16).reinterpretAsInts() : zero;
        IntVector s2 = bits > 2 ? FloatVector.fromArray(F, search, 32).reinterpretAsInts() : zero;
        IntVector s3 = bits > 3 ? FloatVector.fromArray(F, search, 48).reinterpretAsInts() : zero;
        for (int k = 0; k < groups; k++) {
            FloatVector v = FloatVector.fromArray(F, y, yo + k * L).mul(scale);
            // branch-free binary search: the code's bits from the top, one compare per bit
            IntVector c = zero.blend(one, v.compare(VectorOperators.GT, b0).cast(I));
            if (bits > 1) {
                c = step(c, v, s1, zero, one);
                if (bits > 2) {
                    c = step(c, v, s2, zero, one);
                    if (bits > 3) {
                        c = step(c, v, s3, zero, one);
                    }
                }
            }
            c = c.lanewise(VectorOperators.LSHL, shifts);
            long pos = off + (long) k * gb;
            if (L == 8) {
                int word = c.reduceLanes(VectorOperators.OR);
                if ((k + 1) * gb + 4 - gb <= groups * gb) {
                    dst.set(INT_SEG, pos, word); // a short group's extra bytes are rewritten by the next groups
                } else {
                    writeBytes(dst, pos, word, gb);
                }
            } else {
                writeBytes(dst, pos, c.reduceLanes(VectorOperators.OR, UPPER.not()), gb / 2);
                writeBytes(dst, pos + gb / 2, c.reduceLanes(VectorOperators.OR, UPPER), gb / 2);
            }
        }
        int done = groups * L;
        if (done < n) {
            ScalarOps.INSTANCE.quantizePack(y, yo + done, n - done, scale, boundaries, bits, dst, off + (long) done * bits / 8);
        }
    }

    /** One binary-search step: prefix c becomes 2c + (v &gt; threshold[c]). */
    /**
     * {@link #quantizePack} for 5-bit codes (the middle tier's): the same branch-free binary search
     * with a fifth step whose 16 thresholds take two vectors at 8 lanes, and four codes (20 bits)
     * per lane quad, packed five bytes per 8 codes. Bit-identical to the scalar reference.
     */
    private static void quantizePack5(float[] y, int yo, int n, float scale, float[] boundaries, float[] search,
                                      java.lang.foreign.MemorySegment dst, long off) {
        int groups = n / L;
        int gb = L * 5 / 8;
        IntVector zero = IntVector.zero(I);
        IntVector one = IntVector.broadcast(I, 1);
        float b0 = search[0];
        IntVector s1 = FloatVector.fromArray(F, search, 16).reinterpretAsInts();
        IntVector s2 = FloatVector.fromArray(F, search, 32).reinterpretAsInts();
        IntVector s3 = FloatVector.fromArray(F, search, 48).reinterpretAsInts();
        IntVector s4 = FloatVector.fromArray(F, search, 64).reinterpretAsInts();
        IntVector s4b = L == 8 ? FloatVector.fromArray(F, search, 72).reinterpretAsInts() : s4;
        for (int k = 0; k < groups; k++) {
            FloatVector v = FloatVector.fromArray(F, y, yo + k * L).mul(scale);
            IntVector c = zero.blend(one, v.compare(VectorOperators.GT, b0).cast(I));
            c = step(c, v, s1, zero, one);
            c = step(c, v, s2, zero, one);
            c = step(c, v, s3, zero, one);
            IntVector ti = c.selectFrom(s4);
            if (L == 8) {
                ti = ti.blend(c.selectFrom(s4b), c.compare(VectorOperators.GE, 8));
            }
            c = c.add(c).add(zero.blend(one, v.compare(VectorOperators.GT, ti.reinterpretAsFloats()).cast(I)));
            IntVector sh = c.lanewise(VectorOperators.LSHL, QUAD_SHIFTS);
            long pos = off + (long) k * gb;
            long w = (sh.reduceLanes(VectorOperators.OR, QUAD[0]) & 0xFFFFFL)
                    | (long) (sh.reduceLanes(VectorOperators.OR, QUAD[1]) & 0xFFFFF) << 20;
            if (L == 8) {
                dst.set(INT_SEG, pos, (int) w);
                dst.set(java.lang.foreign.ValueLayout.JAVA_BYTE, pos + 4, (byte) (w >>> 32));
            } else {
                long q2 = sh.reduceLanes(VectorOperators.OR, QUAD[2]) & 0xFFFFFL;
                long q3 = sh.reduceLanes(VectorOperators.OR, QUAD[3]) & 0xFFFFFL;
                w |= q2 << 40 | q3 << 60;
                dst.set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, pos, w);
                dst.set(SHORT_SEG, pos + 8, (short) (q3 >>> 4));
            }
        }
        if (groups * L < n) { // the tail starts on a byte: groups of L codes are whole bytes
            ScalarOps.INSTANCE.quantizePack(y, yo + groups * L, n - groups * L, scale, boundaries, 5, dst, off + (long) groups * gb);
        }
    }

    private static IntVector step(IntVector c, FloatVector v, IntVector thresholds, IntVector zero, IntVector one) {
        FloatVector t = c.selectFrom(thresholds).reinterpretAsFloats();
        return c.add(c).add(zero.blend(one, v.compare(VectorOperators.GT, t).cast(I)));
    }

    /** The low {@code bytes} bytes of {@code word}, little-endian, at {@code pos} (nothing beyond). */
    private static void writeBytes(java.lang.foreign.MemorySegment dst, long pos, int word, int bytes) {
        if (bytes == 4) {
            dst.set(INT_SEG, pos, word);
            return;
        }
        for (int i = 0; i < bytes; i++) {
            dst.set(java.lang.foreign.ValueLayout.JAVA_BYTE, pos + i, (byte) (word >>> (8 * i)));
        }
    }

    @Override
    public float readProbe(java.lang.foreign.MemorySegment seg, long off, long bytes) {
        long step = 4L * F.vectorByteSize();
        long n = bytes / step * step;
        java.nio.ByteOrder le = java.nio.ByteOrder.LITTLE_ENDIAN;
        FloatVector a = FloatVector.zero(F);
        FloatVector b = FloatVector.zero(F);
        FloatVector c = FloatVector.zero(F);
        FloatVector d = FloatVector.zero(F);
        int vb = F.vectorByteSize();
        for (long i = 0; i < n; i += step) {
            a = a.add(FloatVector.fromMemorySegment(F, seg, off + i, le));
            b = b.add(FloatVector.fromMemorySegment(F, seg, off + i + vb, le));
            c = c.add(FloatVector.fromMemorySegment(F, seg, off + i + 2L * vb, le));
            d = d.add(FloatVector.fromMemorySegment(F, seg, off + i + 3L * vb, le));
        }
        return a.add(b).add(c.add(d)).reduceLanes(VectorOperators.ADD);
    }

    @Override
    public String name() {
        return "vector(" + F.vectorBitSize() + "-bit)";
    }
}
