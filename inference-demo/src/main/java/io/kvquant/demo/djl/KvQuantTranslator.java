package io.kvquant.demo.djl;

import ai.djl.modality.nlp.generate.CausalLMOutput;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Block;
import ai.djl.translate.NoBatchifyTranslator;
import ai.djl.translate.TranslatorContext;
import ai.djl.util.PairList;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.DenseMirror;
import io.kvquant.demo.onnx.ModelConfig;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The DJL drop-in: a {@code Translator<NDList, CausalLMOutput>} for decoders exported in the
 * Hugging Face/optimum layout and run by DJL's ONNX Runtime engine, whose KV cache lives in a
 * kvquant {@link KvCache}. Hand it to {@code Criteria.optTranslator(...)} in place of the
 * translator a pipeline already uses; {@code TextGenerator} with greedy search then runs
 * unchanged.
 *
 * <p>How: DJL's generator hands the past back to the translator at every step. This translator
 * returns a one-element placeholder as the "past" instead of the dense tensors, keeps the real
 * past compressed in its cache, and before each step rebuilds the dense past the ONNX graph needs
 * from the cache (round-trip mode, incrementally: only positions that can still change are
 * re-read). After the step it appends the new positions of {@code present.*} to the cache.
 *
 * <p>One sequence at a time (batch 1): beam search and contrastive search fork and reorder the
 * cache per candidate, which a compressed single-sequence cache does not offer; they are refused
 * with a clear message. A call without a past starts a new sequence and clears the cache.
 * Not thread-safe: one translator per predictor.
 */
public final class KvQuantTranslator implements NoBatchifyTranslator<NDList, CausalLMOutput>, AutoCloseable {

    /** The name of the placeholder returned as the past; seeing it again means "continue this sequence". */
    public static final String PAST_PLACEHOLDER = "kvquant.past";
    private static final Pattern PAST_KEY = Pattern.compile("past_key_values\\.(\\d+)\\.key");

    private final KvQuantConfig config;
    private KvCache cache;
    private DenseMirror mirror;
    private int layers;
    private int kvHeads;
    private int headDim;
    private boolean positionIds;
    private boolean useCacheBranch;
    /** Tokens of the step in flight and the manager its outputs go to (the caller's). */
    private int stepTokens;
    private NDManager callerManager;
    /** Prompt caching (null: none); the prompt of the sequence in flight until its prefill is saved. */
    private io.kvquant.demo.store.PromptCache.Settings promptCacheSettings;
    private io.kvquant.demo.store.PromptCache promptCache;
    private long[] promptIds;

    private KvQuantTranslator(KvQuantConfig config) {
        this.config = config;
    }

    /** A translator whose cache follows {@code kv}: full, fp16, turbo3.5, turbo2.5, k4v3, kivi2, ... */
    public static KvQuantTranslator of(String kv) {
        return new KvQuantTranslator(KvQuantConfig.parse(kv));
    }

