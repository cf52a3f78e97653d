package io.kvquant.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.simd.ScalarOps;
import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The fused TurboQuant_mse encoder against the reference encoder (binary search, heap packing). */
class FastEncoderTest {

    private static final long SEED = 424242L;

    /** 115,000 vectors of mixed scales and shapes (5-bit and 4.5-bit: the middle tier): every record bit-identical to the reference's. */
    @Test
    void recordsAreBitIdenticalToTheReferenceEncoder() {
        Random r = new Random(SEED);
        Object[][] configs = {{128, 3.5, 70_000}, {128, 2.5, 10_000}, {64, 4.0, 5_000}, {96, 3.0, 5_000}, {128, 2.0, 5_000},
                {64, 1.0, 5_000}, {64, 5.0, 5_000}, {128, 5.0, 5_000}, {64, 4.5, 5_000}};
        int total = 0;
        try (Arena arena = Arena.ofConfined()) {
            for (Object[] c : configs) {
                int d = (Integer) c[0];
                TurboQuantMse codec = (TurboQuantMse) Codecs.mse(d, (Double) c[1], 7);
                int rb = codec.recordBytes();
                int count = (Integer) c[2];
                // whole pages: the fast path writes into the page, the reference into a second one
                MemorySegment fast = arena.allocate((long) rb * 1000);
                MemorySegment ref = arena.allocate((long) rb * 1000);
                float[] x = new float[d];
                for (int i = 0; i < count; i++) {
                    int shape = i % 5;
                    double scale = Math.min(200, Math.exp(r.nextGaussian() * 3)); // norms stay inside fp16
                    for (int j = 0; j < d; j++) {
                        x[j] = switch (shape) {
                            case 0 -> (float) (r.nextGaussian() * scale);
                            case 1 -> j == i % d ? (float) scale : 0f;                         // one-hot
                            case 2 -> (float) ((r.nextInt(7) - 3) * scale);                   // few distinct values
                            case 3 -> (float) (r.nextGaussian() * (j % 16 == 3 ? 20 : 1));    // outlier channels
                            default -> (float) (r.nextDouble() * scale);                      // all positive
                        };
                    }
                    long off = (long) (i % 1000) * rb;
                    fast.asSlice(off, rb).fill((byte) 0x5A);
                    ref.asSlice(off, rb).fill((byte) 0xA5);
                    codec.encode(x, 0, fast, off);
                    codec.encodeReference(x, 0, ref, off);
                    long mismatch = fast.asSlice(off, rb).mismatch(ref.asSlice(off, rb));
                    assertEquals(-1L, mismatch, "d=" + d + " rate=" + c[1] + " vector " + i + " seed=" + SEED);
                    total++;
                }
            }
        }
        assertEquals(115_000, total);
    }

