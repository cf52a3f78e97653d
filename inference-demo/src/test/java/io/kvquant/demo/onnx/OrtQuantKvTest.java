package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.OrtQuantKv;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * ONNX Runtime's own quantized KV cache ({@code --kv ort-int8}/{@code ort-int4}) on the GenAI-format
 * Llama fixture (the bundled weights with GroupQueryAttention): the stored codes are the
 * unquantized keys and values within half a quantization step, the logits stay within a bound of
 * the unquantized graph's, and a plain graph is refused in one line.
 */
class OrtQuantKvTest {

    @TempDir
    Path tmp;

    static final DecoderModel.Options ONE = new DecoderModel.Options(1, DecoderModel.Ep.CPU);

    long[] prompt(int n) throws Exception {
        try (TextTokenizer tok = TextTokenizer.open(TestModel.dir())) {
            long[] ids = tok.encode(TestModel.text(400));
            assertTrue(ids.length >= n, "text too short: " + ids.length);
            return Arrays.copyOf(ids, n);
        }
    }

    /**
     * On the calibration tokens no value clips, so every stored code of layer 0 decodes (int8:
     * q·scale; int4: (nibble − 8)·scale, low nibble first) to the unquantized graph's present
     * within half a step of its channel; that pins ONNX Runtime's format and the scales derived
     * here. (Layer 0 only: deeper layers' keys are computed from activations that the quantized
     * cache of the layers below has already changed.)
     */
    @Test
    void storedCodesAreTheUnquantizedPresentsWithinHalfAStep() throws Exception {
        System.setProperty(PreparedModels.PROPERTY, tmp.resolve("cache").toString());
        Path dir = GenAiFixtureTest.fixture("genai-llama", tmp);
        long[] calib = prompt(48);
        float[][][] ref = new float[2][][];
        int kvHeads;
        int d;
        try (OrtBaseline b = OrtBaseline.open(dir, ONE, OrtQuantKv.Setting.ORT, null); PlainOrtDecoder dec = b.newDecoder(48)) {
            dec.prefill(calib, null);
            kvHeads = b.graph.kvHeads();
            d = b.graph.headDim();
            ref[0] = new float[b.graph.layers()][];
            ref[1] = new float[b.graph.layers()][];
            for (int l = 0; l < b.graph.layers(); l++) {
                ref[0][l] = dec.presentFloats(l, "key");
                ref[1][l] = dec.presentFloats(l, "value");
            }
        }
        for (OrtQuantKv.Setting s : new OrtQuantKv.Setting[] {OrtQuantKv.Setting.INT8, OrtQuantKv.Setting.INT4}) {
            try (OrtBaseline b = OrtBaseline.open(dir, ONE, s, calib); PlainOrtDecoder dec = b.newDecoder(48)) {
                assertEquals(48, b.calibrationTokens);
                dec.prefill(calib, null);
                assertEquals(2L * 4 * kvHeads * d * 48 * s.bits / 8, dec.pastBytes(), s + ": bytes held");
                for (int l = 0; l < 1; l++) {
                    for (int kind = 0; kind < 2; kind++) {
                        byte[] q = dec.presentBytes(l, kind == 0 ? "key" : "value");
                        float[] scale = kind == 0 ? b.keyScales[l] : b.valueScales[l];
                        float[] want = ref[kind][l];
                        assertEquals(want.length * s.bits / 8, q.length);
                        double worst = 0;
                        for (int i = 0; i < want.length; i++) {
                            int h = i / (48 * d);
                            int c = i % d;
                            int code = s.bits == 8 ? q[i] : ((q[i / 2] >> (4 * (i & 1))) & 0xf) - 8;
                            float sc = scale[h * d + c];
                            double err = Math.abs(code * sc - want[i]) / sc;
                            worst = Math.max(worst, err);
                        }
                        assertTrue(worst <= 0.5 + 1e-3, s + " layer " + l + (kind == 0 ? " keys" : " values")
                                + ": worst error " + worst + " steps");
                    }
                }
            }
        }
    }

