package io.kvquant.demo.onnx;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** A model directory: model.onnx, tokenizer.json and (optionally) config.json. */
public record ModelDir(Path path, int maxPositions, int eosTokenId) {

    /** The bundled model: {@code <kvq.home>/models/kvq-llama}, or found walking up from the working directory. */
    public static Path bundled() {
        String home = System.getProperty("kvq.home");
        if (home != null) {
            return Path.of(home, "models", "kvq-llama");
        }
        Path p = Path.of("").toAbsolutePath();
        while (p != null) {
            Path c = p.resolve("models").resolve("kvq-llama");
            if (Files.isDirectory(c)) {
                return c;
            }
            p = p.getParent();
        }
        return Path.of("models", "kvq-llama");
    }

    public static ModelDir open(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new IllegalArgumentException("model directory " + dir + " does not exist");
        }
        int maxPos = -1;
        int eos = -1;
        Path cfg = dir.resolve("config.json");
        if (Files.isRegularFile(cfg)) {
            try {
                JsonObject o = JsonParser.parseString(Files.readString(cfg)).getAsJsonObject();
                maxPos = intOr(o.get("max_position_embeddings"), -1);
                JsonElement e = o.get("eos_token_id");
                if (e != null && e.isJsonArray() && !e.getAsJsonArray().isEmpty()) {
                    eos = e.getAsJsonArray().get(0).getAsInt();
                } else {
                    eos = intOr(e, -1);
                }
            } catch (IOException | RuntimeException e) {
                throw new IllegalArgumentException("cannot read " + cfg + ": " + e.getMessage());
            }
        }
        return new ModelDir(dir, maxPos, eos);
    }

    private static int intOr(JsonElement e, int dflt) {
        return e == null || e.isJsonNull() ? dflt : e.getAsInt();
    }
}
