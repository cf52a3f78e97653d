package io.kvquant.demo.text;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * DJL's Hugging Face tokenizer over a model directory's {@code tokenizer.json}, offline
 * (no special tokens added, no truncation or padding).
 */
public final class TextTokenizer implements AutoCloseable {
    private final HuggingFaceTokenizer tok;

    private TextTokenizer(HuggingFaceTokenizer tok) {
        this.tok = tok;
    }

    public static TextTokenizer open(Path modelDir) throws IOException {
        Path file = Files.isDirectory(modelDir) ? modelDir.resolve("tokenizer.json") : modelDir;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("tokenizer not found: " + file + " (a Hugging Face tokenizer.json)");
        }
        if (System.getProperty("slf4j.internal.verbosity") == null) {
            System.setProperty("slf4j.internal.verbosity", "ERROR"); // DJL logs through SLF4J; no provider is bundled
        }
        if (System.getProperty("ai.djl.offline") == null) {
            System.setProperty("ai.djl.offline", "true");
        }
        try {
            return new TextTokenizer(HuggingFaceTokenizer.newInstance(file, Map.of(
                    "addSpecialTokens", "false", "truncation", "false", "padding", "false", "modelMaxLength", "1000000000")));
        } catch (RuntimeException | UnsatisfiedLinkError e) {
            throw new IOException("cannot load tokenizer " + file + ": " + e.getMessage(), e);
        }
    }

    public long[] encode(String text) {
        Encoding e = tok.encode(text, false, false);
        return e.getIds();
    }

    public String decode(long[] ids) {
        return tok.decode(ids, false);
    }

    @Override
    public void close() {
        tok.close();
    }

    /**
     * Streams text as tokens arrive: decodes the tokens since the last stable point and emits
     * only the new characters, holding back while the tail is an incomplete UTF-8 sequence
     * (which byte-level BPE decoders render as U+FFFD).
     */
    public static final class Streamer {
        private final TextTokenizer tok;
        private final java.util.List<Long> pending = new java.util.ArrayList<>();
        private int emitted;

        public Streamer(TextTokenizer tok) {
            this.tok = tok;
        }

        /** Adds a token; returns the newly complete text (possibly empty). */
        public String accept(long id) {
            pending.add(id);
            String text = tok.decode(ids());
            if (text.endsWith("\uFFFD")) {
                return "";
            }
            String out = text.length() > emitted ? text.substring(emitted) : "";
            emitted = text.length();
            if (pending.size() > 64) { // restart the window at a complete boundary to stay O(n)
                pending.clear();
                emitted = 0;
            }
            return out;
        }

        private long[] ids() {
            long[] a = new long[pending.size()];
            for (int i = 0; i < a.length; i++) {
                a[i] = pending.get(i);
            }
            return a;
        }
    }
}
