package io.kvquant.simd;

/**
 * The two dense products of blocked (flash-attention style) prefill: a block of queries against
 * a tile of expanded keys, and a block of softmax weights against a tile of expanded values.
 * Both are register-blocked matrix products (several queries times several vectors of tokens or
 * channels per pass, no reductions across lanes); the tile is expanded once from the cache's
 * codes and reused by every query of the chunk.
 */
public interface TileOps {

    /**
     * Scores against a transposed key tile: {@code s[so + i·ss + t] = Σ_k q[qo + i·qs + k] ·
     * kt[k·kts + t]} for {@code i < nq}, {@code k < w} and {@code t < n}. Tokens in
     * {@code [n, roundUp(n, lanes()))} may be written too (with whatever {@code kt} holds there),
     * so {@code ss} and {@code kts} must leave room for them.
     */
    void scoresT(float[] q, int qo, int qs, int nq, float[] kt, int kts, int w, int n, float[] s, int so, int ss);

    /**
     * Weighted sum of a row-major value tile: {@code acc[ao + i·as + c] += Σ_t p[po + i·ps + t] ·
     * v[t·vs + c]} for {@code i < nq}, {@code c < w}, {@code t < n}.
     */
    void accumulate(float[] p, int po, int ps, int nq, float[] v, int vs, int n, int w, float[] acc, int ao, int as);

    /** Float lanes of one vector (1 on the scalar path). */
    int lanes();

    /** The backend matching {@link Simd#ops()}. */
    static TileOps get() {
        return Simd.vectorized() ? Holder.VECTOR : ScalarTileOps.INSTANCE;
    }

    /** The plain-Java reference. */
    static TileOps scalar() {
        return ScalarTileOps.INSTANCE;
    }

    /** The Vector API backend when jdk.incubator.vector is present (for parity tests), else null. */
    static TileOps vectorOrNull() {
        return ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() ? Holder.VECTOR : null;
    }

    /** Loads the Vector API class only when it is asked for. */
    final class Holder {
        static final TileOps VECTOR = new PanamaTileOps();

        private Holder() {
        }
    }
}
