package io.kvquant.codec;

import static io.kvquant.codec.Fixtures.dot;
import static io.kvquant.codec.Fixtures.record;
import static io.kvquant.codec.Fixtures.sqDist;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

class MixedPrecisionTest {

    private static final long SEED = 5L;

    /** Keys with 8 strong channels (×10), the kind of outliers LLM keys have. */
    private static float[] outlierVector(Random r, int d, int[] strong) {
        float[] x = new float[d];
        for (int i = 0; i < d; i++) {
            x[i] = (float) r.nextGaussian();
        }
        for (int c : strong) {
            x[c] *= 10f;
        }
        return x;
    }

    @Test
    void choosesTheHighEnergyChannels() {
        int d = 64;
        int[] strong = {3, 9, 20, 33, 40, 51, 60, 63};
        Random r = new Random(SEED);
        float[] samples = new float[200 * d];
        for (int v = 0; v < 200; v++) {
            System.arraycopy(outlierVector(r, d, strong), 0, samples, v * d, d);
        }
        assertArrayEquals(strong, MixedPrecision.chooseOutliers(samples, d, 8));
        assertThrows(IllegalArgumentException.class, () -> MixedPrecision.chooseOutliers(new float[10], 64, 8));
    }

    @Test
    void outlierSplitBeatsTheUniformCodecOnOutlierDataAndCountsBothNorms() {
        int d = 128;
        int[] strong = new int[16];
        for (int i = 0; i < 16; i++) {
            strong[i] = i * 8 + 1;
        }
        // 32 channels at 4 bits + 96 at 2 bits = 2.5 code bits, each half with its own norm
        int[] outl = new int[32];
        for (int i = 0; i < 16; i++) {
            outl[i] = strong[i];
            outl[16 + i] = strong[i] + 1;
        }
        VectorCodec split = new MixedPrecision(d, outl,
                new TurboQuantMse(32, 4, Rotation.create(RotationKind.HADAMARD, 32, SEED), false),
                new TurboQuantMse(96, 2, Rotation.create(RotationKind.HADAMARD, 96, SEED), false));
        VectorCodec uniform = Codecs.mse(d, 2.5, SEED);
        assertEquals(2.5 + 32.0 / 128, split.bitsPerElement(), 1e-12);
        Random r = new Random(SEED);
        double eSplit = 0;
        double eUni = 0;
        float[] out = new float[d];
        float[] q = outlierVector(r, d, strong);
        float[] state = new float[split.queryStateSize()];
        split.prepareQuery(q, 0, state, 0);
        for (int i = 0; i < 300; i++) {
            float[] x = outlierVector(r, d, strong);
            MemorySegment rec = record(split);
            split.encode(x, 0, rec, 0);
            split.decode(rec, 0, out, 0);
            eSplit += sqDist(x, out);
            assertEquals(dot(q, out), split.score(state, 0, rec, 0), 1e-3 * Math.abs(dot(q, out)) + 0.05);
            MemorySegment rec2 = record(uniform);
            uniform.encode(x, 0, rec2, 0);
            uniform.decode(rec2, 0, out, 0);
            eUni += sqDist(x, out);
        }
        assertTrue(eSplit < eUni, "split " + eSplit + " vs uniform " + eUni);
    }

    @Test
    void rejectsBadChannelLists() {
        VectorCodec a = Codecs.mse(4, 2, 1);
        VectorCodec b = Codecs.mse(4, 2, 1);
        assertThrows(IllegalArgumentException.class, () -> new MixedPrecision(8, new int[]{1, 1, 2, 3}, a, b));
        assertThrows(IllegalArgumentException.class, () -> new MixedPrecision(8, new int[]{1, 2, 3, 8}, a, b));
        assertThrows(IllegalArgumentException.class, () -> new MixedPrecision(8, new int[]{1, 2, 3}, a, b));
    }
}
