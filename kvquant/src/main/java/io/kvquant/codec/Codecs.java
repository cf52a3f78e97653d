package io.kvquant.codec;

/**
 * Factory for the TurboQuant codecs at integer or fractional rates.
 *
 * <p>A fractional rate b + f (e.g. 3.5) splits the rotated coordinates: round(f·d) of them get
 * ⌈b⌉ bits and the rest ⌊b⌋, with one norm for the whole vector. This gives exactly 2.5 or 3.5
 * code bits per coordinate at any even d. (The outlier-channel split of the TurboQuant paper is
 * {@link MixedPrecision}; it needs a second norm per vector.)
 */
public final class Codecs {

    private Codecs() {
    }

    /**
     * TurboQuant at {@code bits} code bits per coordinate (1..8, fractional allowed when
     * frac·dim is an integer). With {@code qjl}, one of those bits is the QJL sign
     * (TurboQuant_prod); otherwise all are mse bits (TurboQuant_mse).
     */
    public static VectorCodec turbo(int dim, double bits, boolean qjl, RotationKind rotation, QjlKind qjlKind,
                                    long seed, boolean normCorrection) {
        if (!(bits >= 1 && bits <= 8)) {
            throw new IllegalArgumentException("unsupported bit width " + bits + " (supported: 1 to 8)");
        }
        if (dim < 2) {
            throw new IllegalArgumentException("dimension must be >= 2, got " + dim);
        }
        Rotation rot = Rotation.create(rotation, dim, seed);
        int lo = (int) Math.floor(bits);
        double frac = bits - lo;
        int nHi = (int) Math.round(frac * dim);
        if (Math.abs(nHi - frac * dim) > 1e-9) {
            throw new IllegalArgumentException("bit width " + bits + " cannot be split exactly over " + dim
                    + " coordinates (fraction × dimension must be an integer)");
        }
        if (nHi == 0) {
            return qjl ? new TurboQuantProd(dim, lo, null, rot, qjlKind, seed, normCorrection)
                    : new TurboQuantMse(dim, lo, rot, normCorrection);
        }
        int[][] seg = {{nHi, dim - nHi}, {lo + 1, lo}};
        if (qjl) {
            if (lo < 2) {
                throw new IllegalArgumentException("QJL at a fractional rate needs at least 2 bits, got " + bits);
            }
            return new TurboQuantProd(dim, lo + 1, seg, rot, qjlKind, seed, normCorrection);
        }
        return new TurboQuantMse(dim, seg[0], seg[1], rot, normCorrection);
    }

    /** TurboQuant_mse with defaults (Hadamard rotation, no norm correction). */
    public static VectorCodec mse(int dim, double bits, long seed) {
        return turbo(dim, bits, false, RotationKind.HADAMARD, QjlKind.GAUSSIAN, seed, false);
    }
}
