package io.kvquant.codec;

import static io.kvquant.codec.Fixtures.dot;
import static io.kvquant.codec.Fixtures.unitVector;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The feature form (used by the cache's attention) gives the same numbers as decode(). */
class FeatureFormTest {

    private static final long SEED = 77L;

    private static List<VectorCodec> codecs() {
        List<VectorCodec> l = new ArrayList<>();
        for (int d : new int[]{64, 128, 96}) {
            for (double b : new double[]{1, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8}) {
                l.add(Codecs.turbo(d, b, false, RotationKind.HADAMARD, QjlKind.GAUSSIAN, SEED, false));
                if (b >= 2) {
                    l.add(Codecs.turbo(d, b, true, RotationKind.HAAR, QjlKind.ORTHOGONAL, SEED, true));
                }
            }
        }
        int[] outl = {0, 5, 9, 17, 33, 40, 41, 63};
        l.add(new MixedPrecision(64, outl, Codecs.mse(8, 4, SEED),
                new TurboQuantProd(56, 3, Rotation.create(RotationKind.HADAMARD, 56, SEED), QjlKind.GAUSSIAN, SEED)));
        return l;
    }

    @Test
    void featuresReproduceDecodeScoresAndSums() {
        for (VectorCodec c : codecs()) {
            int d = c.dim();
            Random r = new Random(SEED);
            int n = 9;
            byte[] buf = new byte[n * c.recordBytes() + 8];
            MemorySegment seg = MemorySegment.ofArray(buf);
            float[][] dec = new float[n][d];
            for (int t = 0; t < n; t++) {
                float[] x = unitVector(r, d);
                for (int i = 0; i < d; i++) {
                    x[i] *= 2.5f;
                }
                c.encode(x, 0, seg, (long) t * c.recordBytes());
                c.decode(seg, (long) t * c.recordBytes(), dec[t], 0);
            }
            float[] q = unitVector(r, d);
            float[] g = new float[c.featureSize() + 2];
            c.queryFeatures(q, 0, g, 2);
            float[] f = new float[c.featureSize()];
            float[] acc = new float[c.featureSize()];
            float[] want = new float[d];
            for (int t = 0; t < n; t++) {
                c.features(buf, t * c.recordBytes(), f, 0);
                double s = 0;
                for (int i = 0; i < f.length; i++) {
                    s += (double) g[2 + i] * f[i];
                    acc[i] += (t + 1) * 0.1f * f[i];
                }
                assertEquals(dot(q, dec[t]), s, 2e-4 * 2.5 * Math.sqrt(d / 64.0), c.describe() + " token " + t);
                for (int i = 0; i < d; i++) {
                    want[i] += (t + 1) * 0.1f * dec[t][i];
                }
            }
            // the fused group form gives the same scores as features + dot
            float[] gs = new float[3 * c.featureSize()];
            float[] qs = unitVector(r, d);
            c.queryFeatures(q, 0, gs, 0);
            c.queryFeatures(qs, 0, gs, c.featureSize());
            c.queryFeatures(q, 0, gs, 2 * c.featureSize());
            float[] many = new float[3];
            for (int t = 0; t < n; t++) {
                c.scoreMany(buf, t * c.recordBytes(), gs, 0, c.featureSize(), 3, many, 0, 1);
                c.features(buf, t * c.recordBytes(), f, 0);
                for (int i = 0; i < 3; i++) {
                    double s = 0;
                    for (int k = 0; k < f.length; k++) {
                        s += (double) gs[i * c.featureSize() + k] * f[k];
                    }
                    assertEquals(s, many[i], 1e-4 * 2.5 * Math.sqrt(d / 64.0), c.describe() + " scoreMany");
                }
            }
            float[] out = new float[d];
            c.finishFeatures(acc, 0, out, 0);
            for (int i = 0; i < d; i++) {
                assertEquals(want[i], out[i], 2e-4f * 2.5f * 4, c.describe() + " sum at " + i);
            }
        }
    }
}
