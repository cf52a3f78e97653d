package io.kvquant.codec;

import static io.kvquant.codec.Fixtures.dot;
import static io.kvquant.codec.Fixtures.record;
import static io.kvquant.codec.Fixtures.unitVector;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class TurboQuantProdTest {

    private static final long SEED = 99L;

    /** Unbiased (|mean error| < 3 SE) with variance close to (π/2d)·D_mse(b−1), both kinds of S. */
    @ParameterizedTest(name = "{0} b={1}")
    @CsvSource({"GAUSSIAN,2", "GAUSSIAN,3", "ORTHOGONAL,2", "ORTHOGONAL,3", "GAUSSIAN,1", "ORTHOGONAL,4"})
    void innerProductEstimatorIsUnbiased(QjlKind kind, int bits) {
        int d = 128;
        int n = 1500;
        TurboQuantProd q = new TurboQuantProd(d, bits, Rotation.create(RotationKind.HADAMARD, d, SEED), kind, SEED);
        Random r = new Random(SEED + bits);
        MemorySegment rec = record(q);
        float[] state = new float[q.queryStateSize()];
        double sum = 0;
        double sum2 = 0;
        for (int i = 0; i < n; i++) {
            float[] x = unitVector(r, d);
            float[] y = unitVector(r, d);
            // queries correlated with keys, as in attention, make a bias visible
            for (int k = 0; k < d; k++) {
                y[k] = 0.6f * x[k] + 0.8f * y[k];
            }
            q.encode(x, 0, rec, 0);
            q.prepareQuery(y, 0, state, 0);
            double err = q.score(state, 0, rec, 0) - dot(x, y);
            sum += err;
            sum2 += err * err;
        }
        double mean = sum / n;
        double var = sum2 / n - mean * mean;
        double se = Math.sqrt(var / n);
        assertTrue(Math.abs(mean) < 3 * se, kind + " b=" + bits + " seed=" + SEED + " bias " + mean + " vs SE " + se);
        // D_prod for independent random unit queries: (π/2d)·D_mse(b−1) for Gaussian S;
        // orthogonal rows can only lower the variance.
        double dprod = 0;
        for (int i = 0; i < n; i++) {
            float[] x = unitVector(r, d);
            float[] y = unitVector(r, d);
            q.encode(x, 0, rec, 0);
            q.prepareQuery(y, 0, state, 0);
            double err = q.score(state, 0, rec, 0) - dot(x, y);
            dprod += err * err;
        }
        dprod /= n;
        double dmsePrev = bits == 1 ? 1.0 : Codebook.forDimension(d, bits - 1).expectedMsePerVector();
        double predicted = Math.PI / (2 * d) * dmsePrev;
        if (kind == QjlKind.GAUSSIAN) {
            assertEquals(predicted, dprod, 0.12 * predicted, kind + " b=" + bits + " D_prod");
        } else {
            assertTrue(dprod < predicted * 1.05, kind + " b=" + bits + " D_prod " + dprod + " vs Gaussian " + predicted);
        }
    }

    @ParameterizedTest
    @CsvSource({"HAAR", "HADAMARD"})
    void oneBitMseIsBiasedByTwoOverPi(RotationKind rk) {
        int d = 128;
        TurboQuantMse q = new TurboQuantMse(d, 1, Rotation.create(rk, d, SEED), false);
        Random r = new Random(SEED);
        MemorySegment rec = record(q);
        float[] dec = new float[d];
        double sxy = 0;
        double sxx = 0;
        for (int i = 0; i < 1500; i++) {
            float[] x = unitVector(r, d);
            float[] y = unitVector(r, d);
            q.encode(x, 0, rec, 0);
            q.decode(rec, 0, dec, 0);
            double t = dot(x, y);
            sxy += dot(dec, y) * t;
            sxx += t * t;
        }
        assertEquals(2 / Math.PI, sxy / sxx, 0.05, "slope of the 1-bit mse estimate against the truth");
    }

    @ParameterizedTest
    @CsvSource({"GAUSSIAN", "ORTHOGONAL"})
    void decodeAndAccumulateCarryTheSameQjlTermAsTheScore(QjlKind kind) {
        int d = 64;
        TurboQuantProd q = new TurboQuantProd(d, 3, Rotation.create(RotationKind.HAAR, d, SEED), kind, SEED);
        Random r = new Random(SEED);
        float[] y = unitVector(r, d);
        float[] state = new float[q.queryStateSize()];
        q.prepareQuery(y, 0, state, 0);
        float[] acc = new float[q.accumulatorSize()];
        float[] sum = new float[d];
        float[] dec = new float[d];
        MemorySegment rec = record(q);
        for (int t = 0; t < 10; t++) {
            float[] x = unitVector(r, d);
            q.encode(x, 0, rec, 0);
            q.decode(rec, 0, dec, 0);
            assertEquals(dot(dec, y), q.score(state, 0, rec, 0), 1e-4);
            q.accumulate(0.1f * (t + 1), rec, 0, acc, 0);
            for (int i = 0; i < d; i++) {
                sum[i] += 0.1f * (t + 1) * dec[i];
            }
        }
        float[] out = new float[d];
        q.finish(acc, 0, out, 0);
        for (int i = 0; i < d; i++) {
            assertEquals(sum[i], out[i], 1e-4f);
        }
        assertEquals(Math.sqrt(Math.PI / 2) / d, TurboQuantProd.scaleFor(d, QjlKind.GAUSSIAN), 1e-12);
        // orthogonal rows: exact scale tends to the Gaussian one as d grows
        assertEquals(TurboQuantProd.scaleFor(4096, QjlKind.GAUSSIAN), TurboQuantProd.scaleFor(4096, QjlKind.ORTHOGONAL),
                1e-4 * TurboQuantProd.scaleFor(4096, QjlKind.GAUSSIAN));
    }
}
