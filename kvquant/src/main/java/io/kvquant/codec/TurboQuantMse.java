package io.kvquant.codec;

import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * TurboQuant_mse: keep the norm (fp16), rotate the unit vector, quantize each rotated
 * coordinate with the Lloyd–Max codebook for dimension d.
 *
 * <p>The rotated coordinates may be split into segments with different bit widths (for example
 * half of them at 4 bits and half at 3 for exactly 3.5 bits per coordinate). After a random
 * rotation every coordinate has the same distribution, so such a split needs one norm only.
 *
 * <p>Record layout: fp16 norm (2 bytes), then the codes of every segment packed densely
 * ({@link BitPacking}), each segment starting on a byte boundary.
 */
public final class TurboQuantMse implements VectorCodec {

    private static final ValueLayout.OfShort SHORT = ValueLayout.JAVA_SHORT_UNALIGNED;

    private final int dim;
    private final Rotation rotation;
    private final boolean normCorrection;
    private final int[] segStart;
    private final int[] segLen;
    private final int[] segBits;
    private final int[] segByteOff;   // offset of each segment's codes within the record
    private final Codebook[] books;
    private final float[][] bounds;   // decision boundaries of each segment, ascending
    private final float[][] search;   // their binary-search thresholds (VectorOps.searchTable), null above 5 bits
    private final float[][] centroids;
    private final float[][] paddedCentroids; // at least 16 entries, for the vector decode path
    private final int recordBytes;
    // look-up table geometry for fused scoring: per segment, groups of g codes (g·b ≤ 8 bits)
    private final int[] segGroup;
    private final int[] segLutOff;    // offset of the segment's tables in the state (after dim floats)
    private final int stateSize;
    private final io.kvquant.simd.CodeLayout layout;
    private final ThreadLocal<Scratch> scratch;

    private static final class Scratch {
        final float[] y;
        final byte[] codes;
        final byte[] packed;

        Scratch(int dim) {
            y = new float[dim];
            codes = new byte[dim];
            packed = new byte[dim + 16];
        }
    }

    /** Single bit width for every coordinate. */
    public TurboQuantMse(int dim, int bits, Rotation rotation, boolean normCorrection) {
        this(dim, new int[]{dim}, new int[]{bits}, rotation, normCorrection);
    }

    /**
     * Segmented bit widths: rotated coordinates [0, len[0]) use bits[0], the next len[1] use
     * bits[1], and so on. Lengths must add up to dim.
     */
    public TurboQuantMse(int dim, int[] segmentLengths, int[] segmentBits, Rotation rotation, boolean normCorrection) {
        if (rotation.dim() != dim) {
            throw new IllegalArgumentException("rotation dimension " + rotation.dim() + " != codec dimension " + dim);
        }
        if (segmentLengths.length != segmentBits.length || segmentLengths.length == 0) {
            throw new IllegalArgumentException("segment lengths and bits must be non-empty and of equal size");
        }
        this.dim = dim;
        this.rotation = rotation;
        this.normCorrection = normCorrection;
        int n = segmentLengths.length;
        segStart = new int[n];
        segLen = segmentLengths.clone();
        segBits = segmentBits.clone();
        segByteOff = new int[n];
        books = new Codebook[n];
        bounds = new float[n][];
        search = new float[n][];
        centroids = new float[n][];
        paddedCentroids = new float[n][];
        segGroup = new int[n];
        segLutOff = new int[n];
        int start = 0;
        int bytes = 2;
        int lut = dim;
        for (int s = 0; s < n; s++) {
            if (segLen[s] <= 0) {
                throw new IllegalArgumentException("segment length must be > 0, got " + segLen[s]);
            }
            books[s] = Codebook.forDimension(Math.max(dim, 2), segBits[s]);
            bounds[s] = books[s].boundaries();
            search[s] = VectorOps.searchTable(bounds[s], segBits[s]);
            centroids[s] = books[s].centroids();
            paddedCentroids[s] = Arrays.copyOf(centroids[s], Math.max(16, centroids[s].length));
            segStart[s] = start;
            segByteOff[s] = bytes;
            start += segLen[s];
            bytes += BitPacking.packedBytes(segLen[s], segBits[s]);
            segGroup[s] = Math.max(1, 8 / segBits[s]);
            segLutOff[s] = lut;
            int groups = (segLen[s] + segGroup[s] - 1) / segGroup[s];
            lut += groups * (1 << (segGroup[s] * segBits[s]));
        }
        if (start != dim) {
            throw new IllegalArgumentException("segment lengths add up to " + start + ", expected " + dim);
        }
        recordBytes = bytes;
        stateSize = lut;
        layout = layout(recordBytes, dim, new int[0], new int[0], new int[0], new int[0], new int[0], new float[0][]);
        scratch = ThreadLocal.withInitial(() -> new Scratch(dim));
    }

