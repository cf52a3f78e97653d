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

    @Override
    public String name() {
        return "scalar";
    }
}
