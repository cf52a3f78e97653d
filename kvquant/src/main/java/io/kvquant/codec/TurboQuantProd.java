package io.kvquant.codec;

import io.kvquant.simd.Simd;
import io.kvquant.simd.VectorOps;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

/**
 * TurboQuant_prod: a (b−1)-bit TurboQuant_mse stage plus a 1-bit QJL sketch of its residual,
 * giving an unbiased estimate of ⟨q, x⟩ for an unquantized query q.
 *
 * <p>Everything happens in the rotated domain y = Πx (inner products are unchanged by Π):
 * residual r = y − ỹ_mse, γ = ‖r‖ (fp16), signs s = sign(S r) (one bit per coordinate).
 * Estimator: ⟨q, x⟩ ≈ ⟨Πq, ỹ_mse⟩ + γ · scale · ⟨S Πq, s⟩, unbiased for both kinds of S
 * with their own scale (see {@link QjlKind}). The QJL term is used in scores and in
 * {@link #decode} as the unbiased reconstruction ỹ + γ·scale·Sᵀs, whose inner products equal
 * the estimator exactly.
 *
 * <p>Record: the mse record (fp16 norm + codes; just the norm slot when b = 1), fp16 γ, then
 * d sign bits.
 */
public final class TurboQuantProd implements VectorCodec {

