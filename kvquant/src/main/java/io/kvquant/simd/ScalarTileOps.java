package io.kvquant.simd;

/** Plain-Java {@link TileOps}: the reference the vector path is tested against. */
final class ScalarTileOps implements TileOps {

    static final ScalarTileOps INSTANCE = new ScalarTileOps();

    private ScalarTileOps() {
    }

    @Override
    public void scoresT(float[] q, int qo, int qs, int nq, float[] kt, int kts, int w, int n, float[] s, int so, int ss) {
        for (int i = 0; i < nq; i++) {
            int qi = qo + i * qs;
            int si = so + i * ss;
            for (int t = 0; t < n; t++) {
                s[si + t] = 0f;
            }
            for (int k = 0; k < w; k++) {
                float x = q[qi + k];
                int kr = k * kts;
                for (int t = 0; t < n; t++) {
                    s[si + t] += x * kt[kr + t];
                }
            }
        }
    }

    @Override
    public void accumulate(float[] p, int po, int ps, int nq, float[] v, int vs, int n, int w, float[] acc, int ao, int as) {
        for (int i = 0; i < nq; i++) {
            int pi = po + i * ps;
            int ai = ao + i * as;
            for (int t = 0; t < n; t++) {
                float x = p[pi + t];
                if (x == 0f) {
                    continue;
                }
                int vr = t * vs;
                for (int c = 0; c < w; c++) {
                    acc[ai + c] += x * v[vr + c];
                }
            }
        }
    }

    @Override
    public int lanes() {
        return 1;
    }
}
