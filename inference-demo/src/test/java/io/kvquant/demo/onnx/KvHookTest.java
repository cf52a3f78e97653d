package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The round-trip hook against plain ONNX Runtime decoding, chunked prefill, and a quantized cache. */
class KvHookTest {
    static DecoderModel model;
    static long[] prompt;

    @BeforeAll
    static void open() throws Exception {
        model = DecoderModel.open(TestModel.dir(), new DecoderModel.Options(2, DecoderModel.Ep.CPU));
        try (TextTokenizer tok = TextTokenizer.open(TestModel.dir())) {
            prompt = Arrays.copyOf(tok.encode(TestModel.text(400)), 300);
        }
        assertEquals(300, prompt.length, "test prompt length");
    }

    @AfterAll
    static void close() {
        if (model != null) {
            model.close();
        }
    }

    /**
     * Plain ONNX Runtime decoding: the prompt in one run, then greedy steps with each run's
     * present tensors fed straight back as the next past. Returns the logits of every run.
     */
    static List<float[]> plainGreedy(long[] ids, int steps) throws Exception {
        OrtEnvironment env = DecoderModel.environment();
        OrtSession s = model.session();
        List<float[]> all = new ArrayList<>();
        OrtSession.Result prev = null;
        int past = 0;
        long[] feed = ids;
        try {
            for (int step = 0; step <= steps; step++) {
                int len = feed.length;
                Map<String, OnnxTensor> in = new HashMap<>();
                List<OnnxTensor> mine = new ArrayList<>();
                long[] mask = new long[past + len];
                Arrays.fill(mask, 1);
                long[] pos = new long[len];
                for (int i = 0; i < len; i++) {
                    pos[i] = past + i;
                }
                mine.add(OnnxTensor.createTensor(env, LongBuffer.wrap(feed), new long[] {1, len}));
                in.put("input_ids", mine.getLast());
                mine.add(OnnxTensor.createTensor(env, LongBuffer.wrap(mask), new long[] {1, past + len}));
                in.put("attention_mask", mine.getLast());
                mine.add(OnnxTensor.createTensor(env, LongBuffer.wrap(pos), new long[] {1, len}));
                in.put("position_ids", mine.getLast());
                for (int l = 0; l < model.layers(); l++) {
                    for (String kv : new String[] {"key", "value"}) {
                        OnnxTensor v;
                        if (prev == null) {
                            mine.add(OnnxTensor.createTensor(env, FloatBuffer.allocate(0),
                                    new long[] {1, model.kvHeads(), 0, model.headDim()}));
                            v = mine.getLast();
                        } else {
                            v = (OnnxTensor) prev.get("present." + l + "." + kv).orElseThrow();
                        }
                        in.put("past_key_values." + l + "." + kv, v);
                    }
                }
                OrtSession.Result res = s.run(in);
                for (OnnxTensor t : mine) {
                    t.close();
                }
                if (prev != null) {
                    prev.close();
                }
                prev = res;
                FloatBuffer lb = ((OnnxTensor) res.get("logits").orElseThrow()).getFloatBuffer();
                int vocab = lb.remaining() / len;
                float[] last = new float[vocab];
                lb.position((len - 1) * vocab);
                lb.get(last);
                all.add(last);
                past += len;
                feed = new long[] {Sampler.argmax(last)};
            }
        } finally {
            if (prev != null) {
                prev.close();
            }
        }
        return all;
    }