    /**
     * Logits over a 96-token prompt (scales from its first 64) and 16 greedy steps, against the
     * unquantized graph: ONNX Runtime's quantized cache errs as much as storing the past at that
     * step size does, no more. The reference for the step size is a simulation: the unquantized
     * graph run with its presents rounded to round(x / scale)·scale (clamped to the code range)
     * before they come back as the past, with the same scales. Bound: ORT's worst relative L2
     * ≤ 1.5x the simulation's + 0.01 (ORT also rounds the current chunk's own keys and values
     * before attending to them, which the simulation does not). Measured in development: int8
     * 0.061 vs simulation 0.053; the half step is 1/254 of each channel's range for int8, 1/14
     * for int4.
     */
    @Test
    void logitsErrAsMuchAsTheStorageStepPredicts() throws Exception {
        System.setProperty(PreparedModels.PROPERTY, tmp.resolve("cache").toString());
        Path dir = GenAiFixtureTest.fixture("genai-llama", tmp);
        long[] ids = prompt(96);
        long[] calib = Arrays.copyOf(ids, 64);
        float[][] want = run(dir, OrtQuantKv.Setting.ORT, ids, null, null);
        for (OrtQuantKv.Setting s : new OrtQuantKv.Setting[] {OrtQuantKv.Setting.INT8, OrtQuantKv.Setting.INT4}) {
            OrtBaseline[] opened = new OrtBaseline[1];
            float[][] got = run(dir, s, ids, calib, opened);
            float[][] sim = simulate(dir, ids, s, opened[0].keyScales, opened[0].valueScales);
            double worst = 0;
            double worstSim = 0;
            for (int i = 0; i < want.length; i++) {
                worst = Math.max(worst, relL2(got[i], want[i]));
                worstSim = Math.max(worstSim, relL2(sim[i], want[i]));
            }
            System.out.printf("%s: worst relative logit L2 over prompt + 16 steps %.4f; storage simulation %.4f%n", s, worst,
                    worstSim);
            assertTrue(worst > 0 && worstSim > 0, s + " is lossy");
            assertTrue(worst <= 1.5 * worstSim + 0.01, s + ": ORT " + worst + " vs simulated storage " + worstSim);
        }
    }

    /** The prompt's logits then 16 steps fed with the unquantized graph's greedy tokens (same inputs for every setting). */
    private float[][] run(Path dir, OrtQuantKv.Setting s, long[] ids, long[] calib, OrtBaseline[] opened) throws Exception {
        float[][] out = new float[17][];
        try (OrtBaseline b = OrtBaseline.open(dir, ONE, s, calib); PlainOrtDecoder dec = b.newDecoder(64)) {
            if (opened != null) {
                opened[0] = b;
            }
            out[0] = dec.prefill(ids, null);
            for (int t = 1; t <= 16; t++) {
                out[t] = dec.step(forced[t - 1] >= 0 ? forced[t - 1] : (forced[t - 1] = Sampler.argmax(out[t - 1])));
            }
        }
        return out;
    }

