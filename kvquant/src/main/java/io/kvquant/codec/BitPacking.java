package io.kvquant.codec;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Dense little-endian bit packing of b-bit codes, b = 1..8: code i occupies bits
 * [i·b, i·b + b) of the stream, least significant bit first. 3-bit codes take 3 bits.
 */
public final class BitPacking {

    private BitPacking() {
    }

    /** Bytes needed for {@code count} codes of {@code bits} bits. */
    public static int packedBytes(int count, int bits) {
        Codebook.checkBits(bits);
        if (count < 0) {
            throw new IllegalArgumentException("count must be >= 0, got " + count);
        }
        return (int) (((long) count * bits + 7) >>> 3);
    }

    /** Packs codes[0..count) into dst[off..off+packedBytes). Codes must be < 2^bits. */
    public static void pack(byte[] codes, int count, int bits, byte[] dst, int off) {
        pack(codes, 0, count, bits, dst, off);
    }

    /** Packs codes[from..from+count) into dst[off..off+packedBytes). */
    public static void pack(byte[] codes, int from, int count, int bits, byte[] dst, int off) {
        int n = packedBytes(count, bits);
        java.util.Arrays.fill(dst, off, off + n, (byte) 0);
        int mask = (1 << bits) - 1;
        long bit = 0;
        for (int i = 0; i < count; i++) {
            int c = codes[from + i] & 0xFF;
            if (c > mask) {
                throw new IllegalArgumentException("code " + c + " at index " + i + " does not fit in " + bits + " bits");
            }
            int byteIdx = (int) (bit >>> 3);
            int shift = (int) (bit & 7);
            int v = c << shift;
            dst[off + byteIdx] |= (byte) v;
            if (shift + bits > 8) {
                dst[off + byteIdx + 1] |= (byte) (v >>> 8);
            }
            bit += bits;
        }
    }

    /** Unpacks {@code count} codes from src[off..) into codes[0..count). */
    public static void unpack(byte[] src, int off, int count, int bits, byte[] codes) {
        Codebook.checkBits(bits);
        int mask = (1 << bits) - 1;
        long bit = 0;
        for (int i = 0; i < count; i++) {
            int byteIdx = (int) (bit >>> 3);
            int shift = (int) (bit & 7);
            int v = (src[off + byteIdx] & 0xFF) >>> shift;
            if (shift + bits > 8) {
                v |= (src[off + byteIdx + 1] & 0xFF) << (8 - shift);
            }
            codes[i] = (byte) (v & mask);
            bit += bits;
        }
    }

    /** Packs into a memory segment at a byte offset. */
    public static void pack(byte[] codes, int count, int bits, MemorySegment dst, long off, byte[] scratch) {
        int n = packedBytes(count, bits);
        pack(codes, count, bits, scratch, 0);
        MemorySegment.copy(scratch, 0, dst, ValueLayout.JAVA_BYTE, off, n);
    }

    /** Unpacks from a memory segment at a byte offset. */
    public static void unpack(MemorySegment src, long off, int count, int bits, byte[] codes, byte[] scratch) {
        int n = packedBytes(count, bits);
        MemorySegment.copy(src, ValueLayout.JAVA_BYTE, off, scratch, 0, n);
        unpack(scratch, 0, count, bits, codes);
    }
}
