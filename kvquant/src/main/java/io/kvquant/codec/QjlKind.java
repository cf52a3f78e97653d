package io.kvquant.codec;

/** The random projection S of the 1-bit QJL residual quantizer. */
public enum QjlKind {
    /** i.i.d. N(0, 1) entries; estimator scale √(π/2)/d. */
    GAUSSIAN,
    /** Rows of √d times a Haar orthogonal matrix; estimator scale 1/(d^{3/2}·E|u₁|), u uniform on the sphere. */
    ORTHOGONAL
}
