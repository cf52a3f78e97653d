package io.kvquant.demo.cli;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.ModelRunner;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kvq generate}: text generation with an ONNX decoder whose KV cache goes through kvquant. */
@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Generate text from a prompt with an ONNX decoder (Hugging Face/optimum layout) whose KV cache "
                + "is held by kvquant. Text streams to stdout; progress and figures go to stderr."},
        footer = {"", "Example: ./kvq generate --prompt-file models/prompts/long.txt --kv turbo3.5 --max-new-tokens 64"})
public final class GenerateCommand implements Callable<Integer> {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "DIR",
            description = "Model directory with model.onnx, tokenizer.json, config.json (default: the bundled "
                    + ModelPaths.BUNDLED + ").")
    Path model;

    @Option(names = "--prompt", paramLabel = "TEXT", description = "The prompt text.")
    String prompt;

    @Option(names = "--prompt-file", paramLabel = "FILE", description = "Read the prompt from a UTF-8 file.")
    Path promptFile;

    @Option(names = "--kv", paramLabel = "SPEC", defaultValue = "turbo3.5",
            description = "KV cache: full, fp16, turbo3.5, turbo2.5, k4v3, kivi2, ...; or ONNX Runtime alone: ort, ort-int8, "
                    + "ort-int4 (its own quantized cache; GroupQueryAttention graphs) (default: ${DEFAULT-VALUE}).")
    String kv;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "engine",
            description = "How attention meets the cache: " + Decoder.Mode.HELP + " (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--max-new-tokens", paramLabel = "N", defaultValue = "128",
            description = "Stop after N generated tokens (default: ${DEFAULT-VALUE}).")
    int maxNewTokens;

    @Option(names = "--temperature", defaultValue = "0",
            description = "Sampling temperature; 0 = greedy (default: ${DEFAULT-VALUE}).")
    double temperature;

    @Option(names = "--top-k", defaultValue = "0", description = "Keep the k most likely tokens; 0 = all (default: ${DEFAULT-VALUE}).")
    int topK;

    @Option(names = "--top-p", defaultValue = "1.0", description = "Nucleus sampling mass in (0,1] (default: ${DEFAULT-VALUE}).")
    double topP;

    @Option(names = "--seed", defaultValue = "42", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--no-stop", description = "Do not stop at the end-of-sequence token.")
    boolean noStop;

    @Option(names = "--prefill-chunk", paramLabel = "N", defaultValue = "256",
            description = "Feed the prompt N tokens per step (default: ${DEFAULT-VALUE}).")
    int prefillChunk;

    @Option(names = "--threads", defaultValue = "0",
            description = "ONNX Runtime intra-op threads; 0 = its default (default: ${DEFAULT-VALUE}).")
    int threads;

    @Option(names = "--ep", defaultValue = "cpu", description = "Execution provider: cpu or cuda (default: ${DEFAULT-VALUE}).")
    String ep;

    @Option(names = "--stats-json", paramLabel = "FILE", description = "Also write the figures as JSON to FILE.")
    Path statsJson;

    @Option(names = "--warmup", paramLabel = "MODE", defaultValue = "off",
            description = "Engine: off (default) or full. full runs the attention kernels on a small synthetic cache "
                    + "until the JIT has compiled them (~5-8 s on 2 cores, partly beside the model's loading), so that "
                    + "the prompt and the first decode steps run at steady speed: for benchmarks and long-running "
                    + "processes. A one-shot run finishes sooner without it: the JIT compiles the same code during "
                    + "the prompt.")
    String warmupMode;

    @Option(names = "--no-warmup", hidden = true, description = "Same as --warmup off (the default).")
    boolean noWarmup;

    /** Set when the run ends: a warm-up still running (the run failed before its prompt) stops within one kernel call. */
    private final java.util.concurrent.atomic.AtomicBoolean warmupStop = new java.util.concurrent.atomic.AtomicBoolean();

    @CommandLine.Mixin
    io.kvquant.demo.store.PromptCacheOptions promptCache = new io.kvquant.demo.store.PromptCacheOptions();

    /** The plan an auto: setting resolved to (printed, and saved in --stats-json), or null. */
    private String autoPlan;
    /** The kernel warm-up started before the model loads (engine only), or null. */
    private java.util.concurrent.CompletableFuture<Double> warming;

    @Override
    public Integer call() throws IOException {
        if (PlainOrtGenerate.selected(kv)) { // --kv ort, ort-int8, ort-int4: ONNX Runtime alone (the bench baselines)
            return PlainOrtGenerate.run(this);
        }
        // Validate everything cheap before loading anything.
        KvQuantConfig kvCfg = KvQuantConfig.parse(kv);
        Decoder.Mode m = Decoder.Mode.parse(mode);
        DecoderModel.Ep provider = switch (ep.trim().toLowerCase(Locale.ROOT)) {
            case "cpu" -> DecoderModel.Ep.CPU;
            case "cuda" -> DecoderModel.Ep.CUDA;
            default -> throw new IllegalArgumentException("unknown --ep '" + ep + "' (cpu or cuda)");
        };
        if (maxNewTokens < 0) {
            throw new IllegalArgumentException("--max-new-tokens must be >= 0, got " + maxNewTokens);
        }
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        if (threads < 0) {
            throw new IllegalArgumentException("--threads must be >= 0, got " + threads);
        }
        Sampler sampler = new Sampler(temperature, topK, topP, seed);
        io.kvquant.demo.store.PromptCache.Settings cacheSettings = promptCache.settings();
        if (kvCfg.needsCalibration() && (m == Decoder.Mode.GRAPH || cacheSettings.any())) { // auto: probes the prompt first
            throw new IllegalArgumentException("--kv " + kvCfg + " chooses its bits by probing the prompt: "
                    + (m == Decoder.Mode.GRAPH ? "--mode graph is prepared for one fixed setting" : "a prompt cache needs a fixed setting")
                    + "; give one (e.g. --kv turbo3.5, or the setting an auto plan printed)");
        }
        if (cacheSettings.any()) {
            // refused before the model is opened (and perhaps prepared), not after
            String why = io.kvquant.persist.CacheFile.unsupported(kvCfg);
            if (why != null) {
                throw new IllegalArgumentException("--save-cache/--load-cache/--cache-store: " + why);
            }
        }
        if ((prompt == null) == (promptFile == null)) {
            throw new IllegalArgumentException("give exactly one of --prompt TEXT or --prompt-file FILE");
        }
        if (statsJson != null) {
            Path dir = statsJson.toAbsolutePath().getParent();
            if (dir == null || !Files.isDirectory(dir)) {
                throw new IllegalArgumentException("--stats-json: folder does not exist: " + dir);
            }
        }
        String text;
        if (promptFile != null) {
            if (!Files.isRegularFile(promptFile)) {
                throw new IllegalArgumentException("prompt file not found: " + promptFile);
            }
            text = Files.readString(promptFile);
        } else {
            text = prompt;
        }
        Path dir = model != null ? model : ModelPaths.bundledModel();
        ModelPaths.check(dir);

        PrintWriter err = spec.commandLine().getErr();
        PrintWriter out = spec.commandLine().getOut();
        String wm = noWarmup ? "off" : warmupMode.toLowerCase(Locale.ROOT);
        if (!List.of("full", "off").contains(wm)) {
            throw new IllegalArgumentException("--warmup takes off or full, not '" + warmupMode + "'");
        }
        warmupMode = wm;
        if (!wm.equals("off") && m == Decoder.Mode.JAVA_ATTENTION && !kvCfg.needsCalibration()) {
            warming = startWarmup(dir, kvCfg);
        }
        // The Java decode step only pays once the JIT has compiled it: without the warm-up a one-shot
        // run decodes through ONNX Runtime's pieces (README's main command, alternated: 4.4-5.1 s of
        // wall time that way, 5.4-6.4 s with the Java step uncompiled; docs/engine.md)
        try (TextTokenizer tok = TextTokenizer.open(dir);
             ModelRunner dm = ModelRunner.open(dir, m, new DecoderModel.Options(threads, provider, warmupMode.equals("full")), kvCfg,
                     line -> {
                         err.println(line);
                         err.flush();
                     })) {
            long[] ids = tok.encode(text);
            if (ids.length == 0) {
                throw new IllegalArgumentException("the prompt encodes to no tokens");
            }
            int ctx = dm.maxContext();
            if (ctx > 0 && ids.length > ctx) {
                throw new IllegalArgumentException("the prompt is " + ids.length + " tokens, longer than the model's context of "
                        + ctx + " tokens; shorten it");
            }
            if (kvCfg.needsCalibration()) { // auto:<b>: the probe runs on the prompt's first chunk, the plan is the setting
                io.kvquant.cache.BitAllocation.Plan plan = io.kvquant.demo.onnx.AutoCalibration.plan(dm, prefillChunk, kvCfg, ids);
                autoPlan = plan.describe();
                err.println(autoPlan);
                err.flush();
                kvCfg = plan.setting();
            }
            try (KvCache cache = KvCaches.create(kvCfg, dm.layers(), dm.kvHeads(), dm.headDim());
                 var pc = io.kvquant.demo.store.PromptCache.open(cacheSettings, dm.file(), cache, err)) {
                return generate(dm, tok, cache, ids, sampler, kvCfg, m, out, err, pc);
            }
        } finally {
            warmupStop.set(true); // a run that failed before its prompt leaves no warm-up running
        }
    }

    private int generate(ModelRunner dm, TextTokenizer tok, KvCache cache, long[] ids, Sampler sampler,
                         KvQuantConfig kvCfg, Decoder.Mode m, PrintWriter out, PrintWriter err,
                         io.kvquant.demo.store.PromptCache pc) throws IOException {
        double[] warm = awaitWarmup(err);
        if (warmupMode.equals("full") && dm instanceof io.kvquant.demo.onnx.JavaAttentionModel jm && jm.javaDecodeStep()) {
            double s = jm.warmDecodeStep(kvCfg); // the dense layers' Java step: compiled here, after the kernels
            warm = warm == null ? new double[] {s, s} : new double[] {warm[0] + s, warm[1] + s};
        }
        Decoder inner = dm.newDecoder(cache, prefillChunk);
        Decoder dec = pc.track(inner);
        java.io.Console console = System.console();
        boolean tty = console != null && console.isTerminal();
        ProgressBar bar = tty ? new ProgressBar(err, "prefill", ids.length) : null;
        long t0 = System.nanoTime();
        float[] logits = pc.prefill(dec, ids, bar == null ? null : bar::update);
        long t1 = System.nanoTime();
        if (bar != null) {
            bar.done();
        }
        long t2 = System.nanoTime();
        StepClock clock = new StepClock(maxNewTokens);
        Decoded run = decode(logits, t -> clock.tick(dec.step(t)), dec::position, sampler, tok, maxNewTokens, noStop,
                dm.maxContext(), dm.eosTokenId(), out);
        int generated = run.generated();
        String stop = run.stop();
        long t3 = System.nanoTime();
        pc.finish();
        out.println();
        out.flush();
        // Decode steps actually run: tokens fed after the prefill.
        int decodeSteps = dec.position() - ids.length;
        double prefillTps = ids.length / ((t1 - t0) / 1e9);
        double decodeTps = decodeSteps > 0 ? decodeSteps / ((t3 - t2) / 1e9) : Double.NaN;
        RunStats st = new RunStats();
        st.fields.put("prompt_tokens", ids.length);
        st.fields.put("generated_tokens", generated);
        st.fields.put("decode_steps", decodeSteps);
        st.fields.put("stop", stop);
        st.fields.put("prefill_seconds", (t1 - t0) / 1e9);
        st.fields.put("prefill_tokens_per_s", prefillTps);
        st.fields.put("decode_tokens_per_s", decodeTps);
        st.fields.put("decode_tokens_per_s_steady", clock.steadyTokensPerSecond());
        st.fields.put("kv_tokens", cache.length(0));
        st.fields.put("warmup", warmupMode);
        if (dm instanceof io.kvquant.demo.onnx.JavaAttentionModel jm) { // who ran the decode steps' dense layers
            st.fields.put("decode_step", jm.javaDecodeStep() ? "java" : "onnxruntime");
        }
        if (warm != null) { // ran beside the model's loading; the wait is what it added to the start
            st.fields.put("warmup_seconds", warm[0]);
            st.fields.put("warmup_wait_seconds", warm[1]);
        }
        // everything held for the past: the cache's pages as allocated (slack included), its
        // full-precision windows, and what the decoder holds besides (round-trip: a dense mirror
        // and the dense past handed to ONNX Runtime; the engine: nothing)
        long cacheHeld = cache instanceof io.kvquant.cache.LayeredKvCache lc ? lc.bytesAllocated() : cache.bytesUsed();
        long held = cacheHeld + dec.heldBytes();
        st.fields.put("kv_bytes", held);
        st.fields.put("kv_bytes_cache", cacheHeld);
        st.fields.put("kv_bytes_decoder", dec.heldBytes());
        st.fields.put("kv_bytes_used", cache.bytesUsed());
        st.fields.put("kv_bytes_fp16_equivalent", cache.fp16EquivalentBytes());
        st.fields.put("peak_rss_bytes", RunStats.peakRssBytes());
        // the past handed to ONNX Runtime by the last decode step: packed codes in graph mode,
        // the dense past (fp32, or fp16 for fp16 models) in round-trip mode, none in the engine
        int lastPast = dec.position() - 1;
        long denseStep = 2L * dm.layers() * dm.kvHeads() * dm.headDim() * lastPast
                * (dm instanceof io.kvquant.demo.onnx.DecoderModel d && d.fp16() ? 2 : 4);
        st.fields.put("past_bytes_per_decode_step", inner instanceof io.kvquant.demo.onnx.GraphDecoder gd ? gd.lastStepBytes()
                : m == Decoder.Mode.ROUNDTRIP ? denseStep : 0L);
        st.fields.put("kv", kvCfg.toString());
        if (autoPlan != null) {
            st.fields.put("kv_requested", kv);
            st.fields.put("auto_plan", autoPlan);
        }
        st.fields.put("mode", m.cli);
        st.fields.put("prompt_cache", pc.stats());
        Map<String, Object> cfg = new LinkedHashMap<>();
        cfg.put("model", dm.file().toString());
        cfg.put("model_shape", dm.describe());
        cfg.put("kv", kvCfg.toString());
        cfg.put("mode", m.cli);
        cfg.put("ep", ep);
        cfg.put("prefill_chunk", prefillChunk);
        cfg.put("max_new_tokens", maxNewTokens);
        cfg.put("temperature", temperature);
        cfg.put("top_k", topK);
        cfg.put("top_p", topP);
        cfg.put("seed", seed);
        st.fields.put("run", RunStats.metadata(threads));
        st.fields.put("config", cfg);
        err.printf(Locale.ROOT, "prompt %d tokens, prefill %.1f tok/s; generated %d tokens (stop: %s), decode %.1f tok/s%s%n",
                ids.length, prefillTps, generated, stop, decodeTps,
                m == Decoder.Mode.JAVA_ATTENTION && warmupMode.equals("off")
                        ? " (the JIT compiled the kernels meanwhile; --warmup full first for steady speed)" : "");
        err.printf(Locale.ROOT, "kv %s, mode %s: %s held for the past (%s of data, fp16 equivalent %s: fp16/held "
                        + "%.2fx); peak RSS %s%n",
                kvCfg, m.cli, mib(held), mib(cache.bytesUsed()), mib(cache.fp16EquivalentBytes()),
                held > 0 ? (double) cache.fp16EquivalentBytes() / held : Double.NaN,
                mib(RunStats.peakRssBytes()));
        err.flush();
        if (statsJson != null) {
            st.writeAtomically(statsJson);
        }
        return 0;
    }

    /**
     * Starts {@link io.kvquant.attention.KernelWarmup} for this model's geometry (config.json) and
     * {@code kvCfg}, or returns null where config.json does not give the geometry (the engine then
     * reports that itself).
     */
    private java.util.concurrent.CompletableFuture<Double> startWarmup(Path dir, KvQuantConfig kvCfg) throws IOException {
        io.kvquant.demo.onnx.ModelConfig mc = io.kvquant.demo.onnx.ModelConfig.read(dir.resolve("config.json"));
        int qHeads = mc.queryHeads();
        if (mc.kvHeads() <= 0 || mc.headDim() <= 0 || qHeads < mc.kvHeads() || qHeads % mc.kvHeads() != 0) {
            return null;
        }
        int att = threads > 0 ? threads : Runtime.getRuntime().availableProcessors(); // as the engine's attention
        return io.kvquant.attention.KernelWarmup.start(kvCfg, mc.kvHeads(), mc.headDim(), qHeads, att, warmupStop::get);
    }

    /** Waits for the warm-up; {seconds it ran, seconds waited for it here}, or null when none ran or it failed. */
    private double[] awaitWarmup(PrintWriter err) {
        if (warming == null) {
            return null;
        }
        long t0 = System.nanoTime();
        try {
            double ran = warming.join();
            return new double[] {ran, (System.nanoTime() - t0) / 1e9};
        } catch (java.util.concurrent.CompletionException e) { // it only compiles code: the run goes on without it
            err.println("kernel warm-up failed (the run goes on without it): " + e.getCause());
            err.flush();
            return null;
        } finally {
            warming = null;
        }
    }

    /**
     * When each decode step ended, for {@code decode_tokens_per_s_steady}: the rate over the second
     * half of the steps, i.e. without the first steps' JIT warm-up (llama-bench leaves its warm-up
     * out the same way). {@code decode_tokens_per_s} stays the whole decode, warm-up included.
     */
    static final class StepClock {
        private final long[] ends;
        private int n;

        StepClock(int max) {
            ends = new long[Math.max(0, max)];
        }

        float[] tick(float[] logits) {
            record(System.nanoTime());
            return logits;
        }

        void record(long nanos) {
            if (n < ends.length) {
                ends[n++] = nanos;
            }
        }

        /** Steps per second over the second half of the steps; NaN below 8 steps. */
        double steadyTokensPerSecond() {
            if (Boolean.getBoolean("kvq.steps.dump")) {
                StringBuilder b = new StringBuilder("decode steps, mean ms per 16:");
                for (int i = 16; i < n; i += 16) {
                    b.append(String.format(java.util.Locale.ROOT, " %.2f", (ends[i] - ends[i - 16]) / 16e6));
                }
                System.err.println(b);
            }
            if (n < 8) {
                return Double.NaN;
            }
            int h = n / 2;
            return (n - h) / ((ends[n - 1] - ends[h - 1]) / 1e9);
        }
    }

    /** What the decode loop did: tokens sampled and why it stopped. */
    record Decoded(int generated, String stop) {
    }

    /**
     * The decode loop shared by every mode and the plain-ORT baseline: sample, stream the text,
     * stop at end-of-sequence (unless {@code noStop}), {@code maxNewTokens} or a full context,
     * else feed the token and go on.
     */
    static Decoded decode(float[] logits, java.util.function.LongFunction<float[]> step, java.util.function.IntSupplier position,
                          Sampler sampler, TextTokenizer tok, int maxNewTokens, boolean noStop, int ctx, int eos,
                          PrintWriter out) {
        TextTokenizer.Streamer streamer = new TextTokenizer.Streamer(tok);
        int generated = 0;
        while (generated < maxNewTokens) {
            int next = sampler.sample(logits);
            generated++;
            if (next == eos && !noStop) {
                return new Decoded(generated, "eos");
            }
            out.print(streamer.accept(next));
            out.flush();
            if (generated == maxNewTokens) {
                break;
            }
            if (ctx > 0 && position.getAsInt() >= ctx) {
                return new Decoded(generated, "context full (" + ctx + " tokens)");
            }
            logits = step.apply(next);
        }
        return new Decoded(generated, "max-new-tokens");
    }

    private static String mib(long bytes) {
        return bytes < 0 ? "n/a" : String.format(Locale.ROOT, "%.2f MiB", bytes / (1024.0 * 1024.0));
    }

    /** A one-line progress bar redrawn with carriage returns (terminals only). */
    static final class ProgressBar {
        private final PrintWriter err;
        private final String label;
        private final int total;
        private final long start = System.nanoTime();

        ProgressBar(PrintWriter err, String label, int total) {
            this.err = err;
            this.label = label;
            this.total = total;
        }

        void update(int done) {
            int width = 30;
            int fill = (int) ((long) done * width / Math.max(1, total));
            double s = (System.nanoTime() - start) / 1e9;
            err.printf(Locale.ROOT, "\r%s [%s%s] %d/%d tokens, %.0f tok/s", label, "#".repeat(fill), ".".repeat(width - fill),
                    done, total, done / Math.max(s, 1e-9));
            err.flush();
        }

        void done() {
            err.print("\r\033[2K");
            err.flush();
        }
    }
}
