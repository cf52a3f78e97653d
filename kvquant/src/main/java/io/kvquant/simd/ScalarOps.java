package io.kvquant.simd;

/** Plain-Java reference implementation of {@link VectorOps}. */
public final class ScalarOps implements VectorOps {

    public static final ScalarOps INSTANCE = new ScalarOps();

    private ScalarOps() {
    }

    @Override
    public float dot(float[] a, int ao, float[] b, int bo, int n) {
        float s = 0f;
        for (int i = 0; i < n; i++) {
            s += a[ao + i] * b[bo + i];
        }
        return s;
    }

    @Override
    public void axpy(float alpha, float[] x, int xo, float[] y, int yo, int n) {
        for (int i = 0; i < n; i++) {
            y[yo + i] += alpha * x[xo + i];
        }
    }

    @Override
    public void scale(float[] x, int o, int n, float s) {
        for (int i = 0; i < n; i++) {
            x[o + i] *= s;
        }
    }

    @Override
    public float sumOfSquares(float[] x, int o, int n) {
        float s = 0f;
        for (int i = 0; i < n; i++) {
            float v = x[o + i];
            s += v * v;
        }
        return s;
    }

    @Override
    public void multiply(float[] x, int xo, float[] y, int yo, float[] out, int oo, int n) {
        for (int i = 0; i < n; i++) {
            out[oo + i] = x[xo + i] * y[yo + i];
        }
    }

    @Override
    public void fwht(float[] x, int o, int n) {
        for (int h = 1; h < n; h <<= 1) {
            for (int i = 0; i < n; i += h << 1) {
                for (int j = i; j < i + h; j++) {
                    float a = x[o + j];
                    float b = x[o + j + h];
                    x[o + j] = a + b;
                    x[o + j + h] = a - b;
                }
            }
        }
    }

