package io.kvquant.demo.onnx;

import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.AttentionSplit;
import io.kvquant.demo.graph.OnnxModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A decoder cut at its attention boundaries ({@link AttentionSplit}), prepared once by
 * {@code kvq prepare} into {@code <model dir>/java-attention/}: {@code piece-<s>.onnx} per stage
 * and {@code manifest.json} (the source model's sha256, each layer's query/new-key/new-value/
 * output tensor names and score scale, each piece's inputs and outputs). Opening checks the
 * manifest against the model file, so a stale preparation is refused.
 */
public final class JavaAttentionModel implements ModelRunner {

    public static final String DIR = "java-attention";
    static final int FORMAT = 1;

    public record LayerInfo(String query, String newKey, String newValue, String output, double scale) {
    }

    public record PieceInfo(List<String> inputs, List<String> outputs) {
    }

    final List<LayerInfo> layers;
    final List<PieceInfo> pieces;
    final List<OrtSession> sessions = new ArrayList<>();
    private final Path file;
    private final ModelConfig config;
    private final io.kvquant.attention.DecodeAttention attention;

    private JavaAttentionModel(Path file, ModelConfig config, List<LayerInfo> layers, List<PieceInfo> pieces,
                               DecoderModel.Options opts) {
        this.file = file;
        this.config = config;
        this.layers = layers;
        this.pieces = pieces;
        this.attention = new io.kvquant.attention.DecodeAttention(opts.threads() > 0 ? opts.threads()
                : Runtime.getRuntime().availableProcessors());
    }

    @Override
    public int layers() {
        return layers.size();
    }

    @Override
    public int kvHeads() {
        return config.kvHeads();
    }

    @Override
    public int headDim() {
        return config.headDim();
    }

    @Override
    public int maxContext() {
        return config.maxPositions();
    }

    @Override
    public int eosTokenId() {
        return config.eosTokenId();
    }

    @Override
    public Path file() {
        return file;
    }

    @Override
    public String describe() {
        return layers.size() + " layers, " + kvHeads() + " KV heads x " + headDim() + ", fp32, java-attention ("
                + pieces.size() + " pieces)" + (maxContext() > 0 ? ", context " + maxContext() : "");
    }

    @Override
    public Decoder newDecoder(io.kvquant.cache.KvCache cache, int prefillChunk) {
        return new JavaAttentionDecoder(this, cache, attention, prefillChunk);
    }

    /** Cuts {@code modelDir/model.onnx} and writes the pieces and manifest; returns the folder written. */
    public static Path prepare(Path modelDir) throws IOException {
        Path file = modelDir.resolve("model.onnx");
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("no model.onnx in " + modelDir);
        }
        Path conf = modelDir.resolve("config.json");
        int context = Files.isRegularFile(conf) ? ModelConfig.read(conf).maxPositions() : 0;
        AttentionSplit split = AttentionSplit.of(OnnxModel.read(file), context);
        Path out = modelDir.resolve(DIR);
        Path tmp = Files.createTempDirectory(modelDir, ".java-attention");
        try {
            StringBuilder m = new StringBuilder();
            m.append("{\n  \"format\": ").append(FORMAT).append(",\n  \"source\": \"model.onnx\",\n  \"source_sha256\": \"")
                    .append(io.kvquant.demo.cli.ModelPaths.sha256(file)).append("\",\n  \"layers\": [\n");
            for (int i = 0; i < split.layers.size(); i++) {
                AttentionSplit.Layer l = split.layers.get(i);
                m.append("    {\"query\": ").append(Json.quote(l.query())).append(", \"new_key\": ").append(Json.quote(l.newKey()))
                        .append(", \"new_value\": ").append(Json.quote(l.newValue())).append(", \"output\": ")
                        .append(Json.quote(l.output())).append(", \"scale\": ").append(l.scale()).append('}')
                        .append(i + 1 < split.layers.size() ? ",\n" : "\n");
            }
            m.append("  ],\n  \"pieces\": [\n");
            for (int s = 0; s < split.pieces.size(); s++) {
                AttentionSplit.Piece p = split.pieces.get(s);
                OnnxModel.writeLinked(p.model(), tmp.resolve("piece-" + s + ".onnx"));
                m.append("    {\"file\": \"piece-").append(s).append(".onnx\", \"inputs\": ").append(list(p.inputs()))
                        .append(", \"outputs\": ").append(list(p.outputs())).append('}')
                        .append(s + 1 < split.pieces.size() ? ",\n" : "\n");
            }
            m.append("  ]\n}\n");
            Files.writeString(tmp.resolve("manifest.json"), m.toString());
            if (Files.exists(out)) {
                try (var old = Files.list(out)) {
                    for (Path p : old.toList()) {
                        Files.delete(p);
                    }
                }
                Files.delete(out);
            }
            Files.move(tmp, out);
            return out;
        } finally {
            if (Files.exists(tmp)) {
                try (var left = Files.list(tmp)) {
                    for (Path p : left.toList()) {
                        Files.delete(p);
                    }
                }
                Files.delete(tmp);
            }
        }
    }

    private static String list(List<String> names) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < names.size(); i++) {
            b.append(i > 0 ? ", " : "").append(Json.quote(names.get(i)));
        }
        return b.append(']').toString();
    }

    /** Opens a preparation made by {@link #prepare}; one-line errors when it is missing or stale. */
    @SuppressWarnings("unchecked")
    public static JavaAttentionModel open(Path modelDir, DecoderModel.Options opts) throws IOException {
        Path dir = modelDir.resolve(DIR);
        Path manifest = dir.resolve("manifest.json");
        if (!Files.isRegularFile(manifest)) {
            throw new IllegalArgumentException("--mode java-attention needs the model cut at its attention first: run "
                    + "./kvq prepare --model " + modelDir);
        }
        Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(manifest));
        if (((Number) m.get("format")).intValue() != FORMAT) {
            throw new IllegalArgumentException(manifest + " has another format; run ./kvq prepare --model " + modelDir + " again");
        }
        String want = (String) m.get("source_sha256");
        if (!io.kvquant.demo.cli.ModelPaths.sha256(modelDir.resolve("model.onnx")).equals(want)) {
            throw new IllegalArgumentException("the java-attention preparation in " + dir + " was made from another model.onnx; "
                    + "run ./kvq prepare --model " + modelDir + " again");
        }
        List<LayerInfo> layers = new ArrayList<>();
        for (Object o : (List<Object>) m.get("layers")) {
            Map<String, Object> l = (Map<String, Object>) o;
            layers.add(new LayerInfo((String) l.get("query"), (String) l.get("new_key"), (String) l.get("new_value"),
                    (String) l.get("output"), ((Number) l.get("scale")).doubleValue()));
        }
        List<PieceInfo> pieces = new ArrayList<>();
        List<Path> files = new ArrayList<>();
        for (Object o : (List<Object>) m.get("pieces")) {
            Map<String, Object> p = (Map<String, Object>) o;
            pieces.add(new PieceInfo((List<String>) (List<?>) p.get("inputs"), (List<String>) (List<?>) p.get("outputs")));
            files.add(dir.resolve((String) p.get("file")));
        }
        if (opts.ep() != DecoderModel.Ep.CPU) {
            throw new IllegalArgumentException("--mode java-attention runs attention in Java; use --ep cpu");
        }
        ModelConfig cfg = ModelConfig.read(modelDir.resolve("config.json"));
        if (cfg.kvHeads() <= 0 || cfg.headDim() <= 0) {
            throw new IllegalArgumentException(modelDir.resolve("config.json") + " must give the KV heads and head size "
                    + "(num_key_value_heads, head_dim or hidden_size/num_attention_heads) for --mode java-attention");
        }
        JavaAttentionModel jm = new JavaAttentionModel(modelDir.resolve("model.onnx"), cfg, layers, pieces, opts);
        try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
            // The pieces run one after another with Java attention in between: ONNX Runtime's
            // worker threads must not spin-wait for work, or they take the cores the running
            // piece and the attention threads need.
            so.addConfigEntry("session.intra_op.allow_spinning", "0");
            for (Path f : files) {
                jm.sessions.add(DecoderModel.environment().createSession(f.toString(), so));
            }
        } catch (OrtException e) {
            jm.close();
            throw new IllegalStateException("ONNX Runtime cannot load a java-attention piece: " + e.getMessage(), e);
        }
        return jm;
    }

    @Override
    public void close() {
        for (OrtSession s : sessions) {
            try {
                s.close();
            } catch (OrtException e) {
                // closing: nothing to recover
            }
        }
        sessions.clear();
        attention.close();
    }

}
