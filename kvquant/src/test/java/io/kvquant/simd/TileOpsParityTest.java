package io.kvquant.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The Vector API tile products against the scalar reference, for every tail: query counts that
 * are not multiples of the six- and four-query blocks, token counts that are not multiples of the vector width, widths
 * with leftover channels. Both compute the same sums in a different order: the bound is a few
 * float ulps of the magnitude of the terms (sqrt(w) · 1e-6 relative to the sum of |terms|).
 */
class TileOpsParityTest {

    @ParameterizedTest(name = "nq={0} n={1} w={2}")
    @CsvSource({"1,1,8", "3,7,64", "4,16,128", "5,33,96", "9,64,256", "32,64,128", "7,50,100", "2,64,12", "6,9,8", "11,64,24",
        "13,40,40", "36,64,128", "17,57,136"})
    void vectorTileProductsMatchTheScalarReference(int nq, int n, int w) {
        TileOps vec = TileOps.vectorOrNull();
        assertNotNull(vec, "these tests run with jdk.incubator.vector (see the pom's surefire arguments)");
        TileOps ref = TileOps.scalar();
        Random r = new Random(97L * nq + n * 13L + w);
        int tile = 64;
        int qs = w + 3;
        float[] q = gaussian(r, nq * qs + 5);
        float[] kt = new float[w * tile];
        for (int k = 0; k < w; k++) {
            for (int t = 0; t < n; t++) {
                kt[k * tile + t] = (float) r.nextGaussian();
            }
        }
        float[] sv = new float[nq * tile];
        float[] sr = new float[nq * tile];
        vec.scoresT(q, 5, qs, nq, kt, tile, w, n, sv, 0, tile);
        ref.scoresT(q, 5, qs, nq, kt, tile, w, n, sr, 0, tile);
        for (int i = 0; i < nq; i++) {
            for (int t = 0; t < n; t++) {
                double mag = 0;
                for (int k = 0; k < w; k++) {
                    mag += Math.abs(q[5 + i * qs + k] * kt[k * tile + t]);
                }
                assertEquals(sr[i * tile + t], sv[i * tile + t], 1e-6 * Math.sqrt(w) * mag + 1e-30, "score " + i + "," + t);
            }
        }
        int as = w + 1;
        float[] p = new float[nq * tile];
        for (int i = 0; i < p.length; i++) {
            p[i] = r.nextFloat() < 0.2f ? 0f : r.nextFloat();
        }
        float[] v = gaussian(r, n * w);
        float[] av = gaussian(r, nq * as + 2);
        float[] ar = av.clone();
        vec.accumulate(p, 0, tile, nq, v, w, n, w, av, 2, as);
        ref.accumulate(p, 0, tile, nq, v, w, n, w, ar, 2, as);
        for (int i = 0; i < nq; i++) {
            for (int c = 0; c < w; c++) {
                double mag = Math.abs(ar[2 + i * as + c]);
                for (int t = 0; t < n; t++) {
                    mag += Math.abs(p[i * tile + t] * v[t * w + c]);
                }
                assertEquals(ar[2 + i * as + c], av[2 + i * as + c], 1e-6 * Math.sqrt(n) * mag + 1e-30, "acc " + i + "," + c);
            }
        }
        // the slot past each row's width is untouched
        for (int i = 0; i < nq; i++) {
            assertEquals(ar[2 + i * as + w], av[2 + i * as + w], 0.0);
        }
    }

    private static float[] gaussian(Random r, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) r.nextGaussian();
        }
        return x;
    }
}