    public static KvQuantTranslator of(KvQuantConfig kv) {
        return new KvQuantTranslator(kv);
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
        PairList<String, Shape> inputs = block.describeInput();
        if (inputs == null) {
            throw new IllegalArgumentException("the model's block does not describe its inputs; load an ONNX model with "
                    + "the OnnxRuntime engine");
        }
        int maxLayer = -1;
        for (String name : inputs.keys()) {
            Matcher m = PAST_KEY.matcher(name);
            if (m.matches()) {
                maxLayer = Math.max(maxLayer, Integer.parseInt(m.group(1)));
            }
            positionIds |= name.equals("position_ids");
            useCacheBranch |= name.equals("use_cache_branch");
        }
        if (maxLayer < 0) {
            throw new IllegalArgumentException("the model has no past_key_values.{i}.key inputs: export it with past key "
                    + "values (Hugging Face/optimum decoder layout); its inputs are " + inputs.keys());
        }
        layers = maxLayer + 1;
        // DJL's ONNX block does not describe input shapes; the heads and head size come from the
        // model's config.json, as for kvq generate.
        Path configJson = ctx.getModel().getModelPath().resolve("config.json");
        ModelConfig mc;
        try {
            mc = ModelConfig.read(configJson);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        if (mc.kvHeads() <= 0 || mc.headDim() <= 0) {
            throw new IllegalArgumentException(configJson + " must give num_key_value_heads (or num_attention_heads) and "
                    + "head_dim (or hidden_size) for kvquant to size the cache");
        }
        kvHeads = mc.kvHeads();
        headDim = mc.headDim();
        cache = KvCaches.create(config, layers, kvHeads, headDim);
        mirror = new DenseMirror(cache);
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
        NDManager m = ctx.getNDManager();
        NDList out = new NDList();
        NDArray idArr = m.create(Arrays.copyOfRange(ids.toLongArray(), skip, skip + n), new Shape(1, n));
        idArr.setName("input_ids");
        out.add(idArr);
        long[] ones = new long[past + n];
        Arrays.fill(ones, 1L);
        NDArray mask = m.create(ones, new Shape(1, past + n));
        mask.setName("attention_mask");
        out.add(mask);
        if (positionIds) {
            long[] pos = new long[n];
            for (int i = 0; i < n; i++) {
                pos[i] = past + i;
            }
            NDArray p = m.create(pos, new Shape(1, n));
            p.setName("position_ids");
            out.add(p);
        }
        if (useCacheBranch) {
            NDArray b = m.create(new boolean[] {past > 0}, new Shape(1));
            b.setName("use_cache_branch");
            out.add(b);
        }
        mirror.refresh(past);
        FloatBuffer buf = FloatBuffer.allocate(Math.max(1, kvHeads * past * headDim));
        for (int l = 0; l < layers; l++) {
            for (int kv = 0; kv < 2; kv++) {
                buf.clear();
                for (int h = 0; h < kvHeads; h++) {
                    buf.put(kv == 0 ? mirror.keys(l, h) : mirror.values(l, h), 0, past * headDim);
                }
                buf.flip();
                NDArray a = m.create(buf, new Shape(1, kvHeads, past, headDim));
                a.setName("past_key_values." + l + (kv == 0 ? ".key" : ".value"));
                out.add(a);
            }
        }
        return out;
    }

    @Override
    public CausalLMOutput processOutput(TranslatorContext ctx, NDList list) {
        NDArray logits = list.get("logits");
        if (logits == null) {
            throw new IllegalStateException("the model returned no 'logits' output");
        }
        int n = stepTokens;
        int past = cache.length(0);
        float[] k = new float[kvHeads * n * headDim];
        float[] v = new float[kvHeads * n * headDim];
        for (int l = 0; l < layers; l++) {
            copyNew(list.get("present." + l + ".key"), l, past, n, k);
            copyNew(list.get("present." + l + ".value"), l, past, n, v);
            cache.append(l, k, v, n);
        }
        // Hand DJL arrays of the caller's engine, so the generator's own array operations run there.
        float[] lf = logits.toFloatArray();
        NDArray out = callerManager.create(lf, logits.getShape());
        if (promptIds != null) {   // the prompt is in the cache: save it where asked
            int vocab = (int) logits.getShape().get(logits.getShape().dimension() - 1);
            promptCache.afterPrefill(promptIds, Arrays.copyOfRange(lf, lf.length - vocab, lf.length));
            promptIds = null;
        }
        // Shaped like one head of a past tensor [1, 1, tokens, 1], since generators read the
        // past length from dimension 2 before they call again (where batch > 1 is refused).
        NDArray placeholder = callerManager.zeros(new Shape(1, 1, past + n, 1));
        placeholder.setName(PAST_PLACEHOLDER);
        return new CausalLMOutput(out, new NDList(placeholder));
    }

    /** Copies the last {@code n} positions of a present tensor [1, kvHeads, past+n, headDim] into [kvHeads][n][headDim]. */
    private void copyNew(NDArray present, int layer, int past, int n, float[] dst) {
        if (present == null) {
            throw new IllegalStateException("the model returned no present." + layer + " output");
        }
        Shape ps = present.getShape();
        if (ps.dimension() != 4 || ps.get(1) != kvHeads || ps.get(2) != past + n || ps.get(3) != headDim) {
            throw new IllegalStateException("present." + layer + " has shape " + ps + ", expected (1, " + kvHeads + ", "
                    + (past + n) + ", " + headDim + ")");
        }
        if (present.getDataType() != DataType.FLOAT32) {
            present = present.toType(DataType.FLOAT32, false);
        }
        float[] all = present.toFloatArray();
        int t = past + n;
        for (int h = 0; h < kvHeads; h++) {
            System.arraycopy(all, (h * t + past) * headDim, dst, h * n * headDim, n * headDim);
        }
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
