package io.kvquant.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.demo.onnx.Json;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** {@code kvq generate} end to end: bad input gives one line and exit 2; a good run streams text and writes stats. */
class GenerateCliTest {

    record Run(int code, String out, String err) {
    }

    static Run kvq(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cl = new CommandLine(new Kvq());
        cl.setExecutionExceptionHandler(new UserErrors());
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        int code = cl.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    static Path modelDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("models/kvq-llama/model.onnx"))) {
                return p.resolve("models/kvq-llama");
            }
        }
        throw new AssertionError("bundled model models/kvq-llama not found above " + Path.of("").toAbsolutePath());
    }

    static void assertOneLineError(Run r, String expected) {
        assertEquals(2, r.code(), "exit code; stderr: " + r.err());
        String e = r.err().strip();
        assertFalse(e.contains("\n"), "one line expected, got:\n" + r.err());
        assertTrue(e.startsWith("kvq generate: "), e);
        assertTrue(e.contains(expected), "'" + expected + "' not in: " + e);
        assertFalse(e.contains("Exception"), "no exception names in user errors: " + e);
    }

    static List<Path> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return new ArrayList<>(s.filter(Files::isRegularFile).toList());
        }
    }

    @Test
    void badInputIsOneLineAndNothingIsWritten(@TempDir Path tmp) throws IOException {
        String model = modelDir().toString();
        String stats = tmp.resolve("stats.json").toString();
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--kv", "bogus", "--stats-json", stats),
                "'bogus'"); // the cache's parser names the bad preset
        assertOneLineError(kvq("generate", "--model", tmp.resolve("nope").toString(), "--prompt", "Hi"),
                "model directory not found");
        Path noTok = Files.createDirectory(tmp.resolve("notok"));
        Files.copy(modelDir().resolve("model.onnx"), noTok.resolve("model.onnx"));
        assertOneLineError(kvq("generate", "--model", noTok.toString(), "--prompt", "Hi"), "no tokenizer.json");
        Path unprepared = Files.createDirectory(tmp.resolve("unprepared"));
        for (String f : new String[] {"model.onnx", "tokenizer.json", "config.json"}) {
            Files.copy(modelDir().resolve(f), unprepared.resolve(f));
        }
        // the engine prepares itself; a cache folder it cannot write is one line naming the variable to set
        Path notADir = Files.writeString(tmp.resolve("cache-is-a-file"), "x");
        String before = System.getProperty(io.kvquant.demo.onnx.PreparedModels.PROPERTY);
        System.setProperty(io.kvquant.demo.onnx.PreparedModels.PROPERTY, notADir.resolve("sub").toString());
        try {
            for (String mode : new String[] {"engine", "java-attention"}) {
                assertOneLineError(kvq("generate", "--model", unprepared.toString(), "--prompt", "Hi", "--mode", mode),
                        "set KVQ_CACHE_DIR to a writable folder");
            }
            assertOneLineError(kvq("generate", "--model", unprepared.toString(), "--prompt", "Hi"), "cannot write the "
                    + "engine's prepared-model cache in " + notADir.resolve("sub"));
        } finally {
            if (before == null) {
                System.clearProperty(io.kvquant.demo.onnx.PreparedModels.PROPERTY);
            } else {
                System.setProperty(io.kvquant.demo.onnx.PreparedModels.PROPERTY, before);
            }
        }
        Files.delete(notADir);
        assertOneLineError(kvq("generate", "--model", unprepared.toString(), "--prompt", "Hi", "--mode", "graph"),
                "--mode graph --kv turbo3.5");
        assertOneLineError(kvq("generate", "--model", unprepared.toString(), "--prompt", "Hi", "--mode", "graph", "--kv",
                "turbo3.5,qjl=k"), "QJL");
        assertOneLineError(kvq("generate", "--model", unprepared.toString(), "--prompt", "Hi", "--mode", "graph", "--ep",
                "cuda"), "--mode graph --kv turbo3.5");
        Path broken = Files.createDirectory(tmp.resolve("broken"));
        Files.copy(modelDir().resolve("tokenizer.json"), broken.resolve("tokenizer.json"));
        Files.writeString(broken.resolve("model.onnx"), "this is not an onnx model");
        assertOneLineError(kvq("generate", "--model", broken.toString(), "--prompt", "Hi"), "model.onnx");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "word ".repeat(5000), "--stats-json", stats),
                "longer than the model's context");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--ep", "cuda", "--stats-json", stats),
                "CUDA build of ONNX Runtime");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--mode", "grpah"), "unknown --mode");
        assertOneLineError(kvq("generate", "--model", model), "exactly one of --prompt");
        assertOneLineError(kvq("generate", "--model", model, "--prompt-file", tmp.resolve("none.txt").toString()),
                "prompt file not found");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--top-p", "0"), "--top-p");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--prefill-chunk", "0"), "--prefill-chunk");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--warmup", "auto", "--stats-json", stats),
                "--warmup takes off or full");
        assertOneLineError(kvq("generate", "--model", model, "--prompt", "Hi", "--stats-json",
                tmp.resolve("no/such/dir/s.json").toString()), "--stats-json");
        assertEquals(List.of(), files(tmp), "nothing written by failed runs");
    }

    /** --warmup full compiles the kernels before the prompt and says how long it ran and how long the start waited. */
    @Test
    void fullWarmupIsRecorded(@TempDir Path tmp) throws IOException {
        Path stats = tmp.resolve("stats.json");
        Run r = kvq("generate", "--model", modelDir().toString(), "--prompt", "And God said, Let there be light:",
                "--max-new-tokens", "2", "--no-stop", "--warmup", "full", "--stats-json", stats.toString());
        assertEquals(0, r.code(), r.err());
        Map<?, ?> j = (Map<?, ?>) Json.parse(Files.readString(stats));
        assertEquals("full", j.get("warmup"));
        assertEquals("java", j.get("decode_step"), "compiled first, the decode steps run in Java");
        double ran = ((Number) j.get("warmup_seconds")).doubleValue();
        double waited = ((Number) j.get("warmup_wait_seconds")).doubleValue();
        assertTrue(ran > 0 && waited >= 0 && waited <= ran + 1, "ran " + ran + " s, waited " + waited + " s");
    }

    @Test
    void generatesAndWritesStats(@TempDir Path tmp) throws IOException {
        Path stats = tmp.resolve("stats.json");
        Run r = kvq("generate", "--model", modelDir().toString(), "--prompt", "And God said, Let there be light:",
                "--kv", "turbo3.5,window=0,center=off", "--max-new-tokens", "6", "--no-stop", "--prefill-chunk", "4", "--threads", "1",
                "--stats-json", stats.toString());
        assertEquals(0, r.code(), r.err());
        assertFalse(r.out().isBlank(), "generated text on stdout");
        assertTrue(r.err().contains("prefill") && r.err().contains("decode"), r.err());
        Map<?, ?> j = (Map<?, ?>) Json.parse(Files.readString(stats));
        for (String k : List.of("prompt_tokens", "generated_tokens", "prefill_tokens_per_s", "decode_tokens_per_s",
                "kv_bytes", "kv_bytes_fp16_equivalent", "peak_rss_bytes", "kv", "mode", "run")) {
            assertTrue(j.containsKey(k), "stats field " + k + " in " + j.keySet());
        }
        assertEquals(6, ((Number) j.get("generated_tokens")).intValue());
        assertEquals("turbo3.5,window=0,center=off", j.get("kv"));
        assertEquals("engine", j.get("mode"), "the engine is the default");
        int prompt = ((Number) j.get("prompt_tokens")).intValue();
        assertTrue(prompt > 4, "prompt tokens " + prompt);
        assertEquals(prompt + 5, ((Number) j.get("kv_tokens")).intValue(), "prompt + 5 decode steps cached");
        long held = ((Number) j.get("kv_bytes")).longValue();
        long used = ((Number) j.get("kv_bytes_used")).longValue();
        assertTrue(used < ((Number) j.get("kv_bytes_fp16_equivalent")).longValue());
        // everything held: the cache's pages as allocated (>= the bytes of data) plus the decoder's
        // own buffers, which the engine does not have
        assertTrue(held >= used, held + " held vs " + used + " used");
        assertEquals(held, ((Number) j.get("kv_bytes_cache")).longValue() + ((Number) j.get("kv_bytes_decoder")).longValue());
        assertEquals(0L, ((Number) j.get("kv_bytes_decoder")).longValue(), "the engine holds no dense past");
        assertTrue(((Number) j.get("peak_rss_bytes")).longValue() > 0);
        assertEquals(List.of(stats), files(tmp), "only the stats file, no temp files");
        assertEquals("off", j.get("warmup"), "no kernel warm-up by default");
        assertEquals("onnxruntime", j.get("decode_step"), "a one-shot run without the warm-up decodes through ONNX Runtime");
        assertFalse(j.containsKey("warmup_seconds"), "no warm-up ran: " + j.keySet());

        // the round-trip reference holds a dense copy of the past, and its kv_bytes say so:
        // at least 2 (K, V) x 4 layers x 2 KV heads x 64 dims x 4 bytes per cached token
        Path rt = tmp.resolve("rt.json");
        Run r2 = kvq("generate", "--model", modelDir().toString(), "--prompt", "And God said, Let there be light:",
                "--kv", "turbo3.5", "--max-new-tokens", "6", "--no-stop", "--prefill-chunk", "4", "--threads", "1",
                "--mode", "roundtrip", "--stats-json", rt.toString());
        assertEquals(0, r2.code(), r2.err());
        Map<?, ?> j2 = (Map<?, ?>) Json.parse(Files.readString(rt));
        assertEquals("roundtrip", j2.get("mode"));
        long dense = 2L * 4 * 2 * 64 * 4 * (prompt + 5);
        assertTrue(((Number) j2.get("kv_bytes_decoder")).longValue() >= dense, j2.get("kv_bytes_decoder") + " < " + dense);
        assertTrue(((Number) j2.get("kv_bytes")).longValue() > ((Number) j2.get("kv_bytes_fp16_equivalent")).longValue(),
                "round-trip holds more than fp16 would");
    }
}
