package io.kvquant.demo.cli;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.Generator;
import io.kvquant.demo.onnx.ModelDir;
import io.kvquant.demo.onnx.ModelInfo;
import io.kvquant.demo.text.Sampler;
import io.kvquant.demo.text.Tokenizer;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kvq generate}: long-context generation with an ONNX decoder and a kvquant KV cache. */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = {"Generates text with an exported decoder (ONNX Runtime), its KV cache compressed by kvquant.",
                "Text streams to stdout; progress and statistics go to stderr."},
        footer = {"", "Examples:",
                "  ./kvq generate --prompt-file models/prompts/long.txt --kv turbo3.5 --max-new-tokens 200",
                "  ./kvq generate --prompt 'And God said' --kv full --temperature 0.8 --top-p 0.95 --seed 1"})
public final class GenerateCommand implements Callable<Integer> {

    static final class PromptSource {
        @Option(names = "--prompt", description = "Prompt text.")
        String text;

        @Option(names = "--prompt-file", description = "Read the prompt from a UTF-8 file.")
        Path file;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    PromptSource prompt;

    @Option(names = "--model", description = "Model directory (model.onnx, tokenizer.json, config.json). Default: the bundled model.")
    Path model;

    @Option(names = "--kv", defaultValue = "turbo3.5", description = "KV cache setting, e.g. full, fp16, turbo3.5, turbo2.5, k4v3, kivi2, turbo3.5,window=128 (default: ${DEFAULT-VALUE}).")
    String kv;

    @Option(names = "--max-new-tokens", defaultValue = "128", description = "Tokens to generate at most (default: ${DEFAULT-VALUE}).")
    int maxNew;

    @Option(names = "--temperature", defaultValue = "0", description = "0 = greedy (default: ${DEFAULT-VALUE}).")
    float temperature;

    @Option(names = "--top-k", defaultValue = "0", description = "Sample among the k most likely tokens; 0 = off (default: ${DEFAULT-VALUE}).")
    int topK;

    @Option(names = "--top-p", defaultValue = "1.0", description = "Nucleus sampling mass (default: ${DEFAULT-VALUE}).")
    float topP;

