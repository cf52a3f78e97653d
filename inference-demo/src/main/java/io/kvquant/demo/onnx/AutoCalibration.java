package io.kvquant.demo.onnx;

import io.kvquant.cache.BitAllocation;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import java.util.Arrays;

/**
 * The calibration probe behind {@code auto:<b>} settings ({@code kvq generate} and the evaluation
 * harness): the prompt's first {@link #PROBE_TOKENS} tokens (all of a shorter prompt) are run with
 * each probe setting of {@link BitAllocation} (one component of one layer quantized, then the
 * candidate plans), and the mean KL of the next-token distributions at the scored positions
 * against full precision is the measure. The scored positions are spread over the probe text:
 * up to {@link #SEGMENTS} segments of {@link #SEGMENT_TOKENS} tokens, ending at the end of each
 * quarter of it (one segment, the last quarter, for a prompt under {@link #SEGMENTS} prefill
 * chunks); the text before each segment is prefilled, the segment fed one token at a time, so
 * that each scored position reads the cache of everything before it, late keys included. It uses
 * only the {@link Decoder} contract, so it runs in the engine and in round-trip mode (graph mode
 * is prepared for one setting and cannot run it).
 */
public final class AutoCalibration {

    /** Prompt tokens the probe reads at most (fewer when the prompt is shorter). */
    public static final int PROBE_TOKENS = 2048;
    /** Fewest prompt tokens the probe accepts. */
    public static final int MIN_TOKENS = 8;
    /** Scored segments at most (one per quarter of the probe text). */
    public static final int SEGMENTS = 4;
    /** Scored positions per segment at most. */
    public static final int SEGMENT_TOKENS = 32;

    private AutoCalibration() {
    }

    /** Resolves {@code cfg} (an auto: setting) on {@code prompt}'s first tokens. */
    public static BitAllocation.Plan plan(ModelRunner model, int prefillChunk, KvQuantConfig cfg, long[] prompt) {
        int n = Math.min(PROBE_TOKENS, prompt.length);
        if (n < MIN_TOKENS) {
            throw new IllegalArgumentException("'" + cfg + "' needs a prompt of at least " + MIN_TOKENS
                    + " tokens for its calibration probe, got " + prompt.length);
        }
        long[] probe = Arrays.copyOf(prompt, n);
        int[][] segments = segments(n, prefillChunk);
        float[][] ref = logits(model, prefillChunk, KvQuantConfig.full(), probe, segments);
        double[][] refLp = new double[ref.length][];
        for (int i = 0; i < ref.length; i++) {
            refLp[i] = logSoftmax(ref[i], new double[ref[i].length]);
        }
        return BitAllocation.plan(cfg, model.layers(), model.headDim(), setting -> {
            float[][] got = logits(model, prefillChunk, setting, probe, segments);
            double kl = 0;
            double[] lp = new double[got[0].length];
            for (int i = 0; i < got.length; i++) {
                kl += kl(refLp[i], logSoftmax(got[i], lp));
            }
            return kl / got.length;
        });
    }

    /**
     * The scored segments of an n-token probe as [start, end) pairs: the logits after each of tokens
     * [start − 1, end − 1) predict tokens [start, end). Up to {@link #SEGMENTS} segments, one ending at
     * the end of each quarter of the text, each at most {@link #SEGMENT_TOKENS} tokens, a quarter of
     * what precedes its end (so that the first chunk is prefilled, as in the run the plan is for) and
     * half the distance between segment ends (so that text is prefilled before every segment).
     */
    static int[][] segments(int n, int prefillChunk) {
        int count = Math.max(1, Math.min(SEGMENTS, n / Math.max(1, prefillChunk)));
        int[][] s = new int[count][];
        for (int i = 0; i < count; i++) {
            int end = (int) ((long) n * (i + 1) / count);
            int len = Math.max(1, Math.min(SEGMENT_TOKENS, Math.min(end / 4, n / count / 2)));
            s[i] = new int[] {end - len, end};
        }
        return s;
    }

    /**
     * Logits predicting each scored token: for each segment [a, e), tokens before a are prefilled
     * (continuing from the previous segment), the logits after token a − 1 kept, then tokens
     * a .. e − 2 are fed one at a time, keeping the logits after each.
     */
    private static float[][] logits(ModelRunner model, int prefillChunk, KvQuantConfig setting, long[] probe, int[][] segments) {
        int total = 0;
        for (int[] sg : segments) {
            total += sg[1] - sg[0];
        }
        try (KvCache cache = KvCaches.create(setting, model.layers(), model.kvHeads(), model.headDim())) {
            Decoder dec = model.newDecoder(cache, prefillChunk);
            float[][] out = new float[total][];
            int fed = 0;
            int o = 0;
            for (int[] sg : segments) {
                out[o++] = dec.prefill(Arrays.copyOfRange(probe, fed, sg[0]), null);
                for (int t = sg[0]; t < sg[1] - 1; t++) {
                    out[o++] = dec.step(probe[t]);
                }
                fed = sg[1] - 1;
            }
            return out;
        }
    }

    /** Natural-log softmax of {@code logits} into {@code out}, computed stably. */
    static double[] logSoftmax(float[] logits, double[] out) {
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double sum = 0;
        for (float v : logits) {
            sum += Math.exp(v - max);
        }
        double lse = max + Math.log(sum);
        for (int i = 0; i < logits.length; i++) {
            out[i] = logits[i] - lse;
        }
        return out;
    }

    /** KL(p || q) from log-probabilities. */
    static double kl(double[] logP, double[] logQ) {
        double s = 0;
        for (int i = 0; i < logP.length; i++) {
            double p = Math.exp(logP[i]);
            if (p > 0) {
                s += p * (logP[i] - logQ[i]);
            }
        }
        return Math.max(0, s);
    }
}
