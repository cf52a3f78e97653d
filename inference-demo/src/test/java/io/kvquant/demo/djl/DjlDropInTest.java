package io.kvquant.demo.djl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.inference.Predictor;
import ai.djl.modality.nlp.generate.CausalLMOutput;
import ai.djl.modality.nlp.generate.SearchConfig;
import ai.djl.modality.nlp.generate.TextGenerator;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ZooModel;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.JavaAttentionModel;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** A DJL TextGenerator pipeline with kvquant's translator: the same greedy tokens as kvq's own decoder. */
class DjlDropInTest {

    static final int NEW = 40;

    static Path modelDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("models/kvq-llama/model.onnx"))) {
                return p.resolve("models/kvq-llama");
            }
        }
        throw new AssertionError("bundled model models/kvq-llama not found");
    }

    static long[] prompt() throws Exception {
        String text = Files.readString(modelDir().getParent().resolve("prompts/long.txt"));
        try (TextTokenizer tok = TextTokenizer.open(modelDir())) {
            return Arrays.copyOf(tok.encode(text), 300);
        }
    }

    /** Greedy decoding with kvquant's own engine, as kvq generate runs it: the reference. */
    static long[] kvqGreedy(String kv, long[] prompt, int n) throws Exception {
        try (JavaAttentionModel dm = JavaAttentionModel.open(modelDir(), new DecoderModel.Options(1, DecoderModel.Ep.CPU));
             KvCache cache = KvCaches.create(KvQuantConfig.parse(kv), dm.layers(), dm.kvHeads(), dm.headDim())) {
            Decoder dec = dm.newDecoder(cache, KvQuantTranslator.PREFILL_CHUNK); // kvq generate's default chunk
            float[] logits = dec.prefill(prompt, null);
            long[] out = new long[n];
            for (int i = 0; i < n; i++) {
                out[i] = argmax(logits);
                if (i + 1 < n) {
                    logits = dec.step(out[i]);
                }
            }
            return out;
        }
    }

    static int argmax(float[] v) {
        return io.kvquant.demo.sampling.Sampler.argmax(v);
    }

    /** The DJL pipeline a user already has, with kvquant's translator as the one change. */
    static long[] djlGreedy(KvQuantTranslator kvq, long[] prompt, int n) throws Exception {
        return djlGenerate(kvq, prompt, n, "greedy", 1);
    }

    static long[] djlGenerate(KvQuantTranslator kvq, long[] prompt, int n, String search, int beam) throws Exception {
        return djlGenerate(kvq, prompt, n, search, beam, KvQuantEngine.NAME);
    }

    static long[] djlGenerate(KvQuantTranslator kvq, long[] prompt, int n, String search, int beam, String engine)
            throws Exception {
        Criteria<NDList, CausalLMOutput> criteria = Criteria.builder()
                .setTypes(NDList.class, CausalLMOutput.class)
                .optModelPath(modelDir())
                .optModelName("model")
                .optEngine(engine)
                .optOption("threads", "1")
                .optTranslator(kvq)
                .build();
        try (ZooModel<NDList, CausalLMOutput> model = criteria.loadModel();
             Predictor<NDList, CausalLMOutput> predictor = model.newPredictor();
             NDManager manager = NDManager.newBaseManager("PyTorch")) {
            SearchConfig config = new SearchConfig();
            config.setMaxSeqLength(prompt.length + n);
            config.setBeam(beam);
            TextGenerator generator = new TextGenerator(predictor, search, config);
            NDArray out = generator.generate(manager.create(new long[][] {prompt}));
            long[] all = out.toLongArray();
            return Arrays.copyOfRange(all, all.length - n, all.length);
        }
    }

    @Test
    void fullCacheGivesExactlyKvqGenerateTokens() throws Exception {
        long[] prompt = prompt();
        long[] want = kvqGreedy("full", prompt, NEW);
        try (KvQuantTranslator kvq = KvQuantTranslator.of("full")) {
            long[] got = djlGreedy(kvq, prompt, NEW);
            assertArrayEquals(want, got, "DJL greedy with kvquant full vs kvq's own decoder");
            assertEquals(prompt.length + NEW - 1, kvq.cache().length(0), "every token but the last was fed");
        }
    }

    @Test
    void turbo35MatchesKvqAndStaysCloseToFull() throws Exception {
        long[] prompt = prompt();
        long[] full = kvqGreedy("full", prompt, NEW);
        // the bare codec: the presets' 64-token fp32 window would hold this whole short sequence
        long[] want = kvqGreedy("turbo3.5,window=0,center=off", prompt, NEW);
        try (KvQuantTranslator kvq = KvQuantTranslator.of("turbo3.5,window=0,center=off")) {
            long[] got = djlGreedy(kvq, prompt, NEW);
            // the same cache (codec, seed) behind another pipeline: the same tokens
            assertArrayEquals(want, got, "DJL greedy with turbo3.5 vs kvq's own decoder with turbo3.5");
            int agree = 0;
            for (int i = 0; i < NEW; i++) {
                agree += got[i] == full[i] ? 1 : 0;
            }
            // the first token comes from the prefill, where attention runs in full precision
            assertEquals(full[0], got[0], "first token of turbo3.5 vs full");
            System.out.printf("DJL turbo3.5 vs full: %d/%d greedy tokens agree%n", agree, NEW);
            // memory accounting is the cache's, visible through the translator
            KvCache c = kvq.cache();
            assertEquals(prompt.length + NEW - 1, c.length(0));
            double ratio = (double) c.fp16EquivalentBytes() / c.bytesUsed();
            assertTrue(ratio > 4.0 && ratio < 4.6, "turbo3.5 memory vs fp16 " + ratio);
        }
    }

    @Test
    void cacheReorderingSearchesAreRefusedClearly() throws Exception {
        long[] prompt = Arrays.copyOf(prompt(), 32);
        for (String search : new String[] {"beam", "contrastive"}) {
            try (KvQuantTranslator kvq = KvQuantTranslator.of("turbo3.5")) {
                Exception e = assertThrows(Exception.class, () -> djlGenerate(kvq, prompt, 4, search, 3), search);
                Throwable root = e;
                while (root.getCause() != null) {
                    root = root.getCause();
                }
                assertTrue(root instanceof IllegalArgumentException && root.getMessage().contains("use greedy search"),
                        search + ": " + root);
            }
        }
    }

    /** A DJL predictor that records the heap bytes each predict call allocates on its thread. */
    static final class CountingPredictor extends Predictor<NDList, CausalLMOutput> {
        final java.util.List<Long> perCall = new java.util.ArrayList<>();

        CountingPredictor(ai.djl.Model model, KvQuantTranslator t) {
            super(model, t, ai.djl.Device.cpu(), false);
        }

        @Override
        public CausalLMOutput predict(NDList input) throws ai.djl.translate.TranslateException {
            long a = io.kvquant.demo.onnx.MemoryMeter.allocatedByThisThread();
            CausalLMOutput out = super.predict(input);
            perCall.add(io.kvquant.demo.onnx.MemoryMeter.allocatedByThisThread() - a);
            return out;
        }
    }

    @Test
    void noDensePastIsAllocatedPerStepThroughDjl() throws Exception {
        // Measured by the JVM (heap bytes allocated by the thread that runs the predictor, which
        // runs translator and engine block): the old translator rebuilt a dense past per layer
        // (FloatBuffer.allocate) and copied every present output to the heap (toFloatArray) each
        // step, 4 x layers x one layer's dense keys per step, growing with the context. Here a
        // decode step allocates the same at ~500 and at ~2,000 tokens of context (its activations,
        // DJL's logits), under half of one layer's dense keys in all.
        String text = Files.readString(modelDir().getParent().resolve("prompts/long.txt"));
        long[] all;
        try (TextTokenizer tok = TextTokenizer.open(modelDir())) {
            all = tok.encode(text);
        }
        int n = 12;
        // compiled first, as docs/djl.md tells a service to do: the attention kernels, then the
        // engine's Java decode step; in 12 steps the Vector API's uncompiled fallbacks (which box
        // every vector) would be measured instead
        io.kvquant.attention.KernelWarmup.start(KvQuantConfig.parse("turbo3.5"), 2, 64, 4, 1).join();
        KvQuantTranslator kvq = KvQuantTranslator.of("turbo3.5");
        Criteria<NDList, CausalLMOutput> criteria = Criteria.builder()
                .setTypes(NDList.class, CausalLMOutput.class)
                .optModelPath(modelDir())
                .optEngine(KvQuantEngine.NAME)
                .optOption("threads", "1")
                .optTranslator(kvq)
                .build();
        try (kvq;
             ZooModel<NDList, CausalLMOutput> model = criteria.loadModel();
             CountingPredictor predictor = new CountingPredictor(model, kvq);
             NDManager manager = NDManager.newBaseManager("PyTorch")) {
            ((KvQuantEngine.EngineBlock) model.getBlock()).runner().warmDecodeStep(KvQuantConfig.parse("turbo3.5"));
            int[] lengths = {500, 2000};
            long[][] steps = new long[lengths.length][];
            for (int r = 0; r < lengths.length; r++) {
                long[] prompt = new long[lengths[r]];
                for (int i = 0; i < prompt.length; i++) {
                    prompt[i] = all[i % all.length];
                }
                predictor.perCall.clear();
                SearchConfig config = new SearchConfig();
                config.setMaxSeqLength(prompt.length + n);
                // a call without a past starts a new sequence: the same predictor runs both
                new TextGenerator(predictor, "greedy", config).generate(manager.create(new long[][] {prompt}));
                assertEquals(n, predictor.perCall.size(), "one prefill call, then one call per step");
                steps[r] = predictor.perCall.subList(3, n).stream().mapToLong(Long::longValue).sorted().toArray();
            }
            long shortMedian = steps[0][steps[0].length / 2];
            long[] longSteps = steps[1];
            long longMedian = longSteps[longSteps.length / 2];
            long layerKeysPerToken = 2L * 64 * 4; // kv heads x head dim x 4 bytes
            long denseLayerKeys = layerKeysPerToken * (lengths[1] + n);
            double perToken = (double) (longMedian - shortMedian) / (lengths[1] - lengths[0]);
            System.out.printf("DJL + KvQuant engine: median %,d heap bytes per decode step at ~%d tokens, %,d at ~%d "
                    + "(%.1f per token of context; max %,d; one layer's dense keys: %,d, %d per token)%n", longMedian,
                    lengths[1], shortMedian, lengths[0], perToken, longSteps[longSteps.length - 1], denseLayerKeys,
                    layerKeysPerToken);
            assertTrue(perToken < layerKeysPerToken / 4.0, "bytes per step grow with the context: " + perToken
                    + " per token; " + Arrays.toString(steps[0]) + " at " + lengths[0] + ", " + Arrays.toString(longSteps));
            assertTrue(longSteps[longSteps.length - 1] < denseLayerKeys / 2, "bytes per step " + Arrays.toString(longSteps));
        }
    }

    @Test
    void djlsOwnOnnxBlockIsRefusedWithHowToLoad() throws Exception {
        // DJL's ONNX Runtime block would need a dense past every step: refused, naming the fix
        long[] prompt = Arrays.copyOf(prompt(), 16);
        try (KvQuantTranslator kvq = KvQuantTranslator.of("turbo3.5")) {
            Exception e = assertThrows(Exception.class, () -> djlGenerate(kvq, prompt, 2, "greedy", 1, "OnnxRuntime"));
            Throwable root = e;
            while (root.getCause() != null) {
                root = root.getCause();
            }
            assertTrue(root instanceof IllegalArgumentException && root.getMessage().contains("optEngine(\"KvQuant\")"),
                    String.valueOf(root));
        }
    }

    @Test
    void badSettingIsRefusedBeforeLoading() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvQuantTranslator.of("turbo9"));
        assertTrue(e.getMessage().contains("bits"), e.getMessage());
        try (KvQuantTranslator kvq = KvQuantTranslator.of("turbo2.5")) {
            assertThrows(IllegalStateException.class, kvq::cache, "no cache before the first predict");
        }
    }
}
