package io.kvquant.codec;

import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.util.Random;

/**
 * Haar-random orthogonal matrix: Q from the QR decomposition of a seeded Gaussian matrix,
 * computed with twice-iterated modified Gram–Schmidt in double precision (R's diagonal is then
 * positive, which makes Q Haar-distributed), stored row-major in float.
 */
final class HaarRotation implements Rotation {

    private final int dim;
    private final float[] q; // row-major d x d; rotate: y = Q x
    private final ThreadLocal<float[]> scratch;

    HaarRotation(int dim, long seed) {
        this.dim = dim;
        Random rnd = new Random(seed);
        double[][] cols = new double[dim][dim];
        for (int j = 0; j < dim; j++) {
            for (int i = 0; i < dim; i++) {
                cols[j][i] = rnd.nextGaussian();
            }
        }
        for (int j = 0; j < dim; j++) {
            double[] v = cols[j];
            for (int pass = 0; pass < 2; pass++) {
                for (int k = 0; k < j; k++) {
                    double[] u = cols[k];
                    double d = 0;
                    for (int i = 0; i < dim; i++) {
                        d += u[i] * v[i];
                    }
                    for (int i = 0; i < dim; i++) {
                        v[i] -= d * u[i];
                    }
                }
            }
            double n = 0;
            for (int i = 0; i < dim; i++) {
                n += v[i] * v[i];
            }
            n = Math.sqrt(n);
            for (int i = 0; i < dim; i++) {
                v[i] /= n;
            }
        }
        q = new float[dim * dim];
        // Rows of the stored matrix are the orthonormal columns: y = Qᵀ-of-columns x is orthogonal too.
        for (int r = 0; r < dim; r++) {
            for (int i = 0; i < dim; i++) {
                q[r * dim + i] = (float) cols[r][i];
            }
        }
        scratch = ThreadLocal.withInitial(() -> new float[dim]);
    }

    @Override
    public int dim() {
        return dim;
    }

    @Override
    public RotationKind kind() {
        return RotationKind.HAAR;
    }

    @Override
    public void rotate(float[] x, int xOff, float[] y, int yOff) {
        VectorOps ops = Simd.ops();
        float[] t = scratch.get();
        for (int r = 0; r < dim; r++) {
            t[r] = ops.dot(q, r * dim, x, xOff, dim);
        }
        System.arraycopy(t, 0, y, yOff, dim);
    }

    @Override
    public void unrotate(float[] y, int yOff, float[] x, int xOff) {
        VectorOps ops = Simd.ops();
        float[] t = scratch.get();
        java.util.Arrays.fill(t, 0f);
        for (int r = 0; r < dim; r++) {
            ops.axpy(y[yOff + r], q, r * dim, t, 0, dim);
        }
        System.arraycopy(t, 0, x, xOff, dim);
    }
}
