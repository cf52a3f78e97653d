package io.kvquant.codec;

import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.util.SplittableRandom;

/**
 * Randomized Walsh–Hadamard rotation: two rounds of (permute, random ±1 signs, normalized
 * block Hadamard transform). Two rounds mix a structured input (a one-hot vector, a single
 * outlier channel) into a dense vector, which one round does not.
 *
 * <p>Dimensions that are not a power of two are split into power-of-two blocks (96 = 64 + 32);
 * each round applies a fresh random permutation before the block-diagonal transform, so the
 * second round mixes across the blocks of the first. The map is exactly orthogonal for every d.
 * For a power-of-two d the permutations are the identity.
 */
final class HadamardRotation implements Rotation {

    private static final int ROUNDS = 2;

    private final int dim;
    private final int[] blockStart;
    private final int[] blockSize;
    private final float[] blockScale;
    private final float[][] signs;      // per round
    private final int[][] perm;         // per round, null when dim is a power of two
    private final int[][] invPerm;
    private final ThreadLocal<float[]> scratch;
    /**
     * Power-of-two d: scale·signs[r], so that one round's final scaling and the next round's (or,
     * un-rotating, the same round's) sign flip are one multiply: (v·s)·(±1) = v·(±s) exactly.
     */
    private final float[][] scaledSigns;
    private final float[][] blockScales; // blockScale[b] repeated blockSize[b] times

    HadamardRotation(int dim, long seed) {
        this.dim = dim;
        int nb = Integer.bitCount(dim);
        blockStart = new int[nb];
        blockSize = new int[nb];
        blockScale = new float[nb];
        int start = 0;
        int k = 0;
        for (int bit = 30; bit >= 0; bit--) {
            if ((dim & (1 << bit)) != 0) {
                blockStart[k] = start;
                blockSize[k] = 1 << bit;
                blockScale[k] = (float) (1.0 / Math.sqrt(1 << bit));
                start += 1 << bit;
                k++;
            }
        }
        SplittableRandom rnd = new SplittableRandom(seed ^ 0x5DEECE66DL);
        signs = new float[ROUNDS][dim];
        boolean pow2 = nb == 1;
        perm = pow2 ? null : new int[ROUNDS][];
        invPerm = pow2 ? null : new int[ROUNDS][];
        for (int r = 0; r < ROUNDS; r++) {
            for (int i = 0; i < dim; i++) {
                signs[r][i] = rnd.nextBoolean() ? 1f : -1f;
            }
            if (!pow2) {
                int[] p = new int[dim];
                for (int i = 0; i < dim; i++) {
                    p[i] = i;
                }
                for (int i = dim - 1; i > 0; i--) {
                    int j = rnd.nextInt(i + 1);
                    int t = p[i];
                    p[i] = p[j];
                    p[j] = t;
                }
                int[] ip = new int[dim];
                for (int i = 0; i < dim; i++) {
                    ip[p[i]] = i;
                }
                perm[r] = p;
                invPerm[r] = ip;
            }
        }
        scratch = ThreadLocal.withInitial(() -> new float[dim]);
        blockScales = new float[nb][];
        for (int b = 0; b < nb; b++) {
            blockScales[b] = new float[blockSize[b]];
            java.util.Arrays.fill(blockScales[b], blockScale[b]);
        }
        if (pow2) {
            float sc = blockScale[0];
            scaledSigns = new float[ROUNDS][dim];
            for (int r = 0; r < ROUNDS; r++) {
                for (int i = 0; i < dim; i++) {
                    scaledSigns[r][i] = sc * signs[r][i]; // exactly ±sc
                }
            }
        } else {
            scaledSigns = null;
        }
    }

    @Override
    public int dim() {
        return dim;
    }

    @Override
    public RotationKind kind() {
        return RotationKind.HADAMARD;
    }

    @Override
    public void rotate(float[] x, int xOff, float[] y, int yOff) {
        VectorOps ops = Simd.ops();
        if (scaledSigns != null) {
            // round 0: signs, H, scale (and round 1's signs); round 1: H, scale (no pre-multiply: ×1 is exact). Bit-identical to the loop below.
            ops.hadamardRound(x, xOff, y, yOff, dim, signs[0], scaledSigns[1]);
            ops.hadamardRound(y, yOff, y, yOff, dim, blockScales[0]);
            return;
        }
        if (y != x || yOff != xOff) {
            System.arraycopy(x, xOff, y, yOff, dim);
        }
        for (int r = 0; r < ROUNDS; r++) {
            if (perm != null) {
                permute(y, yOff, perm[r]);
            }
            ops.multiply(y, yOff, signs[r], 0, y, yOff, dim);
            blockTransform(ops, y, yOff);
        }
    }

    @Override
    public void unrotate(float[] y, int yOff, float[] x, int xOff) {
        VectorOps ops = Simd.ops();
        if (scaledSigns != null) {
            ops.hadamardRound(y, yOff, x, xOff, dim, scaledSigns[1]);
            ops.hadamardRound(x, xOff, x, xOff, dim, scaledSigns[0]);
            return;
        }
        if (y != x || yOff != xOff) {
            System.arraycopy(y, yOff, x, xOff, dim);
        }
        for (int r = ROUNDS - 1; r >= 0; r--) {
            blockTransform(ops, x, xOff);
            ops.multiply(x, xOff, signs[r], 0, x, xOff, dim);
            if (perm != null) {
                permute(x, xOff, invPerm[r]);
            }
        }
    }

    /** The rotation as first written (scalar multiply, fwht, scale per round), for tests: rotate must equal it bit for bit. */
    void rotateReference(float[] x, int xOff, float[] y, int yOff) {
        VectorOps ops = io.kvquant.simd.ScalarOps.INSTANCE;
        System.arraycopy(x, xOff, y, yOff, dim);
        for (int r = 0; r < ROUNDS; r++) {
            if (perm != null) {
                permute(y, yOff, perm[r]);
            }
            ops.multiply(y, yOff, signs[r], 0, y, yOff, dim);
            for (int b = 0; b < blockStart.length; b++) {
                ops.fwht(y, yOff + blockStart[b], blockSize[b]);
                ops.scale(y, yOff + blockStart[b], blockSize[b], blockScale[b]);
            }
        }
    }

    /** The inverse as first written (scalar fwht, scale, multiply per round, last round first), for tests: unrotate must equal it bit for bit. */
    void unrotateReference(float[] y, int yOff, float[] x, int xOff) {
        VectorOps ops = io.kvquant.simd.ScalarOps.INSTANCE;
        System.arraycopy(y, yOff, x, xOff, dim);
        for (int r = ROUNDS - 1; r >= 0; r--) {
            for (int b = 0; b < blockStart.length; b++) {
                ops.fwht(x, xOff + blockStart[b], blockSize[b]);
                ops.scale(x, xOff + blockStart[b], blockSize[b], blockScale[b]);
            }
            ops.multiply(x, xOff, signs[r], 0, x, xOff, dim);
            if (perm != null) {
                permute(x, xOff, invPerm[r]);
            }
        }
    }

    private void blockTransform(VectorOps ops, float[] v, int off) {
        for (int b = 0; b < blockStart.length; b++) {
            int o = off + blockStart[b];
            ops.hadamardRound(v, o, v, o, blockSize[b], blockScales[b]);
        }
    }

    /** v'[p[i]] = v[i]. */
    private void permute(float[] v, int off, int[] p) {
        float[] t = scratch.get();
        System.arraycopy(v, off, t, 0, dim);
        for (int i = 0; i < dim; i++) {
            v[off + p[i]] = t[i];
        }
    }
}
