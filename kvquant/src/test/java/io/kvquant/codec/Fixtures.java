package io.kvquant.codec;

import java.lang.foreign.MemorySegment;
import java.util.Random;

final class Fixtures {
    private Fixtures() {
    }

    static float[] unitVector(Random r, int d) {
        float[] x = new float[d];
        double n = 0;
        for (int i = 0; i < d; i++) {
            x[i] = (float) r.nextGaussian();
            n += x[i] * x[i];
        }
        float inv = (float) (1 / Math.sqrt(n));
        for (int i = 0; i < d; i++) {
            x[i] *= inv;
        }
        return x;
    }

    static MemorySegment record(VectorCodec c) {
        return MemorySegment.ofArray(new byte[c.recordBytes()]);
    }

    static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += (double) a[i] * b[i];
        }
        return s;
    }

    static double sqDist(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - b[i];
            s += d * d;
        }
        return s;
    }
}