    @Override
    public int dim() {
        return dim;
    }

    @Override
    public int recordBytes() {
        return recordBytes;
    }

    public Rotation rotation() {
        return rotation;
    }

    /** Segment layout, for decoders outside this class: first rotated coordinate of each segment. */
    public int[] segmentStarts() {
        return segStart.clone();
    }

    public int[] segmentLengths() {
        return segLen.clone();
    }

    public int[] segmentBits() {
        return segBits.clone();
    }

    /** Byte offset of each segment's packed codes in a record (the fp16 norm is bytes 0–1; codes LSB first). */
    public int[] segmentByteOffsets() {
        return segByteOff.clone();
    }

    /** The centroids of segment {@code s} (unit-vector scale: a coordinate is norm × centroid). */
    public float[] centroids(int s) {
        return centroids[s].clone();
    }

    /** True when the stored norm is corrected (the reconstruction is still norm × centroid). */
    public boolean normCorrection() {
        return normCorrection;
    }

    /** Average code bits per coordinate (without the norm). */
    public double codeBits() {
        double b = 0;
        for (int s = 0; s < segLen.length; s++) {
            b += (double) segLen[s] * segBits[s];
        }
        return b / dim;
    }

    /**
     * Fused encoder: normalize, rotate, quantize by compare-and-count against the sorted
     * boundaries and pack straight into {@code dst}. Bit-identical to {@link #encodeReference}
     * (same rotation, same float product y·(1/‖x‖), same strict comparisons); with norm
     * correction (which needs every centroid first) it is the reference.
     */
    @Override
    public void encode(float[] x, int xo, MemorySegment dst, long off) {
        if (normCorrection) {
            encodeReference(x, xo, dst, off);
            return;
        }
        VectorOps ops = Simd.ops();
        float norm = VectorCodec.norm(ops, x, xo, dim);
        if (norm == 0f) {
            dst.asSlice(off, recordBytes).fill((byte) 0); // norm 0, every code 0: the reference's record
            return;
        }
        float stored = VectorCodec.toFp16(norm, "vector norm");
        Scratch t = scratch.get();
        rotation.rotate(x, xo, t.y, 0);
        float inv = 1f / norm;
        dst.set(SHORT, off, Float.floatToFloat16(stored));
        for (int s = 0; s < segLen.length; s++) {
            ops.quantizePack(t.y, segStart[s], segLen[s], inv, bounds[s], search[s], segBits[s], dst, off + segByteOff[s]);
        }
    }

    /** The reference encoder: binary search per coordinate, codes packed through a heap buffer. */
    void encodeReference(float[] x, int xo, MemorySegment dst, long off) {
        double ss = VectorCodec.checkedSumOfSquares(x, xo, dim);
        Scratch t = scratch.get();
        float stored = encodeRotated(x, xo, ss, t.y, t.codes);
        writeRecord(stored, t.codes, dst, off, t.packed);
    }

    /**
     * Encodes into {@code codes} (one byte per coordinate) and returns the fp16-rounded norm to
     * store. On return {@code y} holds the rotated vector x (not normalized). Input already checked.
     */
    float encodeRotated(float[] x, int xo, double sumSq, float[] y, byte[] codes) {
        float norm = (float) Math.sqrt(sumSq);
        rotation.rotate(x, xo, y, 0);
        if (norm == 0f) {
            Arrays.fill(codes, 0, dim, (byte) 0);
            return 0f;
        }
        float inv = 1f / norm;
        double cc = 0;
        for (int s = 0; s < segLen.length; s++) {
            Codebook cb = books[s];
            float[] c = centroids[s];
            for (int j = segStart[s], e = j + segLen[s]; j < e; j++) {
                int code = cb.quantize(y[j] * inv);
                codes[j] = (byte) code;
                cc += (double) c[code] * c[code];
            }
        }
        float stored = norm;
        if (normCorrection && cc > 0) {
            stored = (float) (norm / Math.sqrt(cc));
        }
        return VectorCodec.toFp16(stored, "vector norm");
    }

