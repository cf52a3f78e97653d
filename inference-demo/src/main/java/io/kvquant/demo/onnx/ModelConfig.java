package io.kvquant.demo.onnx;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/** The few fields of a Hugging Face config.json the runner uses ({@code queryHeads}: num_attention_heads); -1 where absent. */
public record ModelConfig(int maxPositions, int eosTokenId, int kvHeads, int headDim, int queryHeads) {

    public static ModelConfig read(Path configJson) throws IOException {
        if (!Files.isRegularFile(configJson)) {
            return new ModelConfig(-1, -1, -1, -1, -1);
        }
        Object parsed;
        try {
            parsed = Json.parse(Files.readString(configJson));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(configJson + ": " + e.getMessage(), e);
        }
        if (!(parsed instanceof Map<?, ?> m)) {
            throw new IllegalArgumentException(configJson + ": expected a JSON object");
        }
        int ctx = intOf(m, "max_position_embeddings");
        if (ctx < 0) {
            ctx = intOf(m, "n_positions");
        }
        int eos;
        Object e = m.get("eos_token_id");
        if (e instanceof List<?> l && !l.isEmpty() && l.get(0) instanceof Number n) {
            eos = n.intValue();
        } else {
            eos = intOf(m, "eos_token_id");
        }
        int kvh = intOf(m, "num_key_value_heads");
        if (kvh < 0) {
            kvh = intOf(m, "num_attention_heads");
        }
        int hd = intOf(m, "head_dim");
        if (hd < 0 && intOf(m, "hidden_size") > 0 && intOf(m, "num_attention_heads") > 0) {
            hd = intOf(m, "hidden_size") / intOf(m, "num_attention_heads");
        }
        return new ModelConfig(ctx, eos, kvh, hd, intOf(m, "num_attention_heads"));
    }

    private static int intOf(Map<?, ?> m, String key) {
        return m.get(key) instanceof Number n ? n.intValue() : -1;
    }
}