    @Option(names = "--seed", defaultValue = "0", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--threads", description = "ONNX Runtime intra-op threads (default: all cores).")
    Integer threads;

    @Option(names = "--ep", defaultValue = "cpu", description = "Execution provider: cpu or cuda (default: ${DEFAULT-VALUE}).")
    String ep;

    @Option(names = "--mode", defaultValue = "roundtrip", description = "roundtrip (cache dequantized into the past tensors each step); java-attention and graph are planned (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--prefill-chunk", defaultValue = "256", description = "Prompt tokens per prefill step (default: ${DEFAULT-VALUE}).")
    int prefillChunk;

    @Option(names = "--truncate", description = "If the prompt does not fit the model's context, keep its last tokens instead of failing.")
    boolean truncate;

    @Option(names = "--stats-json", description = "Write the run's figures to this JSON file.")
    Path statsJson;

    @Override
    public Integer call() throws IOException {
        PrintStream err = System.err;
        if (maxNew < 1) {
            throw new IllegalArgumentException("--max-new-tokens must be >= 1, got " + maxNew);
        }
        switch (mode) {
            case "roundtrip" -> {
            }
            case "java-attention", "graph" -> throw new IllegalArgumentException("--mode " + mode
                    + " is not available yet (planned: issues 7 and 8); use --mode roundtrip");
            default -> throw new IllegalArgumentException("unknown --mode '" + mode + "' (known: roundtrip)");
        }
        KvQuantConfig cfg = KvQuantConfig.parse(kv);
        Sampler sampler = new Sampler(temperature, topK, topP, seed);
        String text = prompt.text;
        if (prompt.file != null) {
            if (!Files.isRegularFile(prompt.file)) {
                throw new IllegalArgumentException("prompt file " + prompt.file + " does not exist");
            }
            text = Files.readString(prompt.file, StandardCharsets.UTF_8);
        }
        if (text == null || text.isEmpty()) {
            throw new IllegalArgumentException("the prompt is empty");
        }
        if (statsJson != null && statsJson.toAbsolutePath().getParent() != null
                && !Files.isDirectory(statsJson.toAbsolutePath().getParent())) {
            throw new IllegalArgumentException("cannot write --stats-json: folder " + statsJson.toAbsolutePath().getParent()
                    + " does not exist");
        }
        Path dir = model != null ? model : ModelDir.bundled();
        ModelDir md = ModelDir.open(dir);
        int nThreads = threads != null ? threads : Runtime.getRuntime().availableProcessors();
        if (nThreads < 1) {
            throw new IllegalArgumentException("--threads must be >= 1");
        }
        try (Tokenizer tok = new Tokenizer(dir);
             DecoderModel dm = new DecoderModel(dir, nThreads, ep)) {
            ModelInfo info = dm.info();
            long[] ids = tok.encode(text);
            if (ids.length == 0) {
                throw new IllegalArgumentException("the prompt encodes to no tokens");
            }
            int ctx = md.maxPositions();
            if (ctx > 0 && ids.length + maxNew > ctx) {
                if (!truncate) {
                    throw new IllegalArgumentException("the prompt has " + ids.length + " tokens; with --max-new-tokens " + maxNew
                            + " it needs " + (ids.length + maxNew) + " positions, but the model's context is " + ctx
                            + " (shorten it, lower --max-new-tokens, or pass --truncate to keep its last tokens)");
                }
                int keep = Math.max(1, ctx - maxNew);
                ids = Arrays.copyOfRange(ids, ids.length - keep, ids.length);
                err.println("prompt truncated to its last " + keep + " tokens to fit the context of " + ctx);
            }
            Generator gen = new Generator(dm, prefillChunk);
            boolean tty = System.console() != null;
            List<Long> out = new ArrayList<>();
            StringBuilder printed = new StringBuilder();
            PrintStream stdout = System.out;
            Generator.Stats st;
            long kvBytes;
            long kvFp16;
            try (KvCache cache = KvCaches.create(cfg, info.layers(), info.kvHeads(), info.headDim())) {
                st = gen.generate(ids, cache, sampler, maxNew, md.eosTokenId(), tokenId -> {
                    out.add((long) tokenId);
                    String all = tok.decode(out.stream().mapToLong(Long::longValue).toArray());
                    // wait for the rest of a UTF-8 character split across tokens
                    if (!all.endsWith("\uFFFD") && all.length() >= printed.length() && all.startsWith(printed.toString())) {
                        stdout.print(all.substring(printed.length()));
                        stdout.flush();
                        printed.setLength(0);
                        printed.append(all);
                    }
                }, tty ? (done, total) -> progress(err, done, total) : null);
                kvBytes = cache.bytesUsed();
                kvFp16 = cache.fp16EquivalentBytes();
            }
            String all = tok.decode(out.stream().mapToLong(Long::longValue).toArray());
            if (all.startsWith(printed.toString()) && all.length() > printed.length()) {
                stdout.print(all.substring(printed.length()));
            }
            stdout.println();
            stdout.flush();
            long rss = peakRss();
            err.printf(Locale.ROOT, "prompt tokens: %d, generated: %d | prefill %.1f tok/s | decode %.2f tok/s%n",
                    st.promptTokens(), st.generatedTokens(), st.prefillTokensPerSecond(), st.decodeTokensPerSecond());
            err.printf(Locale.ROOT, "KV cache (%s, %s): %.2f MiB, fp16 equivalent %.2f MiB (%.2fx smaller) | peak RSS %.0f MiB%n",
                    cfg, mode, kvBytes / 1048576.0, kvFp16 / 1048576.0, kvFp16 / (double) Math.max(1, kvBytes), rss / 1048576.0);
            if (statsJson != null) {
                writeStats(st, kvBytes, kvFp16, rss, cfg, nThreads, dir);
            }
        }
        return 0;
    }

    private static void progress(PrintStream err, int done, int total) {
        int width = 30;
        int fill = (int) ((long) width * done / total);
        err.printf(Locale.ROOT, "\rprefill [%s%s] %3d%% %d/%d tokens", "#".repeat(fill), ".".repeat(width - fill),
                100L * done / total, done, total);
        if (done == total) {
            err.print("\r" + " ".repeat(70) + "\r");
        }
        err.flush();
    }

    /** Peak resident set size of this process (VmHWM), 0 where /proc is not available. */
    public static long peakRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024L;
                }
            }
        } catch (IOException | RuntimeException e) {
            return 0;
        }
        return 0;
    }

    private void writeStats(Generator.Stats st, long kvBytes, long kvFp16, long rss, KvQuantConfig cfg, int nThreads, Path dir)
            throws IOException {
        String json = String.format(Locale.ROOT, """
                {
                  "prompt_tokens": %d,
                  "generated_tokens": %d,
                  "prefill_tokens_per_s": %.3f,
                  "decode_tokens_per_s": %.3f,
                  "kv_bytes": %d,
                  "kv_bytes_fp16_equivalent": %d,
                  "peak_rss_bytes": %d,
                  "kv": "%s",
                  "mode": "%s",
                  "ep": "%s",
                  "threads": %d,
                  "model": "%s"
                }
                """, st.promptTokens(), st.generatedTokens(), st.prefillTokensPerSecond(), st.decodeTokensPerSecond(),
                kvBytes, kvFp16, rss, cfg, mode, ep, nThreads, dir.toAbsolutePath().toString().replace("\\", "\\\\").replace("\"", "\\\""));
        Path target = statsJson.toAbsolutePath();
        Path tmp = Files.createTempFile(target.getParent(), ".stats", ".tmp");
        try {
            Files.writeString(tmp, json);
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
