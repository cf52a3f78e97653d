package io.kvquant.demo.onnx;

import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.demo.cli.ModelPaths;
import io.kvquant.demo.graph.AttentionSplit;
import io.kvquant.demo.graph.DequantGraph;
import io.kvquant.demo.graph.OnnxModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;

/**
 * In-graph dequantization mode: the decoder rewritten by {@link DequantGraph} for one cache
 * setting, prepared by {@code kvq prepare --mode graph --kv SETTING} into
 * {@code <model dir>/graph-<setting>/} (model.onnx and manifest.json with the source model's
 * sha256 and the exact setting the codebooks and rotations were baked from).
 */
public final class GraphModel implements ModelRunner {
    static final int FORMAT = 1;

    final OrtSession session;
    final KvQuantConfig config;
    final int layers;
    private final Path file;
    private final ModelConfig mc;
    private final boolean cuda;

    private GraphModel(OrtSession session, KvQuantConfig config, int layers, Path file, ModelConfig mc, boolean cuda) {
        this.session = session;
        this.config = config;
        this.layers = layers;
        this.file = file;
        this.mc = mc;
        this.cuda = cuda;
    }

    static String dirName(KvQuantConfig cfg) {
        return "graph-" + cfg.toString().replaceAll("[^A-Za-z0-9.=-]+", "_");
    }

    /** Rewrites {@code modelDir/model.onnx} for {@code cfg}; returns the folder written. */
    public static Path prepare(Path modelDir, KvQuantConfig cfg) throws IOException {
        DequantGraph.check(cfg);
        Path file = modelDir.resolve("model.onnx");
        ModelConfig mc = ModelConfig.read(modelDir.resolve("config.json"));
        if (mc.kvHeads() <= 0 || mc.headDim() <= 0) {
            throw new IllegalArgumentException(modelDir.resolve("config.json") + " must give the KV heads and head size");
        }
        OnnxModel m = OnnxModel.read(file);
        AttentionSplit split = AttentionSplit.of(m);
        byte[] rewritten = DequantGraph.rewrite(m, split, cfg, mc.kvHeads(), mc.headDim());
        Path out = modelDir.resolve(dirName(cfg));
        Files.createDirectories(out);
        Path tmp = Files.createTempFile(out, ".model", ".onnx");
        OnnxModel.writeLinked(rewritten, tmp); // weights referenced where they lie, not copied
        Files.move(tmp, out.resolve("model.onnx"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        String manifest = "{\n  \"format\": " + FORMAT + ",\n  \"source_sha256\": \"" + ModelPaths.sha256(file)
                + "\",\n  \"kv\": " + Json.quote(cfg.toString()) + ",\n  \"layers\": " + split.layers.size() + "\n}\n";
        Files.writeString(out.resolve("manifest.json"), manifest);
        return out;
    }

    /** Opens a preparation for {@code cfg}; one-line errors when missing, stale or for another setting. */
    @SuppressWarnings("unchecked")
    public static GraphModel open(Path modelDir, KvQuantConfig cfg, DecoderModel.Options opts) throws IOException {
        DequantGraph.check(cfg);
        Path dir = modelDir.resolve(dirName(cfg));
        Path manifest = dir.resolve("manifest.json");
        if (!Files.isRegularFile(manifest)) {
            throw new IllegalArgumentException("--mode graph needs the model rewritten for --kv " + cfg + " first: run ./kvq "
                    + "prepare --model " + modelDir + " --mode graph --kv " + cfg);
        }
        Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(manifest));
        if (!ModelPaths.sha256(modelDir.resolve("model.onnx")).equals(m.get("source_sha256"))
                || ((Number) m.get("format")).intValue() != FORMAT || !cfg.toString().equals(m.get("kv"))) {
            throw new IllegalArgumentException("the graph preparation in " + dir + " is stale (another model.onnx, format or "
                    + "setting); run ./kvq prepare --model " + modelDir + " --mode graph --kv " + cfg + " again");
        }
        ModelConfig mc = ModelConfig.read(modelDir.resolve("config.json"));
        try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
            OrtSession s = DecoderModel.environment().createSession(dir.resolve("model.onnx").toString(), so);
            return new GraphModel(s, cfg, ((Number) m.get("layers")).intValue(), modelDir.resolve("model.onnx"), mc,
                    opts.ep() == DecoderModel.Ep.CUDA);
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime cannot load the rewritten graph: " + e.getMessage(), e);
        }
    }

    @Override
    public int layers() {
        return layers;
    }

    @Override
    public int kvHeads() {
        return mc.kvHeads();
    }

    @Override
    public int headDim() {
        return mc.headDim();
    }

    @Override
    public int maxContext() {
        return mc.maxPositions();
    }

    @Override
    public int eosTokenId() {
        return mc.eosTokenId();
    }

    @Override
    public Path file() {
        return file;
    }

    @Override
    public String describe() {
        return layers + " layers, " + kvHeads() + " KV heads x " + headDim() + ", fp32, graph (in-graph dequantization of "
                + config + (cuda ? ", CUDA" : ", CPU") + ")" + (maxContext() > 0 ? ", context " + maxContext() : "");
    }

    @Override
    public Decoder newDecoder(KvCache cache, int prefillChunk) {
        if (!(cache instanceof LayeredKvCache lc) || !lc.config().equals(config)) {
            throw new IllegalArgumentException("the graph was prepared for --kv " + config + "; the cache is "
                    + (cache instanceof LayeredKvCache lc2 ? lc2.config() : cache.getClass().getSimpleName()));
        }
        return new GraphDecoder(this, lc, prefillChunk);
    }

    @Override
    public void close() {
        try {
            session.close();
        } catch (OrtException e) {
            // closing: nothing to recover
        }
    }
}
