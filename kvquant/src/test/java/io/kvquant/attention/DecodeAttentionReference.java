package io.kvquant.attention;

/** Exact double-precision softmax attention for kernel tests. */
final class DecodeAttentionReference {

    private DecodeAttentionReference() {
    }

    /**
     * Attention of query q[qo..qo+d) over the first {@code visible} tokens of KV head g of
     * [kvHeads][len][d] keys k and values v, into out[0..d).
     */
    static void exact(float[] q, int qo, float[] k, float[] v, int g, int len, int visible, int d, float scale, double[] out) {
        double[] p = new double[visible];
        double max = Double.NEGATIVE_INFINITY;
        for (int t = 0; t < visible; t++) {
            double s = 0;
            for (int j = 0; j < d; j++) {
                s += (double) q[qo + j] * k[(g * len + t) * d + j];
            }
            p[t] = s * scale;
            max = Math.max(max, p[t]);
        }
        double sum = 0;
        for (int t = 0; t < visible; t++) {
            p[t] = Math.exp(p[t] - max);
            sum += p[t];
        }
        for (int j = 0; j < d; j++) {
            double a = 0;
            for (int t = 0; t < visible; t++) {
                a += p[t] * v[(g * len + t) * d + j];
            }
            out[j] = a / sum;
        }
    }
}
