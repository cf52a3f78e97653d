package io.kvquant.codec;

import java.util.Locale;

/** The random orthogonal transform applied before scalar quantization. */
public enum RotationKind {
    /** Randomized Walsh–Hadamard: random signs then a fast transform, O(d log d). */
    HADAMARD,
    /** Haar-random dense orthogonal matrix (QR of a Gaussian matrix), O(d²). */
    HAAR;

    /** Parses {@code hadamard} or {@code haar} (case-insensitive). */
    public static RotationKind parse(String s) {
        return switch (s.trim().toLowerCase(Locale.ROOT)) {
            case "hadamard", "wht", "rht" -> HADAMARD;
            case "haar", "dense", "qr" -> HAAR;
            default -> throw new IllegalArgumentException("unknown rotation '" + s + "' (known: hadamard, haar)");
        };
    }
}
