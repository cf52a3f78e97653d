package io.kvquant.demo.cli;

import io.kvquant.demo.graph.OrtQuantKv;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.OrtBaseline;
import io.kvquant.demo.onnx.PlainOrtDecoder;
import io.kvquant.demo.sampling.Sampler;
import io.kvquant.demo.text.TextTokenizer;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * {@code kvq generate --kv ort|ort-int8|ort-int4}: the same generation loop and figures as the
 * kvquant modes, run by ONNX Runtime alone ({@link PlainOrtDecoder}: present fed back as past, no
 * kvquant cache): {@code ort} runs the graph as exported, {@code ort-int8}/{@code ort-int4} ONNX
 * Runtime's own quantized KV cache in GroupQueryAttention ({@link OrtBaseline}; scales calibrated
 * on the prompt's first chunk). They are the baseline rows of {@code kvq bench generate}. Reads
 * the options of the {@link GenerateCommand} it is called from.
 */
final class PlainOrtGenerate {

    private PlainOrtGenerate() {
    }

    static boolean selected(String kv) {
        return OrtQuantKv.Setting.of(kv) != null;
    }

    static int run(GenerateCommand c) throws IOException {
        OrtQuantKv.Setting setting = OrtQuantKv.Setting.of(c.kv);
        if (c.spec.commandLine().getParseResult() != null && c.spec.commandLine().getParseResult().hasMatchedOption("--mode")) {
            throw new IllegalArgumentException("--kv " + setting.cli + " is ONNX Runtime decoding alone (no kvquant cache); "
                    + "--mode does not apply, drop it");
        }
        if (c.promptCache.settings().any()) {
            throw new IllegalArgumentException("--kv " + setting.cli + " is ONNX Runtime decoding alone: prompt caches "
                    + "(--save-cache/--load-cache/--cache-store) hold kvquant caches; drop them");
        }
        DecoderModel.Ep provider = switch (c.ep.trim().toLowerCase(Locale.ROOT)) {
            case "cpu" -> DecoderModel.Ep.CPU;
            case "cuda" -> DecoderModel.Ep.CUDA;
            default -> throw new IllegalArgumentException("unknown --ep '" + c.ep + "' (cpu or cuda)");
        };
        if (c.maxNewTokens < 0) {
            throw new IllegalArgumentException("--max-new-tokens must be >= 0, got " + c.maxNewTokens);
        }
        if (c.prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + c.prefillChunk);
        }
        if (c.threads < 0) {
            throw new IllegalArgumentException("--threads must be >= 0, got " + c.threads);
        }
        Sampler sampler = new Sampler(c.temperature, c.topK, c.topP, c.seed);
        if ((c.prompt == null) == (c.promptFile == null)) {
            throw new IllegalArgumentException("give exactly one of --prompt TEXT or --prompt-file FILE");
        }
        if (c.statsJson != null) {
            Path dir = c.statsJson.toAbsolutePath().getParent();
            if (dir == null || !Files.isDirectory(dir)) {
                throw new IllegalArgumentException("--stats-json: folder does not exist: " + dir);
            }
        }
        String text;
        if (c.promptFile != null) {
            if (!Files.isRegularFile(c.promptFile)) {
                throw new IllegalArgumentException("prompt file not found: " + c.promptFile);
            }
            text = Files.readString(c.promptFile);
        } else {
            text = c.prompt;
        }
        Path dir = c.model != null ? c.model : ModelPaths.bundledModel();
        ModelPaths.check(dir);
        PrintWriter err = c.spec.commandLine().getErr();
        PrintWriter out = c.spec.commandLine().getOut();
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            long[] ids = tok.encode(text);
            if (ids.length == 0) {
                throw new IllegalArgumentException("the prompt encodes to no tokens");
            }
            // the quantized settings' scales come from the prompt's first chunk (ONNX Runtime needs static scales)
            long[] calibration = java.util.Arrays.copyOf(ids, Math.min(ids.length, c.prefillChunk));
            try (OrtBaseline dm = OrtBaseline.open(dir, new DecoderModel.Options(c.threads, provider), setting, calibration)) {
                int ctx = dm.maxContext;
                if (ctx > 0 && ids.length > ctx) {
                    throw new IllegalArgumentException("the prompt is " + ids.length + " tokens, longer than the model's "
                            + "context of " + ctx + " tokens; shorten it");
                }
                if (dm.calibrationTokens > 0) {
                    err.printf(Locale.ROOT, "kv %s: per-channel scales calibrated on the prompt's first %d tokens in %.2f s "
                            + "(unquantized run)%n", setting.cli, dm.calibrationTokens, dm.calibrationSeconds);
                }
                try (PlainOrtDecoder dec = dm.newDecoder(c.prefillChunk)) {
                    return generate(c, dm, dec, tok, ids, sampler, out, err);
                }
            }
        }
    }

    private static int generate(GenerateCommand c, OrtBaseline dm, PlainOrtDecoder dec, TextTokenizer tok, long[] ids,
                                Sampler sampler, PrintWriter out, PrintWriter err) throws IOException {
        String kv = dm.setting.cli;
        java.io.Console console = System.console();
        boolean tty = console != null && console.isTerminal();
        GenerateCommand.ProgressBar bar = tty ? new GenerateCommand.ProgressBar(err, "prefill", ids.length) : null;
        long t0 = System.nanoTime();
        float[] logits = dec.prefill(ids, bar == null ? null : bar::update);
        long t1 = System.nanoTime();
        if (bar != null) {
            bar.done();
        }
        long t2 = System.nanoTime();
        GenerateCommand.Decoded run = GenerateCommand.decode(logits, dec::step, dec::position, sampler, tok, c.maxNewTokens,
                c.noStop, dm.maxContext, dm.eosTokenId, out);
        int generated = run.generated();
        String stop = run.stop();
        long t3 = System.nanoTime();
        out.println();
        out.flush();
        int decodeSteps = dec.position() - ids.length;
        double prefillTps = ids.length / ((t1 - t0) / 1e9);
        double decodeTps = decodeSteps > 0 ? decodeSteps / ((t3 - t2) / 1e9) : Double.NaN;
        long peak = RunStats.peakRssBytes();
        RunStats st = new RunStats();
        st.fields.put("prompt_tokens", ids.length);
        st.fields.put("generated_tokens", generated);
        st.fields.put("decode_steps", decodeSteps);
        st.fields.put("stop", stop);
        st.fields.put("prefill_seconds", (t1 - t0) / 1e9);
        st.fields.put("prefill_tokens_per_s", prefillTps);
        st.fields.put("decode_tokens_per_s", decodeTps);
        st.fields.put("kv_tokens", dec.position());
        // the dense past held between steps (ONNX Runtime's present tensors); during a step
        // ONNX Runtime holds it twice (past in, present out), which peak RSS shows
        st.fields.put("kv_bytes", dec.pastBytes());
        st.fields.put("kv_bytes_fp16_equivalent", dec.pastBytesFp16());
        st.fields.put("peak_rss_bytes", peak);
        st.fields.put("past_bytes_per_decode_step", dec.pastBytes() - dec.pastBytes() / Math.max(1, dec.position()));
        st.fields.put("kv", kv);
        st.fields.put("mode", kv);
        if (dm.calibrationTokens > 0) { // ort-int8/ort-int4: the scales' calibration run (not in prefill_seconds)
            st.fields.put("calibration_tokens", dm.calibrationTokens);
            st.fields.put("calibration_seconds", dm.calibrationSeconds);
        }
        Map<String, Object> cfg = new LinkedHashMap<>();
        cfg.put("model", dm.file.toString());
        cfg.put("model_shape", dm.describe());
        cfg.put("kv", kv);
        cfg.put("mode", kv);
        cfg.put("ep", c.ep);
        cfg.put("prefill_chunk", c.prefillChunk);
        cfg.put("max_new_tokens", c.maxNewTokens);
        cfg.put("temperature", c.temperature);
        cfg.put("top_k", c.topK);
        cfg.put("top_p", c.topP);
        cfg.put("seed", c.seed);
        st.fields.put("run", RunStats.metadata(c.threads));
        st.fields.put("config", cfg);
        err.printf(Locale.ROOT, "prompt %d tokens, prefill %.1f tok/s; generated %d tokens (stop: %s), decode %.1f tok/s%n",
                ids.length, prefillTps, generated, stop, decodeTps);
        err.printf(Locale.ROOT, "kv %s (ONNX Runtime alone, present fed back as past): past %.2f MiB (fp16/held %.2fx); "
                        + "peak RSS %s%n", kv, dec.pastBytes() / (1024.0 * 1024.0),
                dec.pastBytes() > 0 ? (double) dec.pastBytesFp16() / dec.pastBytes() : Double.NaN, peak < 0 ? "n/a" : String.format(Locale.ROOT, "%.2f MiB", peak / (1024.0 * 1024.0)));
        err.flush();
        if (c.statsJson != null) {
            st.writeAtomically(c.statsJson);
        }
        return 0;
    }
}