    private final int dim;
    private final int bits;
    private final TurboQuantMse mse;      // null when bits == 1 (pure QJL)
    private final Rotation rotation;
    private final QjlKind kind;
    private final float[] s;              // d x d row-major
    private final float scale;
    private final int mseBytes;
    private final int gammaOff;
    private final int signOff;
    private final int recordBytes;
    // state layout: [Πq (d)] [mse tables ...] [Sq (d)] [sign tables (ceil(d/8) x 256)] [Σ Sq (1)]
    private final int sqOff;
    private final int signLutOff;
    private final int stateSize;
    private final io.kvquant.simd.CodeLayout layout;
    // accumulator: [mse part (d)] [Σ w·γ·sign (d)]
    private final ThreadLocal<float[][]> scratch;
    private final ThreadLocal<byte[][]> byteScratch;
    private static final float[] SIGN_TABLE = {-1f, 1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

    public TurboQuantProd(int dim, int bits, Rotation rotation, QjlKind kind, long seed) {
        this(dim, bits, null, rotation, kind, seed, false);
    }

    /**
     * @param segments optional segmented bit widths of the total (each ≥ 2) for fractional rates,
     *                 as {lengths, bits}; null for a single width {@code bits}
     */
    public TurboQuantProd(int dim, int bits, int[][] segments, Rotation rotation, QjlKind kind, long seed,
                          boolean normCorrection) {
        Codebook.checkBits(bits);
        if (rotation.dim() != dim) {
            throw new IllegalArgumentException("rotation dimension " + rotation.dim() + " != codec dimension " + dim);
        }
        this.dim = dim;
        this.bits = bits;
        this.rotation = rotation;
        this.kind = kind;
        if (segments != null) {
            int[] mb = segments[1].clone();
            for (int i = 0; i < mb.length; i++) {
                if (mb[i] < 2) {
                    throw new IllegalArgumentException("QJL needs at least 2 bits per segment, got " + mb[i]);
                }
                mb[i] -= 1;
            }
            mse = new TurboQuantMse(dim, segments[0], mb, rotation, normCorrection);
        } else {
            mse = bits >= 2 ? new TurboQuantMse(dim, bits - 1, rotation, normCorrection) : null;
        }
        mseBytes = mse == null ? 2 : mse.recordBytes();
        gammaOff = mseBytes;
        signOff = gammaOff + 2;
        recordBytes = signOff + (dim + 7) / 8;
        s = projection(dim, kind, seed);
        scale = (float) scaleFor(dim, kind);
        int mseState = mse == null ? dim : mse.queryStateSize();
        sqOff = mseState;
        signLutOff = sqOff + dim;
        stateSize = signLutOff + ((dim + 7) / 8) * 256 + 1;
        scratch = ThreadLocal.withInitial(() -> new float[][]{new float[dim], new float[dim], new float[dim]});
        // kernel layout: the mse segments (features [0, d)), then the signs as a 1-bit part scaled by γ (features [d, 2d))
        int[] so = {gammaOff};
        int[] co = {signOff};
        int[] bi = {1};
        int[] cn = {dim};
        int[] fo = {dim};
        float[][] tb = {SIGN_TABLE};
        layout = mse != null ? mse.layout(recordBytes, 2 * dim, so, co, bi, cn, fo, tb)
                : new io.kvquant.simd.CodeLayout(recordBytes, 2 * dim, so, co, bi, cn, fo, tb);
        byteScratch = ThreadLocal.withInitial(() -> new byte[][]{new byte[dim], new byte[dim + 8]});
    }

    static float[] projection(int dim, QjlKind kind, long seed) {
        float[] m = new float[dim * dim];
        if (kind == QjlKind.GAUSSIAN) {
            Random r = new Random(seed * 31 + 7);
            for (int i = 0; i < m.length; i++) {
                m[i] = (float) r.nextGaussian();
            }
        } else {
            HaarRotation h = new HaarRotation(dim, seed * 31 + 11);
            float[] e = new float[dim];
            float[] row = new float[dim];
            float sq = (float) Math.sqrt(dim);
            // rows of Q: row i = Qᵀ e_i, obtained with unrotate
            for (int i = 0; i < dim; i++) {
                java.util.Arrays.fill(e, 0f);
                e[i] = 1f;
                h.unrotate(e, 0, row, 0);
                for (int j = 0; j < dim; j++) {
                    m[i * dim + j] = row[j] * sq;
                }
            }
        }
        return m;
    }

    /** The estimator scale for S of the given kind at dimension d. */
    static double scaleFor(int dim, QjlKind kind) {
        if (kind == QjlKind.GAUSSIAN) {
            return Math.sqrt(Math.PI / 2) / dim;
        }
        // E|u_1| for u uniform on S^{d-1}: c_1 = 1, c_2 = 2/π, c_{d+2} = c_d · d/(d+1)
        double c = (dim % 2 == 1) ? 1.0 : 2.0 / Math.PI;
        for (int k = (dim % 2 == 1) ? 1 : 2; k < dim; k += 2) {
            c *= (double) k / (k + 1);
        }
        return 1.0 / (Math.pow(dim, 1.5) * c);
    }

    @Override
    public int dim() {
        return dim;
    }

    public int bits() {
        return bits;
    }

    public QjlKind kind() {
        return kind;
    }

    /** The QJL estimator scale. */
    public float qjlScale() {
        return scale;
    }

    @Override
    public int recordBytes() {
        return recordBytes;
    }

    @Override
    public void encode(float[] x, int xo, MemorySegment dst, long off) {
        double ss = VectorCodec.checkedSumOfSquares(x, xo, dim);
        float[][] t = scratch.get();
        float[] y = t[0];
        float[] r = t[1];
        byte[][] bs = byteScratch.get();
        byte[] codes = bs[0];
        if (mse != null) {
            float stored = mse.encodeRotated(x, xo, ss, y, codes);
            mse.writeRecord(stored, codes, dst, off, bs[1]);
            mse.decodeRotated(dst, off, r);
            for (int j = 0; j < dim; j++) {
                r[j] = y[j] - r[j];
            }
        } else {
            dst.set(ValueLayout.JAVA_SHORT_UNALIGNED, off, (short) 0);
            rotation.rotate(x, xo, r, 0);
        }
        VectorOps ops = Simd.ops();
        float gamma = VectorCodec.toFp16((float) Math.sqrt(ops.sumOfSquares(r, 0, dim)), "residual norm");
        dst.set(ValueLayout.JAVA_SHORT_UNALIGNED, off + gammaOff, Float.floatToFloat16(gamma));
        for (int byteI = 0; byteI < (dim + 7) / 8; byteI++) {
            int v = 0;
            for (int b = 0; b < 8; b++) {
                int i = byteI * 8 + b;
                if (i < dim && ops.dot(s, i * dim, r, 0, dim) >= 0f) {
                    v |= 1 << b;
                }
            }
            dst.set(ValueLayout.JAVA_BYTE, off + signOff + byteI, (byte) v);
        }
    }

    private float gamma(MemorySegment src, long off) {
        return Float.float16ToFloat(src.get(ValueLayout.JAVA_SHORT_UNALIGNED, off + gammaOff));
    }

    private boolean sign(MemorySegment src, long off, int i) {
        return ((src.get(ValueLayout.JAVA_BYTE, off + signOff + (i >>> 3)) >>> (i & 7)) & 1) != 0;
    }

    @Override
    public void decode(MemorySegment src, long off, float[] out, int oo) {
        float[][] t = scratch.get();
        float[] y = t[0];
        float[] sv = t[2];
        if (mse != null) {
            mse.decodeRotated(src, off, y);
        } else {
            java.util.Arrays.fill(y, 0f);
        }
        for (int i = 0; i < dim; i++) {
            sv[i] = sign(src, off, i) ? 1f : -1f;
        }
        addQjl(gamma(src, off) * scale, sv, y);
        rotation.unrotate(y, 0, out, oo);
    }

    /** y += a · Sᵀ sv. */
    private void addQjl(float a, float[] sv, float[] y) {
        if (a == 0f) {
            return;
        }
        VectorOps ops = Simd.ops();
        for (int i = 0; i < dim; i++) {
            ops.axpy(a * sv[i], s, i * dim, y, 0, dim);
        }
    }

    @Override
    public int queryStateSize() {
        return stateSize;
    }

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        rotation.rotate(q, qo, state, so);
        if (mse != null) {
            mse.buildTables(state, so, state, so);
        }
        VectorOps ops = Simd.ops();
        float total = 0f;
        for (int i = 0; i < dim; i++) {
            float v = ops.dot(s, i * dim, state, so, dim);
            state[so + sqOff + i] = v;
            total += v;
        }
        state[so + stateSize - 1] = total;
        for (int k = 0; k < (dim + 7) / 8; k++) {
            int base = so + signLutOff + k * 256;
            for (int v = 0; v < 256; v++) {
                float acc = 0f;
                for (int b = 0; b < 8; b++) {
                    int i = k * 8 + b;
                    if (i < dim && ((v >>> b) & 1) != 0) {
                        acc += state[so + sqOff + i];
                    }
                }
                state[base + v] = acc;
            }
        }
    }