    void writeRecord(float storedNorm, byte[] codes, MemorySegment dst, long off, byte[] packed) {
        dst.set(SHORT, off, Float.floatToFloat16(storedNorm));
        for (int s = 0; s < segLen.length; s++) {
            int n = BitPacking.packedBytes(segLen[s], segBits[s]);
            BitPacking.pack(codes, segStart[s], segLen[s], segBits[s], packed, 0);
            MemorySegment.copy(packed, 0, dst, ValueLayout.JAVA_BYTE, off + segByteOff[s], n);
        }
    }

    /** Reads the stored norm of the record at {@code off}. */
    static float readNorm(MemorySegment src, long off) {
        return Float.float16ToFloat(src.get(SHORT, off));
    }

    /** Writes n·c[idx] (rotated domain) for the record at {@code off} into y[0..dim). */
    void decodeRotated(MemorySegment src, long off, float[] y) {
        float norm = readNorm(src, off);
        for (int s = 0; s < segLen.length; s++) {
            int bits = segBits[s];
            int mask = (1 << bits) - 1;
            float[] c = centroids[s];
            long base = off + segByteOff[s];
            long bit = 0;
            for (int j = segStart[s], e = j + segLen[s]; j < e; j++) {
                y[j] = norm * c[readBits(src, base, bit, bits) & mask];
                bit += bits;
            }
        }
    }

    static int readBits(MemorySegment src, long base, long bit, int nbits) {
        long byteIdx = base + (bit >>> 3);
        int shift = (int) (bit & 7);
        int v = Byte.toUnsignedInt(src.get(ValueLayout.JAVA_BYTE, byteIdx)) >>> shift;
        if (shift + nbits > 8) {
            v |= Byte.toUnsignedInt(src.get(ValueLayout.JAVA_BYTE, byteIdx + 1)) << (8 - shift);
        }
        return v;
    }

    @Override
    public void decode(MemorySegment src, long off, float[] out, int oo) {
        // expanded in place from the record (no heap copy) straight into out, then un-rotated in place
        Simd.ops().codeDecode(layout, src, off, out, oo);
        rotation.unrotate(out, oo, out, oo);
    }

