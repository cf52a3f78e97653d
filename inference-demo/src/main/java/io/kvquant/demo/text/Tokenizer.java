package io.kvquant.demo.text;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** The model directory's {@code tokenizer.json}, loaded offline with DJL's Hugging Face tokenizer. */
public final class Tokenizer implements AutoCloseable {

    private final HuggingFaceTokenizer tok;

    public Tokenizer(Path modelDir) {
        Path file = modelDir.resolve("tokenizer.json");
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("no tokenizer.json in " + modelDir);
        }
        System.setProperty("ai.djl.offline", "true");
        try {
            // DJL truncates to 512 tokens unless told not to: long prompts are the point here
            tok = HuggingFaceTokenizer.builder().optTokenizerPath(file).optAddSpecialTokens(false)
                    .optTruncation(false).optPadding(false).build();
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException("cannot load " + file + ": " + e.getMessage());
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
}
