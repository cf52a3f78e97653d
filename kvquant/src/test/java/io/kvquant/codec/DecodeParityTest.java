package io.kvquant.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.simd.ScalarOps;
import io.kvquant.simd.Simd;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * TurboQuant_mse decode on the vector backend (codes expanded from the page, inverse Hadamard
 * rounds with in-register butterflies) against the scalar reference: codes expanded one at a time
 * by {@link ScalarOps#codeDecode}, then the inverse rotation as first written
 * ({@link HadamardRotation#unrotateReference}). Bit for bit, for every bit rate the factory
 * accepts at d = 64, 96 and 128, records anywhere in a segment (the last ones need the padded
 * copy: their word reads would pass the segment's end) and output at an offset.
 */
class DecodeParityTest {

    private static final long SEED = 515151L;

    @Test
    void decodeIsBitIdenticalToTheScalarReference() {
        assertTrue(Simd.vectorized() || !Boolean.getBoolean("kvquant.simd.require"), "vector backend expected in tests");
        Random r = new Random(SEED);
        double[] rates = {1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 8};
        int checked = 0;
        try (Arena arena = Arena.ofConfined()) {
            for (int d : new int[]{64, 96, 128}) {
                for (double bits : rates) {
                    TurboQuantMse c = (TurboQuantMse) Codecs.turbo(d, bits, false, RotationKind.HADAMARD, QjlKind.GAUSSIAN, 11, false);
                    HadamardRotation rot = (HadamardRotation) c.rotation();
                    int n = 40;
                    int rb = c.recordBytes();
                    MemorySegment seg = arena.allocate((long) rb * n); // no slack: the last records take the padded path
                    float[] x = new float[d];
                    for (int t = 0; t < n; t++) {
                        double scale = Math.exp(r.nextGaussian() * 2);
                        for (int i = 0; i < d; i++) {
                            x[i] = (float) (r.nextGaussian() * scale * (i % 17 == 0 ? 8 : 1)); // a few outlier channels
                        }
                        c.encode(x, 0, seg, (long) t * rb);
                    }
                    float[] got = new float[d + 5];
                    float[] rotated = new float[d];
                    float[] want = new float[d];
                    for (int t = 0; t < n; t++) {
                        c.decode(seg, (long) t * rb, got, 3);
                        ScalarOps.INSTANCE.codeDecode(c.codeLayout(), seg, (long) t * rb, rotated, 0);
                        rot.unrotateReference(rotated, 0, want, 0);
                        for (int i = 0; i < d; i++) {
                            assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[3 + i]),
                                    "d=" + d + " bits=" + bits + " record " + t + " coordinate " + i + ": " + want[i] + " vs " + got[3 + i]);
                        }
                        checked++;
                    }
                }
            }
        }
        assertEquals(3 * rates.length * 40, checked);
    }
}
