package io.kvquant.codec;

/**
 * A seeded random orthogonal transform Π of R^d. Implementations are immutable and thread-safe.
 * {@code rotate} and {@code unrotate} may be called in place (same array and offset).
 */
public interface Rotation {

    int dim();

    RotationKind kind();

    /** y = Π x. */
    void rotate(float[] x, int xOff, float[] y, int yOff);

    /** x = Πᵀ y. */
    void unrotate(float[] y, int yOff, float[] x, int xOff);

    /** A rotation of the given kind and dimension from a seed (same seed, same rotation). */
    static Rotation create(RotationKind kind, int dim, long seed) {
        if (dim < 1) {
            throw new IllegalArgumentException("rotation dimension must be >= 1, got " + dim);
        }
        return switch (kind) {
            case HADAMARD -> new HadamardRotation(dim, seed);
            case HAAR -> new HaarRotation(dim, seed);
        };
    }
}