    /** The unquantized graph with every present rounded to the setting's codes before it is fed back (same tokens as {@link #run}). */
    private float[][] simulate(Path dir, long[] ids, OrtQuantKv.Setting s, float[][] ks, float[][] vs) throws Exception {
        float[][] out = new float[17][];
        int lo = s.bits == 8 ? -128 : -8;
        int hi = s.bits == 8 ? 127 : 7;
        var env = DecoderModel.environment();
        try (OrtBaseline b = OrtBaseline.open(dir, ONE, OrtQuantKv.Setting.ORT, null);
             OrtSession session = env.createSession(b.file.toString(), new OrtSession.SessionOptions())) {
            int layers = b.graph.layers();
            int h = b.graph.kvHeads();
            int d = b.graph.headDim();
            float[][][] past = new float[layers][2][0];
            int len = 0;
            long[] feed = ids;
            for (int step = 0; step <= 16; step++) {
                Map<String, OnnxTensor> in = new HashMap<>();
                try {
                    in.put("input_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(feed), new long[] {1, feed.length}));
                    long[] mask = new long[len + feed.length];
                    Arrays.fill(mask, 1);
                    in.put("attention_mask", OnnxTensor.createTensor(env, LongBuffer.wrap(mask), new long[] {1, mask.length}));
                    for (int l = 0; l < layers; l++) {
                        for (int k = 0; k < 2; k++) {
                            in.put("past_key_values." + l + "." + (k == 0 ? "key" : "value"), OnnxTensor.createTensor(env,
                                    FloatBuffer.wrap(past[l][k]), new long[] {1, h, len, d}));
                        }
                    }
                    try (OrtSession.Result r = session.run(in)) {
                        len += feed.length;
                        for (int l = 0; l < layers; l++) {
                            for (int k = 0; k < 2; k++) {
                                FloatBuffer fb = ((OnnxTensor) r.get("present." + l + "." + (k == 0 ? "key" : "value"))
                                        .orElseThrow()).getFloatBuffer();
                                float[] a = new float[fb.remaining()];
                                fb.get(a);
                                float[] sc = k == 0 ? ks[l] : vs[l];
                                for (int i = 0; i < a.length; i++) {
                                    float q = sc[i / (len * d) * d + i % d];
                                    a[i] = Math.max(lo, Math.min(hi, Math.round(a[i] / q))) * q;
                                }
                                past[l][k] = a;
                            }
                        }
                        FloatBuffer lb = ((OnnxTensor) r.get("logits").orElseThrow()).getFloatBuffer();
                        int vocab = lb.remaining() / feed.length;
                        out[step] = new float[vocab];
                        lb.position(lb.limit() - vocab);
                        lb.get(out[step]);
                    }
                } finally {
                    in.values().forEach(OnnxTensor::close);
                }
                if (step < 16) {
                    feed = new long[] {forced[step]};
                }
            }
        }
        return out;
    }

    private final int[] forced = filled();

    private static int[] filled() {
        int[] f = new int[16];
        Arrays.fill(f, -1);
        return f;
    }

    static double relL2(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (double) (a[i] - b[i]) * (a[i] - b[i]);
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num / den);
    }

    @Test
    void aPlainGraphIsRefusedInOneLine() throws Exception {
        long[] calib = prompt(8);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> OrtBaseline.open(TestModel.dir(), ONE, OrtQuantKv.Setting.INT8, calib));
        assertEquals("--kv ort-int8 needs a com.microsoft::GroupQueryAttention graph (ONNX Runtime quantizes the KV cache "
                + "only inside that operator); model.onnx computes present.0.key with Concat: export with onnxruntime-genai's "
                + "model builder, or for the benchmark model write its GQA form with ./kvq bench model --attention gqa --out DIR",
                e.getMessage());
    }

    @Test
    void settingsParse() {
        assertEquals(OrtQuantKv.Setting.INT8, OrtQuantKv.Setting.of(" ORT-int8 "));
        assertEquals(OrtQuantKv.Setting.ORT, OrtQuantKv.Setting.of("ort"));
        assertEquals(OrtQuantKv.Setting.INT4, OrtQuantKv.Setting.of("ort-int4"));
        assertNull(OrtQuantKv.Setting.of("turbo3.5"));
        assertNull(OrtQuantKv.Setting.of("full"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> OrtQuantKv.Setting.of("ort-int3")).getMessage()
                .contains("known: ort, ort-int8, ort-int4"));
        assertEquals(127, OrtQuantKv.Setting.INT8.qmax());
        assertEquals(7, OrtQuantKv.Setting.INT4.qmax());
    }
}
