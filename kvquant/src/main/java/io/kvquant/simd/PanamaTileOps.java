package io.kvquant.simd;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link TileOps} on the Vector API, register-blocked: scores take six queries times two vectors
 * of tokens per pass (twelve accumulators; each key row is loaded once for six queries), value
 * sums six queries times two vectors of channels (each value row loaded once for six queries).
 * Panels of the tile are the outer loop, so one panel stays in L1 while every query meets it.
 * The tails (fewer than six queries, one vector left) take smaller blocks of the same form.
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
        int nv2 = nv & ~1;
        // panels of two vectors of tokens outermost: a panel of the key tile (w x 2L floats) stays
        // in L1 while every block of queries meets it
        for (int v = 0; v < nv2; v += 2) {
            int t = v * L;
            int i = 0;
            for (; i + 6 <= nq; i += 6) {
                scores6x2(q, qo + i * qs, qs, kt, kts, w, t, s, so + i * ss, ss);
            }
            if (i + 4 <= nq) {
                scores4x2(q, qo + i * qs, qs, kt, kts, w, t, s, so + i * ss, ss);
                i += 4;
            }
            for (; i < nq; i++) {
                scores1x2(q, qo + i * qs, kt, kts, w, t, s, so + i * ss);
            }
        }
        if (nv2 < nv) { // one vector of tokens left (a partial last tile)
            int t = nv2 * L;
            int i = 0;
            for (; i + 4 <= nq; i += 4) {
                scores4x1(q, qo + i * qs, qs, kt, kts, w, t, s, so + i * ss, ss);
            }
            for (; i < nq; i++) {
                int q0 = qo + i * qs;
                FloatVector a = FloatVector.zero(F);
                for (int k = 0; k < w; k++) {
                    a = FloatVector.fromArray(F, kt, k * kts + t).fma(FloatVector.broadcast(F, q[q0 + k]), a);
                }
                a.intoArray(s, so + i * ss + t);
            }
        }
    }

    /**
     * Six queries times two vectors of tokens: twelve independent accumulators, enough to cover
     * the FMA latency at two FMAs per cycle (eight were not: measured 10–30% slower).
     */
    private static void scores6x2(float[] q, int q0, int qs, float[] kt, int kts, int w, int t, float[] s, int s0, int ss) {
        FloatVector a00 = FloatVector.zero(F);
        FloatVector a01 = a00;
        FloatVector a10 = a00;
        FloatVector a11 = a00;
        FloatVector a20 = a00;
        FloatVector a21 = a00;
        FloatVector a30 = a00;
        FloatVector a31 = a00;
        FloatVector a40 = a00;
        FloatVector a41 = a00;
        FloatVector a50 = a00;
        FloatVector a51 = a00;
        int q1 = q0 + qs;
        int q2 = q1 + qs;
        int q3 = q2 + qs;
        int q4 = q3 + qs;
        int q5 = q4 + qs;
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
            x = FloatVector.broadcast(F, q[q4 + k]);
            a40 = b0.fma(x, a40);
            a41 = b1.fma(x, a41);
            x = FloatVector.broadcast(F, q[q5 + k]);
            a50 = b0.fma(x, a50);
            a51 = b1.fma(x, a51);
        }
        a00.intoArray(s, s0 + t);
        a01.intoArray(s, s0 + t + L);
        a10.intoArray(s, s0 + ss + t);
        a11.intoArray(s, s0 + ss + t + L);
        a20.intoArray(s, s0 + 2 * ss + t);
        a21.intoArray(s, s0 + 2 * ss + t + L);
        a30.intoArray(s, s0 + 3 * ss + t);
        a31.intoArray(s, s0 + 3 * ss + t + L);
        a40.intoArray(s, s0 + 4 * ss + t);
        a41.intoArray(s, s0 + 4 * ss + t + L);
        a50.intoArray(s, s0 + 5 * ss + t);
        a51.intoArray(s, s0 + 5 * ss + t + L);
    }

    private static void scores1x2(float[] q, int q0, float[] kt, int kts, int w, int t, float[] s, int s0) {
        FloatVector a0 = FloatVector.zero(F);
        FloatVector a1 = a0;
        for (int k = 0; k < w; k++) {
            int r = k * kts + t;
            FloatVector x = FloatVector.broadcast(F, q[q0 + k]);
            a0 = FloatVector.fromArray(F, kt, r).fma(x, a0);
            a1 = FloatVector.fromArray(F, kt, r + L).fma(x, a1);
        }
        a0.intoArray(s, s0 + t);
        a1.intoArray(s, s0 + t + L);
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
        int wv2 = wv / (2 * L) * (2 * L);
        // panels of two vectors of channels outermost: a panel of the value tile (n x 2L floats)
        // stays in L1 while every block of queries meets it
        for (int c = 0; c < wv2; c += 2 * L) {
            int i = 0;
            for (; i + 6 <= nq; i += 6) {
                acc6x2(p, po + i * ps, ps, v, vs, n, c, acc, ao + i * as, as);
            }
            if (i + 4 <= nq) {
                acc4x2(p, po + i * ps, ps, v, vs, n, c, acc, ao + i * as, as);
                i += 4;
            }
            for (; i < nq; i++) {
                acc1x2(p, po + i * ps, v, vs, n, c, acc, ao + i * as);
            }
        }
        if (wv2 < wv) { // one vector of channels left
            int i = 0;
            for (; i + 4 <= nq; i += 4) {
                acc4x1(p, po + i * ps, ps, v, vs, n, wv2, acc, ao + i * as, as);
            }
            for (; i < nq; i++) {
                int p0 = po + i * ps;
                int a0 = ao + i * as + wv2;
                FloatVector a = FloatVector.fromArray(F, acc, a0);
                for (int t = 0; t < n; t++) {
                    a = FloatVector.fromArray(F, v, t * vs + wv2).fma(FloatVector.broadcast(F, p[p0 + t]), a);
                }
                a.intoArray(acc, a0);
            }
        }
        if (wv < w) {
            tail(p, po, ps, nq, v, vs, n, wv, w, acc, ao, as);
        }
    }

    /** Six queries times two vectors of channels (twelve accumulators, as {@code scores6x2}). */
    private static void acc6x2(float[] p, int p0, int ps, float[] v, int vs, int n, int c, float[] acc, int a0, int as) {
        int a1 = a0 + as;
        int a2 = a1 + as;
        int a3 = a2 + as;
        int a4 = a3 + as;
        int a5 = a4 + as;
        FloatVector x00 = FloatVector.fromArray(F, acc, a0 + c);
        FloatVector x01 = FloatVector.fromArray(F, acc, a0 + c + L);
        FloatVector x10 = FloatVector.fromArray(F, acc, a1 + c);
        FloatVector x11 = FloatVector.fromArray(F, acc, a1 + c + L);
        FloatVector x20 = FloatVector.fromArray(F, acc, a2 + c);
        FloatVector x21 = FloatVector.fromArray(F, acc, a2 + c + L);
        FloatVector x30 = FloatVector.fromArray(F, acc, a3 + c);
        FloatVector x31 = FloatVector.fromArray(F, acc, a3 + c + L);
        FloatVector x40 = FloatVector.fromArray(F, acc, a4 + c);
        FloatVector x41 = FloatVector.fromArray(F, acc, a4 + c + L);
        FloatVector x50 = FloatVector.fromArray(F, acc, a5 + c);
        FloatVector x51 = FloatVector.fromArray(F, acc, a5 + c + L);
        int p1 = p0 + ps;
        int p2 = p1 + ps;
        int p3 = p2 + ps;
        int p4 = p3 + ps;
        int p5 = p4 + ps;
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
            y = FloatVector.broadcast(F, p[p4 + t]);
            x40 = b0.fma(y, x40);
            x41 = b1.fma(y, x41);
            y = FloatVector.broadcast(F, p[p5 + t]);
            x50 = b0.fma(y, x50);
            x51 = b1.fma(y, x51);
        }
        x00.intoArray(acc, a0 + c);
        x01.intoArray(acc, a0 + c + L);
        x10.intoArray(acc, a1 + c);
        x11.intoArray(acc, a1 + c + L);
        x20.intoArray(acc, a2 + c);
        x21.intoArray(acc, a2 + c + L);
        x30.intoArray(acc, a3 + c);
        x31.intoArray(acc, a3 + c + L);
        x40.intoArray(acc, a4 + c);
        x41.intoArray(acc, a4 + c + L);
        x50.intoArray(acc, a5 + c);
        x51.intoArray(acc, a5 + c + L);
    }

    private static void acc1x2(float[] p, int p0, float[] v, int vs, int n, int c, float[] acc, int a0) {
        FloatVector x0 = FloatVector.fromArray(F, acc, a0 + c);
        FloatVector x1 = FloatVector.fromArray(F, acc, a0 + c + L);
        for (int t = 0; t < n; t++) {
            int r = t * vs + c;
            FloatVector y = FloatVector.broadcast(F, p[p0 + t]);
            x0 = FloatVector.fromArray(F, v, r).fma(y, x0);
            x1 = FloatVector.fromArray(F, v, r + L).fma(y, x1);
        }
        x0.intoArray(acc, a0 + c);
        x1.intoArray(acc, a0 + c + L);
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