    @Test
    void zeroVectorsEncodeToTheReferenceRecordAndNonFiniteValuesAreRejected() {
        TurboQuantMse codec = (TurboQuantMse) Codecs.mse(128, 3.5, 1);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment a = arena.allocate(codec.recordBytes());
            MemorySegment b = arena.allocate(codec.recordBytes());
            a.fill((byte) 0x33);
            codec.encode(new float[128], 0, a, 0);
            codec.encodeReference(new float[128], 0, b, 0);
            assertEquals(-1L, a.mismatch(b));
            float[] out = new float[128];
            codec.decode(a, 0, out, 0);
            for (float v : out) {
                assertEquals(0.0, v, 0.0);
            }
            for (float bad : new float[]{Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
                float[] x = new float[128];
                x[17] = bad;
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> codec.encode(x, 0, a, 0));
                assertTrue(e.getMessage().contains("component 17"), e.getMessage());
            }
        }
    }

    /** The fused Hadamard rotation equals the original scalar multiply/fwht/scale rounds bit for bit. */
    @Test
    void hadamardRotationIsBitIdenticalToTheOriginalRounds() {
        Random r = new Random(SEED + 3);
        for (int d : new int[]{8, 32, 64, 96, 128, 256}) {
            HadamardRotation rot = (HadamardRotation) Rotation.create(RotationKind.HADAMARD, d, 7);
            for (int rep = 0; rep < 200; rep++) {
                float[] x = new float[d + 3];
                for (int i = 0; i < x.length; i++) {
                    x[i] = (float) (r.nextGaussian() * Math.exp(r.nextGaussian() * 3));
                }
                float[] want = new float[d + 1];
                float[] got = new float[d + 1];
                rot.rotateReference(x, 3, want, 1);
                rot.rotate(x, 3, got, 1);
                for (int i = 0; i < d + 1; i++) {
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), "d=" + d + " coordinate " + i);
                }
            }
        }
    }

    /** The reordered norm equals the sequential double sum's float norm, on every vector tried. */
    @Test
    void normEqualsTheSequentialSumsNorm() {
        Random r = new Random(SEED + 4);
        VectorOps vector = Simd.vectorOpsOrNull();
        for (int i = 0; i < 200_000; i++) {
            int d = 1 + r.nextInt(160);
            float[] x = new float[d];
            for (int j = 0; j < d; j++) {
                x[j] = switch (i % 3) {
                    case 0 -> (float) (r.nextGaussian() * Math.exp(r.nextGaussian() * 4));
                    case 1 -> (float) r.nextInt(5);                 // small integers: sums land on exact values
                    default -> j % 9 == 0 ? (float) r.nextGaussian() : 0f;
                };
            }
            float want = (float) Math.sqrt(VectorCodec.checkedSumOfSquares(x, 0, d));
            for (VectorOps ops : new VectorOps[]{ScalarOps.INSTANCE, vector}) {
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(VectorCodec.norm(ops, x, 0, d)),
                        ops.name() + " vector " + i);
            }
        }
        float[] bad = new float[16];
        bad[9] = Float.NaN;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> VectorCodec.norm(vector, bad, 0, 16));
        assertTrue(e.getMessage().contains("component 9"), e.getMessage());
    }

    /** Values exactly on a decision boundary (and one ulp either side) get the binary search's code on both backends. */
    @Test
    void tiesOnBoundariesMatchTheBinarySearch() {
        VectorOps vector = Simd.vectorOpsOrNull();
        for (int bits = 1; bits <= 5; bits++) { // 5: the middle tier's codes (a two-vector last search step at 8 lanes)
            Codebook cb = Codebook.forDimension(128, bits);
            float[] b = cb.boundaries();
            int n = 3 * b.length + 2;
            n += 16 - n % 16 + 5; // a vector part and a tail
            float[] y = new float[n];
            for (int i = 0; i < n; i++) {
                int k = (i / 3) % b.length;
                y[i] = switch (i % 3) {
                    case 0 -> b[k];
                    case 1 -> Math.nextUp(b[k]);
                    default -> Math.nextDown(b[k]);
                };
            }
            y[n - 1] = 10f;
            y[n - 2] = -10f;
            for (VectorOps ops : new VectorOps[]{ScalarOps.INSTANCE, vector}) {
                try (Arena arena = Arena.ofConfined()) {
                    int bytes = BitPacking.packedBytes(n, bits);
                    MemorySegment seg = arena.allocate(bytes + 4);
                    seg.fill((byte) 0x77);
                    ops.quantizePack(y, 0, n, 1f, b, bits, seg, 1);
                    byte[] packed = seg.asSlice(1, bytes).toArray(ValueLayout.JAVA_BYTE);
                    byte[] codes = new byte[n];
                    BitPacking.unpack(packed, 0, n, bits, codes);
                    for (int i = 0; i < n; i++) {
                        assertEquals(cb.quantize(y[i]), codes[i], ops.name() + " bits=" + bits + " value " + y[i]);
                    }
                    assertEquals((byte) 0x77, seg.get(ValueLayout.JAVA_BYTE, 0), "wrote before its range");
                    assertEquals((byte) 0x77, seg.get(ValueLayout.JAVA_BYTE, 1 + bytes), "wrote past its range");
                }
            }
        }
    }
}