    @Override
    public void decodeCodes(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] out, int oo) {
        int mask = (1 << bits) - 1;
        long bit = 0;
        for (int j = 0; j < n; j++, bit += bits) {
            int idx = bo + (int) (bit >>> 3);
            int shift = (int) (bit & 7);
            int v = ((buf[idx] & 0xFF) | ((buf[idx + 1] & 0xFF) << 8)) >>> shift;
            out[oo + j] = scale * table[v & mask];
        }
    }

    private static int code(byte[] buf, int bo, int bits, int j) {
        long bit = (long) j * bits;
        int idx = bo + (int) (bit >>> 3);
        int v = ((buf[idx] & 0xFF) | ((buf[idx + 1] & 0xFF) << 8)) >>> (int) (bit & 7);
        return v & ((1 << bits) - 1);
    }

    @Override
    public void decodeDot(byte[] buf, int bo, int bits, float[] table, int n, float scale, float[] q, int qo, int qs, int nq,
                          float[] out, int oo, int os) {
        for (int i = 0; i < nq; i++) {
            float s = 0f;
            for (int j = 0; j < n; j++) {
                s += table[code(buf, bo, bits, j)] * q[qo + i * qs + j];
            }
            out[oo + i * os] += scale * s;
        }
    }

    /** out[oo+i] = x[xo+i]·y[yo+i], plain loop (auto-vectorized by C2). */
    static void multiplyInto(float[] x, int xo, float[] y, int yo, float[] out, int oo, int n) {
        for (int i = 0; i < n; i++) {
            out[oo + i] = x[xo + i] * y[yo + i];
        }
    }

    @Override
    public float max(float[] x, int o, int n) {
        float m = x[o];
        for (int i = 1; i < n; i++) {
            m = Math.max(m, x[o + i]);
        }
        return m;
    }

    @Override
    public float expSum(float[] x, int o, int n, float m) {
        float s = 0f;
        for (int i = 0; i < n; i++) {
            float e = (float) Math.exp(x[o + i] - m);
            x[o + i] = e;
            s += e;
        }
        return s;
    }

    private static final java.lang.foreign.ValueLayout.OfShort SHORT = java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;

    static float scaleOf(CodeLayout lay, int p, java.lang.foreign.MemorySegment seg, long rec) {
        return Float.float16ToFloat(seg.get(SHORT, rec + lay.scaleOff[p]));
    }

    /** Code j of part p of the record at byte {@code rec} (reads only the record's own bytes). */
    static int code(CodeLayout lay, int p, java.lang.foreign.MemorySegment seg, long rec, int j) {
        int bits = lay.bits[p];
        long bit = (long) j * bits;
        long idx = rec + lay.codeOff[p] + (bit >>> 3);
        int shift = (int) (bit & 7);
        int v = Byte.toUnsignedInt(seg.get(java.lang.foreign.ValueLayout.JAVA_BYTE, idx)) >>> shift;
        if (shift + bits > 8) {
            v |= Byte.toUnsignedInt(seg.get(java.lang.foreign.ValueLayout.JAVA_BYTE, idx + 1)) << (8 - shift);
        }
        return v & ((1 << bits) - 1);
    }

    @Override
    public void codeScores(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] g, int go, int gs, int nq,
                           float[] out, int oo, int os) {
        int rb = lay.recordBytes;
        for (int t = 0; t < n; t++) {
            long rec = off + (long) t * rb;
            for (int i = 0; i < nq; i++) {
                out[oo + i * os + t] = 0f;
            }
            for (int p = 0; p < lay.parts(); p++) {
                float sc = scaleOf(lay, p, seg, rec);
                float[] tab = lay.table[p];
                for (int i = 0; i < nq; i++) {
                    int qb = go + i * gs + lay.featOff[p];
                    float s = 0f;
                    for (int j = 0; j < lay.count[p]; j++) {
                        s += tab[code(lay, p, seg, rec, j)] * g[qb + j];
                    }
                    out[oo + i * os + t] += sc * s;
                }
            }
        }
    }

    @Override
    public void codeAccumulate(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, int n, float[] w, int wo, int ws, int nq,
                               float[] acc, int ao, int as, float[] scratch) {
        int rb = lay.recordBytes;
        for (int t = 0; t < n; t++) {
            long rec = off + (long) t * rb;
            for (int p = 0; p < lay.parts(); p++) {
                float sc = scaleOf(lay, p, seg, rec);
                float[] tab = lay.table[p];
                for (int i = 0; i < nq; i++) {
                    float wn = w[wo + i * ws + t] * sc;
                    int a = ao + i * as + lay.featOff[p];
                    for (int j = 0; j < lay.count[p]; j++) {
                        acc[a + j] += wn * tab[code(lay, p, seg, rec, j)];
                    }
                }
            }
        }
    }

    @Override
    public void codeDecode(CodeLayout lay, java.lang.foreign.MemorySegment seg, long off, float[] out, int oo) {
        for (int p = 0; p < lay.parts(); p++) {
            float sc = scaleOf(lay, p, seg, off);
            float[] tab = lay.table[p];
            int o = oo + lay.featOff[p];
            for (int j = 0; j < lay.count[p]; j++) {
                out[o + j] = sc * tab[code(lay, p, seg, off, j)];
            }
        }
    }

    @Override
    public void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, int bits, java.lang.foreign.MemorySegment dst,
                             long off) {
        long buf = 0;
        int have = 0;
        long pos = off;
        for (int j = 0; j < n; j++) {
            float v = y[yo + j] * scale;
            int lo = 0;
            int hi = boundaries.length;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (v > boundaries[mid]) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            buf |= (long) lo << have;
            have += bits;
            while (have >= 8) {
                dst.set(java.lang.foreign.ValueLayout.JAVA_BYTE, pos++, (byte) buf);
                buf >>>= 8;
                have -= 8;
            }
        }
        if (have > 0) {
            dst.set(java.lang.foreign.ValueLayout.JAVA_BYTE, pos, (byte) buf);
        }
    }

    @Override
    public void quantizePack(float[] y, int yo, int n, float scale, float[] boundaries, float[] search, int bits,
                             java.lang.foreign.MemorySegment dst, long off) {
        quantizePack(y, yo, n, scale, boundaries, bits, dst, off);
    }

    @Override
    public void hadamardRound(float[] x, int xo, float[] y, int yo, int n, float[] pre, float[] post) {
        hadamardRoundWith(this, x, xo, y, yo, n, pre, post);
    }

    /** The round as multiply, fwht, multiply on {@code ops}: the definition every backend matches bit for bit. */
    static void hadamardRoundWith(VectorOps ops, float[] x, int xo, float[] y, int yo, int n, float[] pre, float[] post) {
        ops.multiply(x, xo, pre, 0, y, yo, n);
        ops.fwht(y, yo, n);
        ops.multiply(y, yo, post, 0, y, yo, n);
    }

    @Override
    public double sumOfSquaresDouble(float[] x, int o, int n) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            s += (double) x[o + i] * x[o + i];
        }
        return s;
    }

    @Override
    public float readProbe(java.lang.foreign.MemorySegment seg, long off, long bytes) {
        float a = 0f;
        float b = 0f;
        float c = 0f;
        float d = 0f;
        long n = bytes / 16 * 16;
        java.lang.foreign.ValueLayout.OfFloat f = java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED;
        for (long i = 0; i < n; i += 16) {
            a += seg.get(f, off + i);
            b += seg.get(f, off + i + 4);
            c += seg.get(f, off + i + 8);
            d += seg.get(f, off + i + 12);
        }
        return a + b + c + d;
    }

    @Override
    public String name() {
        return "scalar";
    }
}
