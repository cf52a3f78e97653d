package io.kvquant.eval.quality;

import io.kvquant.cache.BitAllocation;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.Decoder;
import java.util.Arrays;

/**
 * The calibration probe behind {@code auto:<b>} settings in the evaluation harness: the prompt's
 * first {@link #PROBE_TOKENS} tokens are run with each probe setting of {@link BitAllocation}
 * (one component of one layer quantized): the first three quarters prefilled, the last quarter fed
 * one token at a time so that each of those positions reads the quantized cache, and the mean KL
 * of their next-token distributions against full precision is the component's sensitivity. It
 * uses only the {@link Decoder} contract, so it runs in every execution mode.
 */
final class AutoCalibration {

    /** Prompt tokens the probe reads (fewer when the prompt is shorter). */
    static final int PROBE_TOKENS = 256;

    private AutoCalibration() {
    }

    /** Resolves {@code cfg} (an auto: setting) on {@code prompt}'s first tokens. */
    static BitAllocation.Plan plan(QualityModel qm, KvQuantConfig cfg, long[] prompt) {
        int n = Math.min(PROBE_TOKENS, prompt.length);
        if (n < 8) {
            throw new IllegalArgumentException("'" + cfg + "' needs a prompt of at least 8 tokens for its calibration probe");
        }
        long[] probe = Arrays.copyOf(prompt, n);
        int pre = n * 3 / 4;
        float[][] ref = logits(qm, KvQuantConfig.full(), probe, pre);
        double[][] refLp = new double[ref.length][];
        for (int i = 0; i < ref.length; i++) {
            refLp[i] = PerplexityCommand.logSoftmax(ref[i], new double[ref[i].length]);
        }
        return BitAllocation.plan(cfg, qm.model.layers(), qm.model.headDim(), setting -> {
            float[][] got = logits(qm, setting, probe, pre);
            double kl = 0;
            double[] lp = new double[got[0].length];
            for (int i = 0; i < got.length; i++) {
                kl += PerplexityCommand.kl(refLp[i], PerplexityCommand.logSoftmax(got[i], lp));
            }
            return kl / got.length;
        });
    }

    /** Logits after each of tokens [pre − 1, n − 1): prefill [0, pre), then one token at a time. */
    private static float[][] logits(QualityModel qm, KvQuantConfig setting, long[] probe, int pre) {
        try (KvCache cache = KvCaches.create(setting, qm.model.layers(), qm.model.kvHeads(), qm.model.headDim())) {
            Decoder dec = qm.model.newDecoder(cache, qm.prefillChunk);
            float[][] out = new float[probe.length - pre][];
            out[0] = dec.prefill(Arrays.copyOf(probe, pre), null);
            for (int t = pre; t < probe.length - 1; t++) {
                out[t - pre + 1] = dec.step(probe[t]);
            }
            return out;
        }
    }
}
