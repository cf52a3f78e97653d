package io.kvquant.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class RotationTest {

    private static final long SEED = 42L;

    @ParameterizedTest(name = "{0} d={1}")
    @CsvSource({"HADAMARD,1", "HADAMARD,8", "HADAMARD,64", "HADAMARD,128", "HADAMARD,96", "HADAMARD,100",
            "HAAR,3", "HAAR,64", "HAAR,96", "HAAR,128"})
    void isOrthogonalToFloatPrecision(RotationKind kind, int d) {
        Rotation rot = Rotation.create(kind, d, SEED);
        float[][] cols = new float[d][d];
        for (int i = 0; i < d; i++) {
            float[] e = new float[d];
            e[i] = 1f;
            rot.rotate(e, 0, cols[i], 0);
        }
        // Πᵀ Π = I: columns of Π are orthonormal
        for (int i = 0; i < d; i++) {
            for (int j = i; j < d; j++) {
                double dot = 0;
                for (int k = 0; k < d; k++) {
                    dot += (double) cols[i][k] * cols[j][k];
                }
                assertEquals(i == j ? 1.0 : 0.0, dot, 2e-6, kind + " d=" + d + " seed=" + SEED + " <c" + i + ",c" + j + ">");
            }
        }
    }

    @ParameterizedTest(name = "{0} d={1}")
    @CsvSource({"HADAMARD,128", "HADAMARD,96", "HAAR,64", "HAAR,96"})
    void unrotateInvertsRotateInPlaceAndDeterministically(RotationKind kind, int d) {
        Random r = new Random(SEED);
        float[] x = new float[d + 2];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        Rotation rot = Rotation.create(kind, d, SEED);
        float[] y = x.clone();
        rot.rotate(y, 2, y, 2);
        float[] y2 = new float[d];
        Rotation.create(kind, d, SEED).rotate(x, 2, y2, 0);
        for (int i = 0; i < d; i++) {
            assertEquals(y2[i], y[2 + i], 1e-6f, "same seed, same rotation");
        }
        float[] other = new float[d];
        Rotation.create(kind, d, SEED + 1).rotate(x, 2, other, 0);
        assertNotEquals(y2[0], other[0], "another seed gives another rotation");
        rot.unrotate(y, 2, y, 2);
        for (int i = 0; i < d; i++) {
            assertEquals(x[2 + i], y[2 + i], 2e-5f, "Πᵀ Π x = x at " + i);
        }
    }

    @ParameterizedTest
    @CsvSource({"HADAMARD", "HAAR"})
    void oneHotInputIsSpreadOverAllCoordinates(RotationKind kind) {
        int d = 128;
        Rotation rot = Rotation.create(kind, d, SEED);
        float[] e = new float[d];
        e[5] = 1f;
        float[] y = new float[d];
        rot.rotate(e, 0, y, 0);
        float max = 0;
        for (float v : y) {
            max = Math.max(max, Math.abs(v));
        }
        // a mixed unit vector has no coordinate close to 1
        org.junit.jupiter.api.Assertions.assertTrue(max < 0.5f, kind + " left a coordinate of " + max);
    }

    @org.junit.jupiter.api.Test
    void rejectsBadDimensionAndKind() {
        assertThrows(IllegalArgumentException.class, () -> Rotation.create(RotationKind.HAAR, 0, 1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> RotationKind.parse("fourier"));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("fourier"));
    }
}
