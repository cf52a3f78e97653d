package io.kvquant.simd;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link TileOps} on the Vector API, register-blocked: scores take four queries times two vectors
 * of tokens per pass (eight accumulators; each key row is loaded once for four queries), value
 * sums four queries times two vectors of channels (each value row loaded once for four queries).
 * The tails (fewer than four queries, one vector left) take smaller blocks of the same form.
 */
final class PanamaTileOps implements TileOps {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int L = F.length();

    @Override
    public int lanes() {
        return L;
    }

    @Override
    public void scoresT(float[] q, int qo, int qs, int nq, float[] kt, int kts, int w, int n, float[] s, int so, int ss) {
        int nv = (n + L - 1) / L;
        int i = 0;
        for (; i + 4 <= nq; i += 4) {
            int q0 = qo + i * qs;
            int s0 = so + i * ss;
            int v = 0;
            for (; v + 2 <= nv; v += 2) {
                scores4x2(q, q0, qs, kt, kts, w, v * L, s, s0, ss);
            }
            if (v < nv) {
                scores4x1(q, q0, qs, kt, kts, w, v * L, s, s0, ss);
            }
        }
        for (; i < nq; i++) {
            int q0 = qo + i * qs;
            int s0 = so + i * ss;
            for (int v = 0; v < nv; v++) {
                FloatVector a = FloatVector.zero(F);
                int t = v * L;
                for (int k = 0; k < w; k++) {
                    a = FloatVector.fromArray(F, kt, k * kts + t).fma(FloatVector.broadcast(F, q[q0 + k]), a);
                }
                a.intoArray(s, s0 + t);
            }
        }
    }

    private static void scores4x2(float[] q, int q0, int qs, float[] kt, int kts, int w, int t, float[] s, int s0, int ss) {
        FloatVector a00 = FloatVector.zero(F);
        FloatVector a01 = FloatVector.zero(F);
        FloatVector a10 = FloatVector.zero(F);
        FloatVector a11 = FloatVector.zero(F);
        FloatVector a20 = FloatVector.zero(F);
        FloatVector a21 = FloatVector.zero(F);
        FloatVector a30 = FloatVector.zero(F);
        FloatVector a31 = FloatVector.zero(F);
        int q1 = q0 + qs;
        int q2 = q1 + qs;
        int q3 = q2 + qs;
        for (int k = 0; k < w; k++) {
            int r = k * kts + t;
            FloatVector b0 = FloatVector.fromArray(F, kt, r);
            FloatVector b1 = FloatVector.fromArray(F, kt, r + L);
            FloatVector x = FloatVector.broadcast(F, q[q0 + k]);
            a00 = b0.fma(x, a00);
            a01 = b1.fma(x, a01);
            x = FloatVector.broadcast(F, q[q1 + k]);
            a10 = b0.fma(x, a10);
            a11 = b1.fma(x, a11);
            x = FloatVector.broadcast(F, q[q2 + k]);
            a20 = b0.fma(x, a20);
            a21 = b1.fma(x, a21);
            x = FloatVector.broadcast(F, q[q3 + k]);
            a30 = b0.fma(x, a30);
            a31 = b1.fma(x, a31);
        }
        a00.intoArray(s, s0 + t);
        a01.intoArray(s, s0 + t + L);
        a10.intoArray(s, s0 + ss + t);
        a11.intoArray(s, s0 + ss + t + L);
        a20.intoArray(s, s0 + 2 * ss + t);
        a21.intoArray(s, s0 + 2 * ss + t + L);
        a30.intoArray(s, s0 + 3 * ss + t);
        a31.intoArray(s, s0 + 3 * ss + t + L);
    }

    private static void scores4x1(float[] q, int q0, int qs, float[] kt, int kts, int w, int t, float[] s, int s0, int ss) {
        FloatVector a0 = FloatVector.zero(F);
        FloatVector a1 = FloatVector.zero(F);
        FloatVector a2 = FloatVector.zero(F);
        FloatVector a3 = FloatVector.zero(F);
        for (int k = 0; k < w; k++) {
            FloatVector b = FloatVector.fromArray(F, kt, k * kts + t);
            a0 = b.fma(FloatVector.broadcast(F, q[q0 + k]), a0);
            a1 = b.fma(FloatVector.broadcast(F, q[q0 + qs + k]), a1);
            a2 = b.fma(FloatVector.broadcast(F, q[q0 + 2 * qs + k]), a2);
            a3 = b.fma(FloatVector.broadcast(F, q[q0 + 3 * qs + k]), a3);
        }
        a0.intoArray(s, s0 + t);
        a1.intoArray(s, s0 + ss + t);
        a2.intoArray(s, s0 + 2 * ss + t);
        a3.intoArray(s, s0 + 3 * ss + t);
    }

