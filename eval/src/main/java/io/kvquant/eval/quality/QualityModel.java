package io.kvquant.eval.quality;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.ModelRunner;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** A decoder model with its tokenizer, opened once for an evaluation over several KV settings. */
final class QualityModel implements AutoCloseable {
    final Path dir;
    final TextTokenizer tokenizer;
    final ModelRunner model;
    final Decoder.Mode mode;
    final int prefillChunk;
    final String sha256;
    final int threads;

    private QualityModel(Path dir, TextTokenizer tokenizer, ModelRunner model, Decoder.Mode mode, int prefillChunk,
                         String sha256, int threads) {
        this.threads = threads;
        this.dir = dir;
        this.tokenizer = tokenizer;
        this.model = model;
        this.mode = mode;
        this.prefillChunk = prefillChunk;
        this.sha256 = sha256;
    }

    static QualityModel open(Path dirOrNull, int threads, Decoder.Mode mode, int prefillChunk) throws IOException {
        Path dir = dirOrNull != null ? dirOrNull : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        String sha = ModelPaths.sha256(dir.resolve("model.onnx"));
        TextTokenizer tok = TextTokenizer.open(dir);
        try {
            ModelRunner dm = ModelRunner.open(dir, mode, new DecoderModel.Options(threads, DecoderModel.Ep.CPU));
            return new QualityModel(dir, tok, dm, mode, prefillChunk, sha, threads);
        } catch (IOException | RuntimeException e) {
            tok.close();
            throw e;
        }
    }

    /** A fresh cache of this setting and a decoder over it. */
    Run start(KvQuantConfig cfg) {
        KvCache cache = KvCaches.create(cfg, model.layers(), model.kvHeads(), model.headDim());
        Decoder dec = model.newDecoder(cache, prefillChunk);
        return new Run(cache, dec);
    }

    /** One sequence being decoded with one cache setting. */
    record Run(KvCache cache, Decoder decoder) implements AutoCloseable {
        @Override
        public void close() {
            cache.close();
        }
    }

    /** The model's usable context: its declared maximum, or {@code fallback} when it declares none. */
    int context(int fallback) {
        return model.maxContext() > 0 ? model.maxContext() : fallback;
    }

    /** The configuration block every result carries. */
    Map<String, Object> describe() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("model", dir.toAbsolutePath().normalize().toString());
        m.put("model_sha256", sha256);
        m.put("model_shape", model.describe());
        m.put("mode", mode.cli);
        m.put("prefill_chunk", prefillChunk);
        return m;
    }

    @Override
    public void close() {
        model.close();
        tokenizer.close();
    }

    /**
     * Splits a list of KV settings. Settings are separated by ';' or ','; since a setting's own
     * options also follow commas, a {@code name=value} item belongs to the setting before it:
     * {@code full,turbo3.5,qjl=k,kivi2} is full, turbo3.5 with QJL on keys, and kivi2.
     */
    static List<KvQuantConfig> parseSettings(String spec) {
        if (spec == null || spec.isBlank()) {
            throw new IllegalArgumentException("--kv is empty (e.g. full,turbo3.5,turbo2.5,kivi2)");
        }
        List<String> parts = new ArrayList<>();
        for (String group : spec.split(";")) {
            StringBuilder cur = null;
            for (String item : group.split(",")) {
                String t = item.trim();
                if (t.isEmpty()) {
                    throw new IllegalArgumentException("empty item in --kv '" + spec + "'");
                }
                if (t.contains("=")) {
                    if (cur == null) {
                        throw new IllegalArgumentException("option '" + t + "' in --kv '" + spec + "' comes before any setting");
                    }
                    cur.append(',').append(t);
                } else {
                    if (cur != null) {
                        parts.add(cur.toString());
                    }
                    cur = new StringBuilder(t);
                }
            }
            if (cur != null) {
                parts.add(cur.toString());
            }
        }
        List<KvQuantConfig> out = new ArrayList<>();
        for (String p : parts) {
            KvQuantConfig c = KvQuantConfig.parse(p);
            if (out.contains(c)) {
                throw new IllegalArgumentException("--kv lists '" + c + "' twice");
            }
            out.add(c);
        }
        return out;
    }

    /** Bits per cached element, everything the cache stores included (codes, norms, full-precision windows). */
    static double bitsPerElement(KvCache cache) {
        long elems = 0;
        for (int l = 0; l < cache.layers(); l++) {
            elems += 2L * cache.length(l) * cache.kvHeads() * cache.headDim();
        }
        return elems == 0 ? Double.NaN : cache.bytesUsed() * 8.0 / elems;
    }

    /** fp16 bytes over the bytes the cache holds. */
    static double memoryRatio(KvCache cache) {
        return cache.bytesUsed() > 0 ? (double) cache.fp16EquivalentBytes() / cache.bytesUsed() : Double.NaN;
    }
}
