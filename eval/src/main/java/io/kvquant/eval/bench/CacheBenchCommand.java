package io.kvquant.eval.bench;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.ModelRunner;
import io.kvquant.demo.store.RedisBlockStore;
import io.kvquant.demo.text.TextTokenizer;
import io.kvquant.eval.Json;
import io.kvquant.eval.RunContext;
import io.kvquant.persist.BlockStore;
import io.kvquant.persist.CacheFile;
import io.kvquant.persist.CacheIdentity;
import io.kvquant.persist.DirectoryBlockStore;
import io.kvquant.persist.PrefixBlocks;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq bench cache}: what saving a compressed prompt cache buys. Per context: the time to
 * prefill the prompt, against the time to load the same cache from a file and from prefix blocks
 * (directory, and Redis when a URL is given); bytes stored per token against fp16; Redis blocks/s
 * and MB/s. Loads are repeated (median); the prefill runs once per context (it is the slow side).
 */
@Command(name = "cache", mixinStandardHelpOptions = true,
        description = {"Prompt-cache benchmark: load a stored prefix vs prefill it; bytes per token vs fp16; Redis "
                + "blocks/s and MB/s.", "The prompt is the held-out text (repeated) cut to each context length."},
        footer = {"", "Example: ./kvq bench cache --contexts 1024,2048 --redis redis://127.0.0.1:6379 --out results/cache",
                "Beyond 2K tokens use a model folder declaring more positions (eval/scripts/long-context-model.sh)."})
public final class CacheBenchCommand implements Callable<Integer> {

    @Option(names = "--model", paramLabel = "DIR", description = "Model directory (default: the bundled model).")
    Path model;

    @Option(names = "--mode", defaultValue = "java-attention", description = "Engine: java-attention or roundtrip "
            + "(default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--kv", defaultValue = "turbo3.5", description = "KV cache (default: ${DEFAULT-VALUE}).")
    String kv;

    @Option(names = "--contexts", split = ",", defaultValue = "1024,2048", description = "Prompt lengths in tokens "
            + "(default: ${DEFAULT-VALUE}).")
    int[] contexts;

    @Option(names = "--text", paramLabel = "FILE", description = "Text the prompts are cut from (default: "
            + "models/data/heldout.txt, repeated as needed).")
    Path text;

    @Option(names = "--repeats", defaultValue = "5", description = "Timed loads per source; median (default: ${DEFAULT-VALUE}).")
    int repeats;

    @Option(names = "--block-tokens", defaultValue = "256", description = "Prefix block size (default: ${DEFAULT-VALUE}).")
    int blockTokens;

    @Option(names = "--prefill-chunk", defaultValue = "256", description = "Prefill chunk (default: ${DEFAULT-VALUE}).")
    int prefillChunk;

    @Option(names = "--threads", defaultValue = "0", description = "ONNX Runtime threads; 0 = its default "
            + "(default: ${DEFAULT-VALUE}).")
    int threads;

    @Option(names = "--redis", paramLabel = "URL", description = "Also measure a Redis store (e.g. redis://127.0.0.1:6379).")
    String redis;

    @Option(names = "--out", paramLabel = "DIR", description = "Write cache-bench.json here.")
    Path out;

