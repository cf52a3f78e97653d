package io.kvquant.demo.text;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class TextTokenizerTest {

    static Path modelDir() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("models/kvq-llama/tokenizer.json"))) {
                return p.resolve("models/kvq-llama");
            }
        }
        throw new AssertionError("models/kvq-llama/tokenizer.json not found above " + Path.of("").toAbsolutePath());
    }

    @Test
    void streamingReassemblesMultiByteCharactersSplitAcrossTokens() throws Exception {
        // Characters outside the BPE merges (CJK, emoji) are emitted as single bytes, so their
        // UTF-8 sequences are split across tokens: the streamer must hold them back until whole.
        String text = "Tokyo 東京 and a smile 😀, naïve café. " + "The end of the line. ".repeat(10) + "終わり";
        try (TextTokenizer tok = TextTokenizer.open(modelDir())) {
            long[] ids = tok.encode(text);
            TextTokenizer.Streamer st = new TextTokenizer.Streamer(tok);
            StringBuilder out = new StringBuilder();
            boolean heldBack = false;
            for (long id : ids) {
                String piece = st.accept(id);
                assertFalse(piece.contains("\uFFFD"), "streamed a broken character: " + piece);
                heldBack |= piece.isEmpty();
                out.append(piece);
            }
            assertEquals(text, out.toString());
            assertTrue(ids.length > 64, "long enough to exercise the window restart: " + ids.length);
            assertTrue(heldBack, "some token ended mid-character (otherwise this test checks nothing)");
        }
    }

    @Test
    void missingTokenizerIsAClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextTokenizer.open(Path.of("/nonexistent-kvq-dir")));
        assertTrue(e.getMessage().contains("tokenizer not found"), e.getMessage());
    }
}
