package io.kvquant.demo.djl;

import ai.djl.modality.nlp.generate.CausalLMOutput;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Block;
import ai.djl.translate.NoBatchifyTranslator;
import ai.djl.translate.TranslatorContext;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.JavaAttentionModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Arrays;

/**
 * The DJL drop-in: a {@code Translator<NDList, CausalLMOutput>} for decoders exported in the
 * Hugging Face/optimum layout, run by kvquant's engine ({@link KvQuantEngine}, DJL engine name
 * {@value KvQuantEngine#NAME}) so that the KV cache lives compressed in a kvquant
 * {@link KvCache} and no dense past exists anywhere. A DJL pipeline changes two lines:
 * {@code Criteria.optEngine("KvQuant")} in place of {@code "OnnxRuntime"} and
 * {@code optTranslator(KvQuantTranslator.of("turbo3.5"))}; {@code TextGenerator} with greedy
 * search then runs unchanged.
 *
 * <p>How: DJL's generator hands the past back to the translator at every step. This translator
 * returns a placeholder with no elements as the "past"; the engine block appends each step's keys
 * and values to the compressed cache and attends straight from it. What crosses DJL per step is
 * the new token ids and one row of logits.
 *
 * <p>Why not DJL's own ONNX Runtime block: it runs the whole graph, which takes the dense past
 * of every layer as an input every step, so a translator in front of it must rebuild (and hold)
 * a dense copy of the past: more memory than plain ONNX Runtime, not less. Such a model is
 * refused with a message saying how to load it.
 *
 * <p>One sequence at a time (batch 1): beam search and contrastive search fork and reorder the
 * cache per candidate, which a compressed single-sequence cache does not offer; they are refused
 * with a clear message. A call without a past starts a new sequence and clears the cache.
 * Not thread-safe: one translator per predictor.
 */
public final class KvQuantTranslator implements NoBatchifyTranslator<NDList, CausalLMOutput>, AutoCloseable {

    /** The name of the placeholder returned as the past; seeing it again means "continue this sequence". */
    public static final String PAST_PLACEHOLDER = "kvquant.past";
    /** Prompt tokens per engine call in the prefill, as kvq generate's default. */
    public static final int PREFILL_CHUNK = 256;

    private final KvQuantConfig config;
    private final int prefillChunk;
    private KvCache cache;
    private Decoder decoder;
    /** Tokens of the step in flight and the manager its outputs go to (the caller's). */
    private int stepTokens;
    private NDManager callerManager;
    /** Prompt caching (null: none); the prompt of the sequence in flight until its prefill is saved. */
    private io.kvquant.demo.store.PromptCache.Settings promptCacheSettings;
    private io.kvquant.demo.store.PromptCache promptCache;
    private long[] promptIds;

