package io.kvquant.codec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

class BitPackingTest {

    @Test
    void denseSizes() {
        assertEquals(48, BitPacking.packedBytes(128, 3));
        assertEquals(16, BitPacking.packedBytes(128, 1));
        assertEquals(3, BitPacking.packedBytes(7, 3));
        assertEquals(0, BitPacking.packedBytes(0, 5));
    }

    @Test
    void roundTripsEveryWidthOnOddCounts() {
        Random r = new Random(11);
        try (Arena arena = Arena.ofConfined()) {
            for (int bits = 1; bits <= 8; bits++) {
                for (int count : new int[]{1, 7, 13, 64, 127, 1021}) {
                    byte[] codes = new byte[count];
                    for (int i = 0; i < count; i++) {
                        codes[i] = (byte) r.nextInt(1 << bits);
                    }
                    byte[] packed = new byte[BitPacking.packedBytes(count, bits) + 3];
                    packed[packed.length - 1] = 0x55; // guard byte must survive
                    BitPacking.pack(codes, count, bits, packed, 1);
                    assertEquals(0x55, packed[packed.length - 1]);
                    byte[] back = new byte[count];
                    BitPacking.unpack(packed, 1, count, bits, back);
                    assertArrayEquals(codes, back, "bits=" + bits + " count=" + count);
                    MemorySegment seg = arena.allocate(packed.length + 8);
                    byte[] scratch = new byte[packed.length];
                    BitPacking.pack(codes, count, bits, seg, 5, scratch);
                    byte[] back2 = new byte[count];
                    BitPacking.unpack(seg, 5, count, bits, back2, scratch);
                    assertArrayEquals(codes, back2, "segment bits=" + bits + " count=" + count);
                }
            }
        }
    }

    @Test
    void rejectsCodesThatDoNotFit() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> BitPacking.pack(new byte[]{0, 8}, 2, 3, new byte[1], 0));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("index 1"), e.getMessage());
    }
}
