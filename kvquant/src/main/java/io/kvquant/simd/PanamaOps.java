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
    public String name() {
        return "vector(" + F.vectorBitSize() + "-bit)";
    }
}