    @Override
    public int queryStateSize() {
        return stateSize;
    }

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        rotation.rotate(q, qo, state, so);
        buildTables(state, so, state, so);
    }

    /** Builds the look-up tables for rotated query rq[rqo..rqo+dim) into state[so+dim..). */
    void buildTables(float[] rq, int rqo, float[] state, int so) {
        for (int s = 0; s < segLen.length; s++) {
            int g = segGroup[s];
            int bits = segBits[s];
            int tableSize = 1 << (g * bits);
            int mask = (1 << bits) - 1;
            float[] c = centroids[s];
            int groups = (segLen[s] + g - 1) / g;
            int lut = segLutOff[s];
            for (int k = 0; k < groups; k++) {
                int j0 = segStart[s] + k * g;
                int gk = Math.min(g, segStart[s] + segLen[s] - j0);
                int tk = 1 << (gk * bits);
                int tbase = so + lut + k * tableSize;
                for (int v = 0; v < tk; v++) {
                    float acc = 0f;
                    for (int i = 0; i < gk; i++) {
                        acc += rq[rqo + j0 + i] * c[(v >>> (i * bits)) & mask];
                    }
                    state[tbase + v] = acc;
                }
            }
        }
    }

    @Override
    public float score(float[] state, int so, MemorySegment src, long off) {
        return readNorm(src, off) * tableSum(state, so, src, off);
    }

    /** Σ over groups of the table entries selected by the record's codes (no norm applied). */
    float tableSum(float[] state, int so, MemorySegment src, long off) {
        float sum = 0f;
        for (int s = 0; s < segLen.length; s++) {
            int g = segGroup[s];
            int bits = segBits[s];
            int gbits = g * bits;
            int tableSize = 1 << gbits;
            int len = segLen[s];
            int groups = (len + g - 1) / g;
            int lut = so + segLutOff[s];
            long base = off + segByteOff[s];
            if (gbits == 8) {
                // one code group per byte: the common 1-, 2-, 4- and 8-bit cases
                for (int k = 0; k < groups; k++) {
                    sum += state[lut + (k << 8) + Byte.toUnsignedInt(src.get(ValueLayout.JAVA_BYTE, base + k))];
                }
            } else {
                long bit = 0;
                for (int k = 0; k < groups; k++) {
                    int gk = Math.min(g, len - k * g);
                    int v = readBits(src, base, bit, gk * bits) & ((1 << (gk * bits)) - 1);
                    sum += state[lut + k * tableSize + v];
                    bit += gbits;
                }
            }
        }
        return sum;
    }

    @Override
    public int accumulatorSize() {
        return dim;
    }

    @Override
    public void accumulate(float w, MemorySegment src, long off, float[] acc, int ao) {
        float wn = w * readNorm(src, off);
        if (wn == 0f) {
            return;
        }
        for (int s = 0; s < segLen.length; s++) {
            int bits = segBits[s];
            int mask = (1 << bits) - 1;
            float[] c = centroids[s];
            long base = off + segByteOff[s];
            long bit = 0;
            for (int j = segStart[s], e = j + segLen[s]; j < e; j++) {
                acc[ao + j] += wn * c[readBits(src, base, bit, bits) & mask];
                bit += bits;
            }
        }
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        rotation.unrotate(acc, ao, out, oo);
    }


    @Override
    public int featureSize() {
        return dim;
    }

    @Override
    public void queryFeatures(float[] q, int qo, float[] out, int oo) {
        rotation.rotate(q, qo, out, oo);
    }

    @Override
    public void features(byte[] buf, int off, float[] out, int oo) {
        float norm = Float.float16ToFloat((short) ((buf[off] & 0xFF) | (buf[off + 1] << 8)));
        VectorOps ops = Simd.ops();
        for (int s = 0; s < segLen.length; s++) {
            ops.decodeCodes(buf, off + segByteOff[s], segBits[s], paddedCentroids[s], segLen[s], norm, out, oo + segStart[s]);
        }
    }

    @Override
    public void scoreMany(byte[] buf, int off, float[] g, int go, int gs, int nq, float[] out, int oo, int os) {
        float norm = Float.float16ToFloat((short) ((buf[off] & 0xFF) | (buf[off + 1] << 8)));
        for (int i = 0; i < nq; i++) {
            out[oo + i * os] = 0f;
        }
        VectorOps ops = Simd.ops();
        for (int s = 0; s < segLen.length; s++) {
            ops.decodeDot(buf, off + segByteOff[s], segBits[s], paddedCentroids[s], segLen[s], norm, g, go + segStart[s], gs, nq,
                    out, oo, os);
        }
    }

    @Override
    public io.kvquant.simd.CodeLayout codeLayout() {
        return layout;
    }

    /** The segments as kernel parts (all scaled by the norm at byte 0), features starting at {@code featOff}. */
    io.kvquant.simd.CodeLayout layout(int recordBytes, int featureSize, int[] extraScaleOff, int[] extraCodeOff, int[] extraBits,
                                      int[] extraCount, int[] extraFeatOff, float[][] extraTables) {
        int n = segLen.length;
        int e = extraBits.length;
        int[] so = new int[n + e];
        int[] co = new int[n + e];
        int[] bi = new int[n + e];
        int[] cn = new int[n + e];
        int[] fo = new int[n + e];
        float[][] tb = new float[n + e][];
        for (int s = 0; s < n; s++) {
            so[s] = 0;
            co[s] = segByteOff[s];
            bi[s] = segBits[s];
            cn[s] = segLen[s];
            fo[s] = segStart[s];
            tb[s] = centroids[s];
        }
        for (int x = 0; x < e; x++) {
            so[n + x] = extraScaleOff[x];
            co[n + x] = extraCodeOff[x];
            bi[n + x] = extraBits[x];
            cn[n + x] = extraCount[x];
            fo[n + x] = extraFeatOff[x];
            tb[n + x] = extraTables[x];
        }
        return new io.kvquant.simd.CodeLayout(recordBytes, featureSize, so, co, bi, cn, fo, tb);
    }

    @Override
    public void finishFeatures(float[] acc, int ao, float[] out, int oo) {
        rotation.unrotate(acc, ao, out, oo);
    }

    @Override
    public String describe() {
        StringBuilder b = new StringBuilder("mse(d=").append(dim).append(", bits=");
        for (int s = 0; s < segLen.length; s++) {
            b.append(s == 0 ? "" : "+").append(segLen[s]).append('@').append(segBits[s]);
        }
        return b.append(", ").append(rotation.kind().name().toLowerCase(java.util.Locale.ROOT))
                .append(normCorrection ? ", normfix" : "").append(')').toString();
    }

    /** Exposed for tests: the codebook of segment s. */
    Codebook codebook(int s) {
        return books[s];
    }

    static {
        Simd.ops(); // make the backend choice (and its log line) happen at codec start-up
    }
}
