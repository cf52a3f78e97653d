package io.kvquant.attention;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.LayeredKvCache;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The attention kernel, not the quantizer: {@link DecodeAttention#attend} and
 * {@link DecodeAttention#attendPrefill} against exact double-precision softmax attention over the
 * cache's own dequantized vectors ({@link LayeredKvCache#read}). Both sides see the same
 * quantized keys and values, so the only difference is the kernel's float arithmetic (scores
 * in the rotated domain, fp32 sums, the online-softmax rescaling and the split-K merge), which
 * is ~1e-7 per operation and well under the 1e-5 bound at these context lengths.
 */
class AttentionKernelTest {

    private static final long SEED = 31337L;
    static final double BOUND = 1e-5;

    static final String[] CODECS = {"full", "fp16", "turbo2.5", "turbo3.5", "turbo4", "turbo3.5,qjl=k", "turbo2.5,qjl=kv",
            "kivi2", "kivi4"};

    private static double relErr(double[] ref, float[] got) {
        double e = 0;
        double n = 0;
        for (int i = 0; i < ref.length; i++) {
            e += (ref[i] - got[i]) * (ref[i] - got[i]);
            n += ref[i] * ref[i];
        }
        return Math.sqrt(e / n);
    }

    static Stream<Arguments> decodeCases() {
        Stream.Builder<Arguments> b = Stream.builder();
        int i = 0;
        for (String codec : CODECS) {
            for (int d : new int[]{64, 96, 128}) {
                // vary GQA group, context (crossing 16-token pages), window and split-K per case
                int group = new int[]{1, 4, 8}[i % 3];
                int len = new int[]{333, 1, 16, 17, 1100}[i % 5];
                int splits = 1 + i % 8;
                int threads = 1 + i % 2;
                // even turbo cases: a small window and middle tier, so that records, the tier (wrapping its
                // ring) and the window all meet in one context; odd ones: the presets' 32 + 736
                String spec = codec + ",page=16" + (codec.startsWith("turbo") && i % 2 == 0 ? ",window=24,mid=40" : "");
                if (codec.startsWith("kivi")) {
                    spec = codec + ",page=32"; // KIVI pages hold whole 32-token key groups
                }
                b.add(Arguments.of(spec, d, group, len, splits, threads));
                i++;
            }
        }
        // the extremes on one codec: 8 splits on 2 threads over a long context, 1 KV head
        b.add(Arguments.of("turbo3.5,page=16", 128, 8, 4097, 8, 2));
        b.add(Arguments.of("turbo2.5,page=64", 64, 1, 2048, 3, 2));
        // value rotations: a single one, and 8 over a small window and tier (records in 9 blocks of 128)
        b.add(Arguments.of("turbo3.5,page=16,vrot=1", 64, 4, 1100, 4, 2));
        b.add(Arguments.of("turbo3.5,page=16,window=24,mid=40,vrot=8", 96, 4, 1200, 5, 2));
        return b.build();
    }

    @ParameterizedTest(name = "{0} d={1} group={2} len={3} splits={4} threads={5}")
    @MethodSource("decodeCases")
    void attendMatchesExactAttentionOverTheDequantizedCache(String spec, int d, int group, int len, int splits, int threads) {
        Random r = new Random(SEED + len * 7L + d);
        int kvHeads = group == 8 ? 1 : 2;
        int qHeads = kvHeads * group;
        float[][] kv = DecodeAttentionReference.data(r, kvHeads, len, d);
        float[] q = new float[qHeads * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 0.7f;
        }
        float scale = (float) (1 / Math.sqrt(d));
        try (LayeredKvCache c = DecodeAttentionReference.fill(spec, kv, kvHeads, len, d); DecodeAttention att = new DecodeAttention(threads, splits)) {
            float[] k = new float[kvHeads * len * d];
            float[] v = new float[kvHeads * len * d];
            c.read(0, 0, len, k, v);
            double[] ref = new double[qHeads * d];
            for (int h = 0; h < qHeads; h++) {
                DecodeAttentionReference.exact(q, h * d, k, v, h / group, len, len, d, scale, ref, h * d);
            }
            float[] out = new float[qHeads * d];
            att.attend(c, 0, q, qHeads, scale, out);
            double err = relErr(ref, out);
            assertTrue(err <= BOUND, spec + " seed=" + SEED + " relative error " + err);
        }
    }

    static Stream<Arguments> prefillCases() {
        Stream.Builder<Arguments> b = Stream.builder();
        int i = 0;
        for (String codec : CODECS) {
            int d = new int[]{64, 96, 128}[i % 3];
            int group = new int[]{1, 4, 8}[(i + 1) % 3];
            int n = new int[]{1, 16, 37}[i % 3];
            int past = new int[]{0, 50, 301}[(i + 2) % 3];
            String spec = codec.startsWith("kivi") ? codec + ",page=32" : codec + ",page=16" + (i % 2 == 0 && codec.startsWith("turbo") ? ",window=20,mid=30" : "");
            b.add(Arguments.of(spec, d, group, past, n, 1 + i % 2));
            i++;
        }
        return b.build();
    }

    @ParameterizedTest(name = "{0} d={1} group={2} past={3} chunk={4} threads={5}")
    @MethodSource("prefillCases")
    void prefillMatchesExactCausalAttentionOverTheDequantizedCache(String spec, int d, int group, int past, int n, int threads) {
        Random r = new Random(SEED + past * 13L + n);
        int kvHeads = group == 8 ? 1 : 2;
        int qHeads = kvHeads * group;
        int len = past + n;
        float[][] kv = DecodeAttentionReference.data(r, kvHeads, len, d);
        float[] q = new float[qHeads * n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) r.nextGaussian() * 0.7f;
        }
        float scale = (float) (1 / Math.sqrt(d));
        try (LayeredKvCache c = DecodeAttentionReference.fill(spec, kv, kvHeads, len, d); DecodeAttention att = new DecodeAttention(threads)) {
            float[] k = new float[kvHeads * len * d];
            float[] v = new float[kvHeads * len * d];
            c.read(0, 0, len, k, v);
            double[] ref = new double[qHeads * n * d];
            for (int h = 0; h < qHeads; h++) {
                for (int i = 0; i < n; i++) {
                    DecodeAttentionReference.exact(q, (h * n + i) * d, k, v, h / group, len, past + i + 1, d, scale, ref, (h * n + i) * d);
                }
            }
            float[] out = new float[qHeads * n * d];
            att.attendPrefill(c, 0, q, qHeads, n, scale, out);
            double err = relErr(ref, out);
            assertTrue(err <= BOUND, spec + " seed=" + SEED + " relative error " + err);
        }
    }
}