    @Test
    void fullCacheIsBitExactAgainstPlainOrtDecoding() throws Exception {
        int steps = 24;
        List<float[]> plain = plainGreedy(prompt, steps);
        try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, prompt.length); // one prefill run, like plain
            float[] logits = dec.prefill(prompt, null);
            for (int step = 0; step <= steps; step++) {
                float[] want = plain.get(step);
                for (int i = 0; i < want.length; i++) {
                    if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(logits[i])) {
                        throw new AssertionError("step " + step + " logit " + i + ": hook " + logits[i] + " != plain ORT "
                                + want[i] + " (full must be exact)");
                    }
                }
                if (step < steps) {
                    logits = dec.step(Sampler.argmax(logits));
                }
            }
            assertEquals(prompt.length + steps, cache.length(0));
        }
    }

    @Test
    void chunkedPrefillEqualsUnchunked() {
        float[] whole;
        float[] afterWhole;
        try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, 1024);
            whole = dec.prefill(prompt, null);
            afterWhole = dec.step(Sampler.argmax(whole));
        }
        for (int chunk : new int[] {1, 7, 64}) {
            long[] ids = chunk == 1 ? Arrays.copyOf(prompt, 60) : prompt;
            float[] ref = whole;
            if (chunk == 1) {
                try (KvCache c = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
                    ref = new KvHookDecoder(model, c, 1024).prefill(ids, null);
                }
            }
            try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
                KvHookDecoder dec = new KvHookDecoder(model, cache, chunk);
                List<Integer> seen = new ArrayList<>();
                float[] got = dec.prefill(ids, seen::add);
                assertEquals(ids.length, (int) seen.getLast(), "progress reaches the prompt length");
                assertEquals((ids.length + chunk - 1) / chunk, seen.size(), "one progress call per chunk");
                double d = TestModel.maxAbsDiff(ref, got);
                assertTrue(d < 1e-4, "chunk " + chunk + ": max |chunked - unchunked| = " + d);
                if (chunk != 1) {
                    double d2 = TestModel.maxAbsDiff(afterWhole, dec.step(Sampler.argmax(whole)));
                    assertTrue(d2 < 1e-4, "chunk " + chunk + ": first decode step differs by " + d2);
                }
            }
        }
    }

    @Test
    void turbo35StaysCloseToFull() {
        // Teacher-forced: the full cache's greedy continuation is fed to both caches; top-1
        // agreement and logit error are measured at every step.
        int steps = 32;
        long[] fullTokens = new long[steps];
        List<float[]> fullLogits = new ArrayList<>();
        try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, 256);
            float[] l = dec.prefill(prompt, null);
            for (int i = 0; i < steps; i++) {
                fullLogits.add(l);
                fullTokens[i] = Sampler.argmax(l);
                l = dec.step(fullTokens[i]);
            }
        }
        int agree = 0;
        int prefixAgree = -1;
        double worstRel = 0;
        try (KvCache cache = KvCaches.create("turbo3.5,window=0,center=off", model.layers(), model.kvHeads(), model.headDim())) {
            KvHookDecoder dec = new KvHookDecoder(model, cache, 256);
            float[] l = dec.prefill(prompt, null);
            for (int i = 0; i < steps; i++) {
                if (Sampler.argmax(l) == fullTokens[i]) {
                    agree++;
                } else if (prefixAgree < 0) {
                    prefixAgree = i;
                }
                float[] f = fullLogits.get(i);
                double num = 0;
                double den = 0;
                for (int k = 0; k < f.length; k++) {
                    num += (l[k] - f[k]) * (double) (l[k] - f[k]);
                    den += f[k] * (double) f[k];
                }
                worstRel = Math.max(worstRel, Math.sqrt(num / den));
                l = dec.step(fullTokens[i]);
            }
            assertTrue(cache.bytesUsed() * 3 < cache.fp16EquivalentBytes(),
                    "turbo3.5 should use < 1/3 of fp16's bytes: " + cache.bytesUsed() + " vs " + cache.fp16EquivalentBytes());
        }
        System.out.printf("turbo3.5 vs full: top-1 agreement %d/%d, first disagreement at %d, worst relative logit L2 %.4f%n",
                agree, steps, prefixAgree, worstRel);
        assertTrue(agree >= steps * 3 / 4, "turbo3.5 greedy top-1 agrees with full on only " + agree + "/" + steps);
        assertTrue(worstRel < 0.15, "turbo3.5 relative logit error " + worstRel + " >= 0.15");
    }

    @Test
    void incrementalMirrorEqualsAFullReadEveryStep() {
        // The hook re-reads only positions a cache may still re-encode (its residual window);
        // this checks that assumption against a full read after every step, for windowed caches.
        for (String spec : new String[] {"turbo3.5,window=16", "kivi2", "turbo2.5", "fp16"}) {
            try (KvCache cache = KvCaches.create(spec, model.layers(), model.kvHeads(), model.headDim())) {
                KvHookDecoder dec = new KvHookDecoder(model, cache, 7);
                float[] l = dec.prefill(Arrays.copyOf(prompt, 61), null);
                assertTrue(dec.mirrorMatchesCache(), spec + " after prefill");
                for (int i = 0; i < 40; i++) {
                    l = dec.step(Sampler.argmax(l));
                    assertTrue(dec.mirrorMatchesCache(), spec + " after decode step " + i);
                }
                cache.clear();
                dec.step(1);
                assertTrue(dec.mirrorMatchesCache(), spec + " after clear()");
            }
        }
    }

    @Test
    void unknownCacheImplementationsAreReReadInFull() {
        try (KvCache a = KvCaches.create("kivi2", model.layers(), model.kvHeads(), model.headDim());
             KvCache b = KvCaches.create("kivi2", model.layers(), model.kvHeads(), model.headDim())) {
            KvCache wrapped = new KvCache() { // not a LayeredKvCache: the hook knows nothing about its windows
                public io.kvquant.cache.KvQuantConfig config() { return b.config(); }
                public int layers() { return b.layers(); }
                public int kvHeads() { return b.kvHeads(); }
                public int headDim() { return b.headDim(); }
                public int length(int layer) { return b.length(layer); }
                public void append(int layer, float[] k, float[] v, int t) { b.append(layer, k, v, t); }
                public void read(int layer, int from, int to, float[] k, float[] v) { b.read(layer, from, to, k, v); }
                public long bytesUsed() { return b.bytesUsed(); }
                public long fp16EquivalentBytes() { return b.fp16EquivalentBytes(); }
                public void clear() { b.clear(); }
                public void close() { }
            };
            assertEquals(Integer.MAX_VALUE, DenseMirror.unstableTail(wrapped));
            KvHookDecoder da = new KvHookDecoder(model, a, 16);
            KvHookDecoder db = new KvHookDecoder(model, wrapped, 16);
            float[] la = da.prefill(Arrays.copyOf(prompt, 50), null);
            float[] lb = db.prefill(Arrays.copyOf(prompt, 50), null);
            for (int i = 0; i < 20; i++) {
                assertEquals(0.0, TestModel.maxAbsDiff(la, lb), "step " + i);
                la = da.step(Sampler.argmax(la));
                lb = db.step(Sampler.argmax(lb));
            }
        }
    }

    @Test
    void rejectsBadUse() {
        assertThrows(IllegalArgumentException.class, () -> new KvHookDecoder(model,
                KvCaches.create("full", model.layers() + 1, model.kvHeads(), model.headDim()), 8));
        try (KvCache cache = KvCaches.create("full", model.layers(), model.kvHeads(), model.headDim())) {
            assertThrows(IllegalArgumentException.class, () -> new KvHookDecoder(model, cache, 0));
            assertThrows(IllegalArgumentException.class, () -> new KvHookDecoder(model, cache, 8).prefill(new long[0], null));
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Decoder.Mode.parse("grpah"));
        assertTrue(e.getMessage().contains("unknown --mode 'grpah'"), e.getMessage());
        assertEquals(Decoder.Mode.GRAPH, Decoder.Mode.parse("graph"));
        assertEquals(Decoder.Mode.ROUNDTRIP, Decoder.Mode.parse("roundtrip"));
        assertEquals(Decoder.Mode.JAVA_ATTENTION, Decoder.Mode.parse("java-attention"));
    }
}