    private KvQuantTranslator(KvQuantConfig config, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("prefill chunk must be >= 1, got " + prefillChunk);
        }
        this.config = config;
        this.prefillChunk = prefillChunk;
    }

    /** A translator whose cache follows {@code kv}: full, fp16, turbo3.5, turbo2.5, k4v3, kivi2, ... */
    public static KvQuantTranslator of(String kv) {
        return new KvQuantTranslator(KvQuantConfig.parse(kv), PREFILL_CHUNK);
    }

    public static KvQuantTranslator of(KvQuantConfig kv) {
        return new KvQuantTranslator(kv, PREFILL_CHUNK);
    }

    /** Like {@link #of(String)}, feeding prompts {@code prefillChunk} tokens per engine call. */
    public static KvQuantTranslator of(String kv, int prefillChunk) {
        return new KvQuantTranslator(KvQuantConfig.parse(kv), prefillChunk);
    }

    /**
     * Saves and reuses compressed prompt caches (a cache file and/or a block store, see
     * docs/prompt-cache.md): a new sequence whose prompt starts with a saved one prefills only the
     * rest. Returns this translator.
     */
    public KvQuantTranslator withPromptCache(io.kvquant.demo.store.PromptCache.Settings settings) {
        this.promptCacheSettings = settings;
        return this;
    }

    /** What the prompt cache restored and saved (empty without one). */
    public java.util.Map<String, Object> promptCacheStats() {
        return promptCache == null ? java.util.Map.of() : promptCache.stats();
    }

    public KvQuantConfig config() {
        return config;
    }

    /** The cache (after the predictor's first call): its {@code bytesUsed()}, {@code fp16EquivalentBytes()}, length. */
    public KvCache cache() {
        if (cache == null) {
            throw new IllegalStateException("the cache is created when the predictor first runs this translator");
        }
        return cache;
    }

    @Override
    public void prepare(TranslatorContext ctx) {
        if (cache != null) {
            return;
        }
        Block block = ctx.getModel().getBlock();
        if (!(block instanceof KvQuantEngine.EngineBlock engine)) {
            throw new IllegalArgumentException("KvQuantTranslator runs on kvquant's engine: load the model with "
                    + "Criteria.optEngine(\"" + KvQuantEngine.NAME + "\") (DJL's ONNX Runtime block needs the dense past "
                    + "as an input every step, which is the copy kvquant exists to avoid); this model's block is "
                    + (block == null ? "none" : block.getClass().getSimpleName()));
        }
        JavaAttentionModel m = engine.runner();
        cache = KvCaches.create(config, m.layers(), m.kvHeads(), m.headDim());
        decoder = m.newDecoder(cache, prefillChunk);
        engine.attach(decoder);
        if (promptCacheSettings != null) {
            try {
                promptCache = io.kvquant.demo.store.PromptCache.open(promptCacheSettings,
                        ctx.getModel().getModelPath().resolve("model.onnx"), cache, new java.io.PrintWriter(System.err, true));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    @Override
    public NDList processInput(TranslatorContext ctx, NDList input) {
        prepare(ctx);
        if (input.size() < 3) {
            throw new IllegalArgumentException("expected [input_ids, position_ids, attention_mask, past...] as TextGenerator "
                    + "passes them, got " + input.size() + " arrays");
        }
        NDArray ids = input.get(0);
        Shape s = ids.getShape();
        if (s.dimension() != 2 || s.get(0) != 1) {
            throw new IllegalArgumentException("kvquant's DJL translator decodes one sequence at a time (batch 1); got input_ids "
                    + s + ". Beam search and contrastive search fork and reorder the KV cache, which the compressed "
                    + "cache does not support: use greedy search (SearchConfig beam 1, TextGenerator \"greedy\").");
        }
        int skip = 0;
        if (input.size() == 3) {
            cache.clear(); // no past: a new sequence
            if (promptCache != null) {   // restore a saved prefix (leaving at least one token to run)
                promptIds = ids.toLongArray();
                skip = promptCache.restore(promptIds, promptIds.length - 1).tokens();
            }
        } else if (input.size() != 4 || !PAST_PLACEHOLDER.equals(input.get(3).getName())) {
            throw new IllegalArgumentException("the past passed in is not the one this translator returned; with kvquant the "
                    + "past stays in the compressed cache (do not build or reorder it outside the translator)");
        }
        int n = (int) s.get(1) - skip;
        int past = cache.length(0);
        long total = input.get(2).getShape().get(input.get(2).getShape().dimension() - 1);
        if (total != past + n) {
            throw new IllegalArgumentException("attention mask covers " + total + " positions but the cache holds " + past
                    + " + " + n + " new tokens; padding and reordered pasts are not supported");
        }
        stepTokens = n;
        callerManager = ids.getManager();
        NDArray idArr = ctx.getNDManager().create(Arrays.copyOfRange(ids.toLongArray(), skip, skip + n), new Shape(1, n));
        idArr.setName("input_ids");
        return new NDList(idArr);
    }

    @Override
    public CausalLMOutput processOutput(TranslatorContext ctx, NDList list) {
        NDArray logits = list.get("logits");
        if (logits == null) {
            throw new IllegalStateException("the engine returned no 'logits' output");
        }
        int len = cache.length(0);
        if (decoder.position() != len || len < stepTokens) {
            throw new IllegalStateException("the engine's cache holds " + len + " tokens after a step of " + stepTokens);
        }
        // Hand DJL arrays of the caller's engine, so the generator's own array operations run there.
        float[] lf = logits.toFloatArray();
        NDArray out = callerManager.create(lf, logits.getShape());
        if (promptIds != null) {   // the prompt is in the cache: save it where asked
            int vocab = (int) logits.getShape().get(logits.getShape().dimension() - 1);
            promptCache.afterPrefill(promptIds, Arrays.copyOfRange(lf, lf.length - vocab, lf.length));
            promptIds = null;
        }
        // Shaped like one head of a past tensor with no elements [1, 1, tokens, 0]: generators read
        // the past length from dimension 2, and nothing of the past's size is allocated.
        NDArray placeholder = callerManager.zeros(new Shape(1, 1, len, 0));
        placeholder.setName(PAST_PLACEHOLDER);
        return new CausalLMOutput(out, new NDList(placeholder));
    }

    /** The decoder the engine runs (after the predictor's first call). */
    public Decoder decoder() {
        if (decoder == null) {
            throw new IllegalStateException("the decoder is created when the predictor first runs this translator");
        }
        return decoder;
    }

    /** Releases the cache's off-heap memory. */
    @Override
    public void close() {
        if (promptCache != null) {
            promptCache.close();
        }
        if (cache != null) {
            cache.close();
            cache = null;
        }
    }
}
