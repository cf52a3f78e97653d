package io.kvquant.demo.onnx;

import io.kvquant.cache.BitAllocation;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import java.util.Arrays;

/**
 * The calibration probe behind {@code auto:<b>} settings ({@code kvq generate} and the evaluation
 * harness): the prompt's first {@link #PROBE_TOKENS} tokens are run with each probe setting of
 * {@link BitAllocation} (one component of one layer quantized, then the candidate plans): the first
 * three quarters prefilled, the last quarter fed one token at a time so that each of those
 * positions reads the quantized cache, and the mean KL of their next-token distributions against
 * full precision is the measure. It uses only the {@link Decoder} contract, so it runs in the
 * engine and in round-trip mode (graph mode is prepared for one setting and cannot run it).
 */
public final class AutoCalibration {

    /** Prompt tokens the probe reads (fewer when the prompt is shorter). */
    public static final int PROBE_TOKENS = 256;
    /** Fewest prompt tokens the probe accepts. */
    public static final int MIN_TOKENS = 8;

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
        int pre = n * 3 / 4;
        float[][] ref = logits(model, prefillChunk, KvQuantConfig.full(), probe, pre);
        double[][] refLp = new double[ref.length][];
        for (int i = 0; i < ref.length; i++) {
            refLp[i] = logSoftmax(ref[i], new double[ref[i].length]);
        }
        return BitAllocation.plan(cfg, model.layers(), model.headDim(), setting -> {
            float[][] got = logits(model, prefillChunk, setting, probe, pre);
            double kl = 0;
            double[] lp = new double[got[0].length];
            for (int i = 0; i < got.length; i++) {
                kl += kl(refLp[i], logSoftmax(got[i], lp));
            }
            return kl / got.length;
        });
    }

    /** Logits after each of tokens [pre − 1, n − 1): prefill [0, pre), then one token at a time. */
    private static float[][] logits(ModelRunner model, int prefillChunk, KvQuantConfig setting, long[] probe, int pre) {
        try (KvCache cache = KvCaches.create(setting, model.layers(), model.kvHeads(), model.headDim())) {
            Decoder dec = model.newDecoder(cache, prefillChunk);
            float[][] out = new float[probe.length - pre][];
            out[0] = dec.prefill(Arrays.copyOf(probe, pre), null);
            for (int t = pre; t < probe.length - 1; t++) {
                out[t - pre + 1] = dec.step(probe[t]);
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
