package io.kvquant.simd;

import java.util.Arrays;

/**
 * Where the packed codes of one fixed-size record live, for the kernels that read records in
 * place ({@link VectorOps#codeScores}, {@link VectorOps#codeAccumulate}). A record is a list of
 * parts; part p holds {@code count[p]} codes of {@code bits[p]} bits packed LSB first from byte
 * {@code codeOff[p]}, scaled by the fp16 value at byte {@code scaleOff[p]}, and stands for the
 * feature coordinates [featOff[p], featOff[p] + count[p]): f_j = scale · table[code_j].
 * A TurboQuant_mse record is one part per bit-width segment (all sharing the norm); a
 * TurboQuant_prod record adds the QJL signs as a 1-bit part scaled by the residual norm.
 */
public final class CodeLayout {

    /** Tables are padded to this many entries so a vector path can load them whole. */
    public static final int TABLE_PAD = 64;

    final int recordBytes;
    final int featureSize;
    final int[] scaleOff;
    final int[] codeOff;
    final int[] bits;
    final int[] count;
    final int[] featOff;
    final float[][] table;

    /**
     * @param tables centroid table of each part ({@code 2^bits[p]} entries, copied and padded)
     */
    public CodeLayout(int recordBytes, int featureSize, int[] scaleOff, int[] codeOff, int[] bits, int[] count, int[] featOff,
                      float[][] tables) {
        int n = scaleOff.length;
        if (codeOff.length != n || bits.length != n || count.length != n || featOff.length != n || tables.length != n) {
            throw new IllegalArgumentException("code layout arrays must have one entry per part");
        }
        for (int p = 0; p < n; p++) {
            if (bits[p] < 1 || bits[p] > 8 || tables[p].length < (1 << bits[p])) {
                throw new IllegalArgumentException("part " + p + ": " + bits[p] + " bits with " + tables[p].length + " table entries");
            }
            long end = codeOff[p] + ((long) count[p] * bits[p] + 7) / 8;
            if (end > recordBytes || scaleOff[p] + 2 > recordBytes || featOff[p] + count[p] > featureSize) {
                throw new IllegalArgumentException("part " + p + " does not fit the record or the feature vector");
            }
        }
        this.recordBytes = recordBytes;
        this.featureSize = featureSize;
        this.scaleOff = scaleOff.clone();
        this.codeOff = codeOff.clone();
        this.bits = bits.clone();
        this.count = count.clone();
        this.featOff = featOff.clone();
        this.table = new float[n][];
        for (int p = 0; p < n; p++) {
            table[p] = Arrays.copyOf(tables[p], Math.max(TABLE_PAD, tables[p].length));
        }
    }

    public int recordBytes() {
        return recordBytes;
    }

    public int featureSize() {
        return featureSize;
    }

    public int parts() {
        return scaleOff.length;
    }
}