    @Override
    public void accumulate(float[] p, int po, int ps, int nq, float[] v, int vs, int n, int w, float[] acc, int ao, int as) {
        int wv = w / L * L;
        int i = 0;
        for (; i + 4 <= nq; i += 4) {
            int p0 = po + i * ps;
            int a0 = ao + i * as;
            int c = 0;
            for (; c + 2 * L <= wv; c += 2 * L) {
                acc4x2(p, p0, ps, v, vs, n, c, acc, a0, as);
            }
            for (; c < wv; c += L) {
                acc4x1(p, p0, ps, v, vs, n, c, acc, a0, as);
            }
            tail(p, p0, ps, 4, v, vs, n, wv, w, acc, a0, as);
        }
        for (; i < nq; i++) {
            int p0 = po + i * ps;
            int a0 = ao + i * as;
            for (int c = 0; c < wv; c += L) {
                FloatVector a = FloatVector.fromArray(F, acc, a0 + c);
                for (int t = 0; t < n; t++) {
                    a = FloatVector.fromArray(F, v, t * vs + c).fma(FloatVector.broadcast(F, p[p0 + t]), a);
                }
                a.intoArray(acc, a0 + c);
            }
            tail(p, p0, ps, 1, v, vs, n, wv, w, acc, a0, as);
        }
    }

    private static void acc4x2(float[] p, int p0, int ps, float[] v, int vs, int n, int c, float[] acc, int a0, int as) {
        int a1 = a0 + as;
        int a2 = a1 + as;
        int a3 = a2 + as;
        FloatVector x00 = FloatVector.fromArray(F, acc, a0 + c);
        FloatVector x01 = FloatVector.fromArray(F, acc, a0 + c + L);
        FloatVector x10 = FloatVector.fromArray(F, acc, a1 + c);
        FloatVector x11 = FloatVector.fromArray(F, acc, a1 + c + L);
        FloatVector x20 = FloatVector.fromArray(F, acc, a2 + c);
        FloatVector x21 = FloatVector.fromArray(F, acc, a2 + c + L);
        FloatVector x30 = FloatVector.fromArray(F, acc, a3 + c);
        FloatVector x31 = FloatVector.fromArray(F, acc, a3 + c + L);
        int p1 = p0 + ps;
        int p2 = p1 + ps;
        int p3 = p2 + ps;
        for (int t = 0; t < n; t++) {
            int r = t * vs + c;
            FloatVector b0 = FloatVector.fromArray(F, v, r);
            FloatVector b1 = FloatVector.fromArray(F, v, r + L);
            FloatVector y = FloatVector.broadcast(F, p[p0 + t]);
            x00 = b0.fma(y, x00);
            x01 = b1.fma(y, x01);
            y = FloatVector.broadcast(F, p[p1 + t]);
            x10 = b0.fma(y, x10);
            x11 = b1.fma(y, x11);
            y = FloatVector.broadcast(F, p[p2 + t]);
            x20 = b0.fma(y, x20);
            x21 = b1.fma(y, x21);
            y = FloatVector.broadcast(F, p[p3 + t]);
            x30 = b0.fma(y, x30);
            x31 = b1.fma(y, x31);
        }
        x00.intoArray(acc, a0 + c);
        x01.intoArray(acc, a0 + c + L);
        x10.intoArray(acc, a1 + c);
        x11.intoArray(acc, a1 + c + L);
        x20.intoArray(acc, a2 + c);
        x21.intoArray(acc, a2 + c + L);
        x30.intoArray(acc, a3 + c);
        x31.intoArray(acc, a3 + c + L);
    }

    private static void acc4x1(float[] p, int p0, int ps, float[] v, int vs, int n, int c, float[] acc, int a0, int as) {
        FloatVector x0 = FloatVector.fromArray(F, acc, a0 + c);
        FloatVector x1 = FloatVector.fromArray(F, acc, a0 + as + c);
        FloatVector x2 = FloatVector.fromArray(F, acc, a0 + 2 * as + c);
        FloatVector x3 = FloatVector.fromArray(F, acc, a0 + 3 * as + c);
        for (int t = 0; t < n; t++) {
            FloatVector b = FloatVector.fromArray(F, v, t * vs + c);
            x0 = b.fma(FloatVector.broadcast(F, p[p0 + t]), x0);
            x1 = b.fma(FloatVector.broadcast(F, p[p0 + ps + t]), x1);
            x2 = b.fma(FloatVector.broadcast(F, p[p0 + 2 * ps + t]), x2);
            x3 = b.fma(FloatVector.broadcast(F, p[p0 + 3 * ps + t]), x3);
        }
        x0.intoArray(acc, a0 + c);
        x1.intoArray(acc, a0 + as + c);
        x2.intoArray(acc, a0 + 2 * as + c);
        x3.intoArray(acc, a0 + 3 * as + c);
    }

    /** Channels [from, w) that do not fill a vector, for {@code rows} queries. */
    private static void tail(float[] p, int p0, int ps, int rows, float[] v, int vs, int n, int from, int w, float[] acc, int a0,
                             int as) {
        for (int c = from; c < w; c++) {
            for (int i = 0; i < rows; i++) {
                float a = acc[a0 + i * as + c];
                for (int t = 0; t < n; t++) {
                    a += p[p0 + i * ps + t] * v[t * vs + c];
                }
                acc[a0 + i * as + c] = a;
            }
        }
    }
}