    /** ⟨Sq, s⟩ with s = ±1 from the record's sign bits, via the byte tables. */
    private float signDot(float[] state, int so, MemorySegment src, long off) {
        float pos = 0f;
        int nb = (dim + 7) / 8;
        int lut = so + signLutOff;
        for (int k = 0; k < nb; k++) {
            pos += state[lut + (k << 8) + Byte.toUnsignedInt(src.get(ValueLayout.JAVA_BYTE, off + signOff + k))];
        }
        return 2f * pos - state[so + stateSize - 1];
    }

    @Override
    public float score(float[] state, int so, MemorySegment src, long off) {
        float base = mse == null ? 0f : mse.score(state, so, src, off);
        return base + gamma(src, off) * scale * signDot(state, so, src, off);
    }

    /** The mse part of the score alone (for measuring what QJL adds). */
    public float scoreMseOnly(float[] state, int so, MemorySegment src, long off) {
        return mse == null ? 0f : mse.score(state, so, src, off);
    }

    @Override
    public int accumulatorSize() {
        return 2 * dim;
    }

    @Override
    public void accumulate(float w, MemorySegment src, long off, float[] acc, int ao) {
        if (w == 0f) {
            return;
        }
        if (mse != null) {
            mse.accumulate(w, src, off, acc, ao);
        }
        float wg = w * gamma(src, off);
        if (wg != 0f) {
            for (int i = 0; i < dim; i++) {
                acc[ao + dim + i] += sign(src, off, i) ? wg : -wg;
            }
        }
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        float[] y = scratch.get()[0];
        System.arraycopy(acc, ao, y, 0, dim);
        float[] sv = scratch.get()[2];
        System.arraycopy(acc, ao + dim, sv, 0, dim);
        addQjl(scale, sv, y);
        rotation.unrotate(y, 0, out, oo);
    }

    @Override
    public int featureSize() {
        return 2 * dim;
    }

    @Override
    public void queryFeatures(float[] q, int qo, float[] out, int oo) {
        rotation.rotate(q, qo, out, oo);
        VectorOps ops = Simd.ops();
        for (int i = 0; i < dim; i++) {
            out[oo + dim + i] = scale * ops.dot(s, i * dim, out, oo, dim);
        }
    }

    @Override
    public void features(byte[] buf, int off, float[] out, int oo) {
        if (mse != null) {
            mse.features(buf, off, out, oo);
        } else {
            java.util.Arrays.fill(out, oo, oo + dim, 0f);
        }
        float g = Float.float16ToFloat((short) ((buf[off + gammaOff] & 0xFF) | (buf[off + gammaOff + 1] << 8)));
        // sign bits are 1-bit codes into the table {−1, +1}
        Simd.ops().decodeCodes(buf, off + signOff, 1, SIGN_TABLE, dim, g, out, oo + dim);
    }

    @Override
    public void scoreMany(byte[] buf, int off, float[] g, int go, int gs, int nq, float[] out, int oo, int os) {
        if (mse != null) {
            mse.scoreMany(buf, off, g, go, gs, nq, out, oo, os);
        } else {
            for (int i = 0; i < nq; i++) {
                out[oo + i * os] = 0f;
            }
        }
        float gamma = Float.float16ToFloat((short) ((buf[off + gammaOff] & 0xFF) | (buf[off + gammaOff + 1] << 8)));
        Simd.ops().decodeDot(buf, off + signOff, 1, SIGN_TABLE, dim, gamma, g, go + dim, gs, nq, out, oo, os);
    }

    @Override
    public io.kvquant.simd.CodeLayout codeLayout() {
        return layout;
    }

    @Override
    public void finishFeatures(float[] acc, int ao, float[] out, int oo) {
        finish(acc, ao, out, oo);
    }

    @Override
    public String describe() {
        return "prod(d=" + dim + ", bits=" + bits + " = " + (mse == null ? "0" : mse.describe())
                + " + 1-bit QJL " + kind.name().toLowerCase(java.util.Locale.ROOT) + ")";
    }
}
