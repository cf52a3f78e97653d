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
 * The engine: a decoder cut at its attention boundaries ({@link AttentionSplit}); ONNX Runtime
 * runs the dense pieces, kvquant attends on the compressed cache between them. The cut is made
 * on first use (or ahead of time by {@code kvq prepare}) into the prepared-model cache
 * ({@link PreparedModels}: {@code <cache>/prepared/<sha256 of model.onnx>/}, never the model
 * directory): {@code piece-<s>.onnx} per stage and {@code manifest.json} (the source model's
 * sha256, each layer's query/new-key/new-value/output tensor names and score scale, each
 * piece's size, inputs and outputs). A changed model has another sha256, so it is cut again.
 */
public final class JavaAttentionModel implements ModelRunner {

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
    private final Path preparedDir;

    private JavaAttentionModel(Path file, ModelConfig config, List<LayerInfo> layers, List<PieceInfo> pieces,
                               DecoderModel.Options opts, Path preparedDir) {
        this.file = file;
        this.preparedDir = preparedDir;
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
        return layers.size() + " layers, " + kvHeads() + " KV heads x " + headDim() + ", fp32, engine ("
                + pieces.size() + " pieces)" + (maxContext() > 0 ? ", context " + maxContext() : "");
    }

    @Override
    public Decoder newDecoder(io.kvquant.cache.KvCache cache, int prefillChunk) {
        return new JavaAttentionDecoder(this, cache, attention, prefillChunk);
    }

    /**
     * Prepares {@code modelDir/model.onnx} for the engine ahead of time (what {@code kvq prepare}
     * does): the cut is written to the prepared-model cache ({@link PreparedModels}), not into
     * the model directory. Returns the folder, made now or found ready.
     */
    public static Path prepare(Path modelDir) throws IOException {
        return prepare(modelDir, System.err::println).dir();
    }

    /** Like {@link #prepare(Path)}, progress lines to {@code progress}; says whether it was made now. */
    public static PreparedModels.Prepared prepare(Path modelDir, java.util.function.Consumer<String> progress)
            throws IOException {
        return prepare(modelDir, PreparedModels.root(), progress);
    }

    static PreparedModels.Prepared prepare(Path modelDir, Path cacheRoot, java.util.function.Consumer<String> progress)
            throws IOException {
        Path file = modelDir.resolve("model.onnx");
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("no model.onnx in " + modelDir);
        }
        return PreparedModels.get(cacheRoot, file, dir -> readManifest(dir, dir.getFileName().toString()) != null,
                (into, sha, started) -> write(file, into, sha, started), progress);
    }

    /** Cuts {@code file} and writes the pieces and the manifest into {@code out}. */
    private static void write(Path file, Path out, String sha, Runnable started) throws IOException {
        OnnxModel model = OnnxModel.read(file);
        started.run();
        AttentionSplit split = AttentionSplit.of(model);
        StringBuilder m = new StringBuilder();
        m.append("{\n  \"format\": ").append(FORMAT).append(",\n  \"source\": ")
                .append(Json.quote(file.toAbsolutePath().normalize().toString())).append(",\n  \"source_sha256\": \"")
                .append(sha).append("\",\n  \"layers\": [\n");
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
            Files.write(out.resolve("piece-" + s + ".onnx"), p.model());
            m.append("    {\"file\": \"piece-").append(s).append(".onnx\", \"bytes\": ").append(p.model().length)
                    .append(", \"inputs\": ").append(list(p.inputs())).append(", \"outputs\": ").append(list(p.outputs()))
                    .append('}').append(s + 1 < split.pieces.size() ? ",\n" : "\n");
        }
        m.append("  ]\n}\n");
        // the manifest last: a folder with a manifest has all its pieces
        Files.writeString(out.resolve("manifest.json"), m.toString());
    }

    private static String list(List<String> names) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < names.size(); i++) {
            b.append(i > 0 ? ", " : "").append(Json.quote(names.get(i)));
        }
        return b.append(']').toString();
    }

    /** A preparation's manifest, or null when it is missing, of another format, or a piece is missing or truncated. */
    @SuppressWarnings("unchecked")
    private static Map<String, Object> readManifest(Path dir, String sha) {
        try {
            Path manifest = dir.resolve("manifest.json");
            if (!Files.isRegularFile(manifest)) {
                return null;
            }
            Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(manifest));
            if (!(m.get("format") instanceof Number fmt) || fmt.intValue() != FORMAT
                    || (sha != null && !sha.equals(m.get("source_sha256")))) {
                return null;
            }
            for (Object o : (List<Object>) m.get("pieces")) {
                Map<String, Object> p = (Map<String, Object>) o;
                Path f = dir.resolve((String) p.get("file"));
                if (!Files.isRegularFile(f) || Files.size(f) != ((Number) p.get("bytes")).longValue()) {
                    return null;
                }
            }
            return m;
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /**
     * Opens the engine for {@code modelDir}: the preparation is found in the prepared-model cache,
     * or made there now (a progress line on stderr); one-line errors for what is missing.
     */
    public static JavaAttentionModel open(Path modelDir, DecoderModel.Options opts) throws IOException {
        return open(modelDir, opts, System.err::println);
    }

    /** Like {@link #open(Path, DecoderModel.Options)}, progress lines to {@code progress}. */
    public static JavaAttentionModel open(Path modelDir, DecoderModel.Options opts,
                                          java.util.function.Consumer<String> progress) throws IOException {
        return open(modelDir, opts, PreparedModels.root(), progress);
    }

    @SuppressWarnings("unchecked")
    static JavaAttentionModel open(Path modelDir, DecoderModel.Options opts, Path cacheRoot,
                                   java.util.function.Consumer<String> progress) throws IOException {
        if (opts.ep() != DecoderModel.Ep.CPU) {
            try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
                // refuses in one line when this ONNX Runtime has no CUDA at all
            } catch (OrtException e) {
                throw new IllegalStateException("ONNX Runtime session options: " + e.getMessage(), e);
            }
            throw new IllegalArgumentException("the engine (--mode engine, the default) attends in Java on the CPU: use "
                    + "--ep cpu, or --mode graph / --mode roundtrip with --ep cuda");
        }
        PreparedModels.Prepared prep = prepare(modelDir, cacheRoot, progress);
        ModelConfig cfg = ModelConfig.read(modelDir.resolve("config.json"));
        if (cfg.kvHeads() <= 0 || cfg.headDim() <= 0) {
            throw new IllegalArgumentException(modelDir.resolve("config.json") + " must give the KV heads and head size "
                    + "(num_key_value_heads, head_dim or hidden_size/num_attention_heads) for the engine");
        }
        Path dir = prep.dir();
        Map<String, Object> m = readManifest(dir, prep.sha256());
        if (m == null) {
            throw new IllegalStateException("the engine preparation in " + dir + " cannot be read; remove it and try again");
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
        JavaAttentionModel jm = new JavaAttentionModel(modelDir.resolve("model.onnx"), cfg, layers, pieces, opts, dir);
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
            throw new IllegalStateException("ONNX Runtime cannot load an engine piece: " + e.getMessage(), e);
        }
        return jm;
    }

    /** The prepared folder this engine runs from. */
    public Path preparedDir() {
        return preparedDir;
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