    @Override
    public Integer call() throws Exception {
        KvQuantConfig cfg = KvQuantConfig.parse(kv);
        String why = CacheFile.unsupported(cfg);
        if (why != null) {
            throw new IllegalArgumentException(why);
        }
        Decoder.Mode m = Decoder.Mode.parse(mode);
        if (repeats < 1 || blockTokens < 1 || prefillChunk < 1) {
            throw new IllegalArgumentException("--repeats, --block-tokens and --prefill-chunk must be >= 1");
        }
        Path dir = model != null ? model : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        Path textFile = text != null ? text : dir.toAbsolutePath().getParent().getParent().resolve("models/data/heldout.txt");
        if (!Files.isRegularFile(textFile)) {
            textFile = ModelPaths.bundledModel().getParent().resolve("data/heldout.txt");
        }
        if (!Files.isRegularFile(textFile)) {
            throw new IllegalArgumentException("text file not found: " + textFile + " (give --text FILE)");
        }
        Path work = Files.createTempDirectory("kvq-cache-bench");
        List<Map<String, Object>> rows = new ArrayList<>();
        try (TextTokenizer tok = TextTokenizer.open(dir);
             ModelRunner dm = ModelRunner.open(dir, m, new DecoderModel.Options(threads, DecoderModel.Ep.CPU))) {
            int maxCtx = Arrays.stream(contexts).max().orElse(0);
            if (dm.maxContext() > 0 && maxCtx > dm.maxContext()) {
                throw new IllegalArgumentException("context " + maxCtx + " exceeds the model's " + dm.maxContext()
                        + " positions; use a model folder declaring more (eval/scripts/long-context-model.sh)");
            }
            long[] all = tokens(tok, Files.readString(textFile), maxCtx);
            try (LayeredKvCache warm = KvCaches.create(kv, dm.layers(), dm.kvHeads(), dm.headDim())) {
                // warm-up: ONNX Runtime's first calls and the JIT, outside every timing
                dm.newDecoder(warm, prefillChunk).prefill(Arrays.copyOf(all, Math.min(all.length, 2 * prefillChunk)), null);
            }
            long t0 = System.nanoTime();
            String sha = ModelPaths.sha256(dm.file());
            double shaSeconds = (System.nanoTime() - t0) / 1e9;
            for (int n : contexts) {
                rows.add(measure(dm, sha, Arrays.copyOf(all, n), work));
                print(rows.getLast());
            }
            Map<String, Object> config = new LinkedHashMap<>();
            config.put("model", dm.file().toString());
            config.put("model_shape", dm.describe());
            config.put("model_sha256_seconds", shaSeconds);
            config.put("kv", cfg.toString());
            config.put("mode", m.cli);
            config.put("contexts", Arrays.stream(contexts).boxed().toList());
            config.put("repeats", repeats);
            config.put("block_tokens", blockTokens);
            config.put("prefill_chunk", prefillChunk);
            config.put("redis", redis == null ? null : RedisBlockStore.isUrl(redis) ? "given" : redis);
            Map<String, Object> doc = new LinkedHashMap<>();
            doc.put("results", rows);
            doc.put("run", RunContext.capture(threads, config));
            if (out != null) {
                RunContext.writeAtomically(out.resolve("cache-bench.json"), Json.write(doc) + "\n");
            }
        } finally {
            try (var s = Files.walk(work)) {
                s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
        return 0;
    }

    private static long[] tokens(TextTokenizer tok, String text, int n) {
        StringBuilder b = new StringBuilder();
        long[] ids = new long[0];
        while (ids.length < n) {
            b.append(text).append('\n');
            ids = tok.encode(b.toString());
        }
        return ids;
    }

    private Map<String, Object> measure(ModelRunner dm, String sha, long[] ids, Path work) throws IOException {
        int n = ids.length;
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("context", n);
        try (LayeredKvCache cache = KvCaches.create(kv, dm.layers(), dm.kvHeads(), dm.headDim())) {
            Decoder dec = dm.newDecoder(cache, prefillChunk);
            long t0 = System.nanoTime();
            float[] logits = dec.prefill(ids, null);
            double prefill = (System.nanoTime() - t0) / 1e9;
            r.put("prefill_seconds", prefill);
            long fp16 = 2L * 2 * dm.layers() * dm.kvHeads() * dm.headDim();
            r.put("fp16_bytes_per_token", fp16);
            r.put("cache_bytes_per_token", (double) cache.bytesUsed() / n);

            Path f = work.resolve("c-" + n + ".kvq");
            t0 = System.nanoTime();
            long size = CacheFile.write(f, cache, sha, ids, logits);
            r.put("file_save_seconds", (System.nanoTime() - t0) / 1e9);
            r.put("file_bytes", size);
            r.put("file_bytes_per_token", (double) size / n);
            r.put("file_vs_fp16", (double) size / n / fp16);
            CacheIdentity id = CacheIdentity.of(sha, cache);
            double[] loads = new double[repeats];
            boolean identical = true;
            for (int i = 0; i < repeats; i++) {
                try (LayeredKvCache c = KvCaches.create(kv, dm.layers(), dm.kvHeads(), dm.headDim())) {
                    long s = System.nanoTime();
                    try (CacheFile.Loaded l = CacheFile.open(f, id)) {
                        l.restore(c);
                    }
                    loads[i] = (System.nanoTime() - s) / 1e9;
                    identical &= i > 0 || same(cache, c);
                }
            }
            double fileLoad = median(loads);
            r.put("file_load_seconds", fileLoad);
            r.put("file_load_first_seconds", loads[0]);
            r.put("file_restore_identical", identical);
            r.put("prefill_over_file_load", prefill / fileLoad);

            blocks(r, "dir", new DirectoryBlockStore(work.resolve("blocks-" + n), 0), cache, id, ids, prefill);
            if (redis != null) {
                try (RedisBlockStore rs = RedisBlockStore.connect(redis, 5000)) {
                    blocks(r, "redis", rs, cache, id, ids, prefill);
                    redisThroughput(r, rs, cache, id, ids);
                }
            }
        }
        return r;
    }

    private void blocks(Map<String, Object> r, String name, BlockStore store, LayeredKvCache cache, CacheIdentity id,
                        long[] ids, double prefill) throws IOException {
        PrefixBlocks pb = new PrefixBlocks(store, id, blockTokens, null);
        long t0 = System.nanoTime();
        PrefixBlocks.Saved sv = pb.save(cache, ids);
        r.put(name + "_save_seconds", (System.nanoTime() - t0) / 1e9);
        r.put(name + "_blocks", sv.blocks());
        double[] loads = new double[repeats];
        int tokens = 0;
        for (int i = 0; i < repeats; i++) {
            try (LayeredKvCache c = KvCaches.create(kv, cache.layers(), cache.kvHeads(), cache.headDim())) {
                long s = System.nanoTime();
                tokens = pb.load(c, ids, ids.length).tokens();
                loads[i] = (System.nanoTime() - s) / 1e9;
            }
        }
        r.put(name + "_load_tokens", tokens);
        r.put(name + "_load_seconds", median(loads));
        r.put("prefill_over_" + name + "_load", prefill * tokens / ids.length / median(loads));
    }

    /** Raw GET and SET throughput of whole blocks through the Redis connection. */
    private void redisThroughput(Map<String, Object> r, RedisBlockStore rs, LayeredKvCache cache, CacheIdentity id,
                                 long[] ids) throws IOException {
        PrefixBlocks pb = new PrefixBlocks(rs, id, blockTokens, null);
        List<String> keys = pb.keys(ids, ids.length);
        List<byte[]> blocks = new ArrayList<>();
        for (String k : keys) {
            blocks.add(rs.get(k));
        }
        long bytes = blocks.stream().mapToLong(b -> b.length).sum();
        int rounds = Math.max(1, repeats);
        long t0 = System.nanoTime();
        for (int i = 0; i < rounds; i++) {
            for (int j = 0; j < keys.size(); j++) {
                rs.put(keys.get(j), blocks.get(j));
            }
        }
        double set = (System.nanoTime() - t0) / 1e9;
        t0 = System.nanoTime();
        for (int i = 0; i < rounds; i++) {
            for (String k : keys) {
                rs.get(k);
            }
        }
        double get = (System.nanoTime() - t0) / 1e9;
        r.put("redis_block_bytes", keys.isEmpty() ? 0 : bytes / keys.size());
        r.put("redis_set_blocks_per_s", rounds * keys.size() / set);
        r.put("redis_set_mb_per_s", rounds * bytes / set / 1e6);
        r.put("redis_get_blocks_per_s", rounds * keys.size() / get);
        r.put("redis_get_mb_per_s", rounds * bytes / get / 1e6);
    }

    private static boolean same(LayeredKvCache a, LayeredKvCache b) {
        for (int l = 0; l < a.layers(); l++) {
            int n = a.length(l);
            if (n != b.length(l)) {
                return false;
            }
            float[] ka = new float[a.kvHeads() * n * a.headDim()];
            float[] va = new float[ka.length];
            float[] kb = new float[ka.length];
            float[] vb = new float[ka.length];
            a.read(l, 0, n, ka, va);
            b.read(l, 0, n, kb, vb);
            if (!Arrays.equals(ka, kb) || !Arrays.equals(va, vb)) {
                return false;
            }
        }
        return true;
    }

    private static double median(double[] x) {
        double[] s = x.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    private void print(Map<String, Object> r) {
        System.out.printf(Locale.ROOT, "context %6d: prefill %8.2f s | file load %7.2f ms (%6.0fx) first %7.2f ms, "
                        + "%6.1f B/token = %.3f x fp16, identical %s | dir blocks load %7.2f ms (%6.0fx)%n",
                (Integer) r.get("context"), (Double) r.get("prefill_seconds"), 1e3 * (Double) r.get("file_load_seconds"),
                (Double) r.get("prefill_over_file_load"), 1e3 * (Double) r.get("file_load_first_seconds"),
                (Double) r.get("file_bytes_per_token"), (Double) r.get("file_vs_fp16"), r.get("file_restore_identical"),
                1e3 * (Double) r.get("dir_load_seconds"), (Double) r.get("prefill_over_dir_load"));
        if (r.containsKey("redis_load_seconds")) {
            System.out.printf(Locale.ROOT, "               redis: load %7.2f ms (%6.0fx); %d B blocks: SET %.0f blocks/s "
                            + "%.1f MB/s, GET %.0f blocks/s %.1f MB/s%n", 1e3 * (Double) r.get("redis_load_seconds"),
                    (Double) r.get("prefill_over_redis_load"), (Long) r.get("redis_block_bytes"),
                    (Double) r.get("redis_set_blocks_per_s"), (Double) r.get("redis_set_mb_per_s"),
                    (Double) r.get("redis_get_blocks_per_s"), (Double) r.get("redis_get_mb_per_s"));
        }
        System.out.flush();
    }
}
