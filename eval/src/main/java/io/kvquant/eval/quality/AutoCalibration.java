package io.kvquant.eval.quality;

import io.kvquant.cache.BitAllocation;
import io.kvquant.cache.KvQuantConfig;

/**
 * The calibration probe behind {@code auto:<b>} settings in the evaluation harness: the same probe
 * as {@code kvq generate} ({@link io.kvquant.demo.onnx.AutoCalibration}) on the window's prefix.
 */
final class AutoCalibration {

    /** Prompt tokens the probe reads (fewer when the prompt is shorter). */
    static final int PROBE_TOKENS = io.kvquant.demo.onnx.AutoCalibration.PROBE_TOKENS;

    private AutoCalibration() {
    }

    /** Resolves {@code cfg} (an auto: setting) on {@code prompt}'s first tokens. */
    static BitAllocation.Plan plan(QualityModel qm, KvQuantConfig cfg, long[] prompt) {
        return io.kvquant.demo.onnx.AutoCalibration.plan(qm.model, qm.prefillChunk, cfg, prompt);
    }
}
