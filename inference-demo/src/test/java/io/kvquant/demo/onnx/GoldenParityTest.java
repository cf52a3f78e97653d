package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.Tokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * The exported model run by ONNX Runtime Java against PyTorch's numbers (golden.json, written by
 * models/scripts/export.py): tokenizer ids, a full forward, and incremental decoding with past.
 */
class GoldenParityTest {

    private static float[] floats(JsonArray a) {
        float[] f = new float[a.size()];
        for (int i = 0; i < f.length; i++) {
            f[i] = a.get(i).getAsFloat();
        }
        return f;
    }

    private static long[] longs(JsonArray a) {
        long[] f = new long[a.size()];
        for (int i = 0; i < f.length; i++) {
            f[i] = a.get(i).getAsLong();
        }
        return f;
    }

    @Test
    void tokenizerForwardAndIncrementalDecodingMatchTorch() throws Exception {
        Path dir = BundledModel.dir();
        JsonObject g = JsonParser.parseString(Files.readString(dir.resolve("golden.json"))).getAsJsonObject();
        try (Tokenizer tok = new Tokenizer(dir); DecoderModel m = new DecoderModel(dir, 2, "cpu")) {
            JsonObject t = g.getAsJsonObject("tokenizer");
            long[] ids = tok.encode(t.get("text").getAsString());
            assertArrayEquals(longs(t.getAsJsonArray("token_ids")), ids, "DJL tokenizer vs the Python BPE encoder");
            assertEquals(t.get("text").getAsString(), tok.decode(ids), "decode(encode(text)) == text");

            JsonObject f = g.getAsJsonObject("forward");
            long[] input = longs(f.getAsJsonArray("input_ids"));
            float[] want = floats(f.getAsJsonArray("last_logits"));
            try (KvCache c = KvCaches.create("full", m.info().layers(), m.info().kvHeads(), m.info().headDim())) {
                float[] got = m.step(input, c, false);
                assertArrayEquals(want, got, 2e-3f, "full forward, last position");
            }
            JsonObject inc = g.getAsJsonObject("incremental");
            int prefix = inc.get("prefix_len").getAsInt();
            try (KvCache c = KvCaches.create("full", m.info().layers(), m.info().kvHeads(), m.info().headDim())) {
                m.step(java.util.Arrays.copyOf(input, prefix), c, false);
                for (var e : inc.getAsJsonArray("steps")) {
                    JsonObject s = e.getAsJsonObject();
                    float[] got = m.step(new long[]{s.get("token").getAsLong()}, c, false);
                    assertArrayEquals(floats(s.getAsJsonArray("logits")), got, 2e-3f, "incremental step at " + c.length(0));
                }
            }
        }
    }
}
