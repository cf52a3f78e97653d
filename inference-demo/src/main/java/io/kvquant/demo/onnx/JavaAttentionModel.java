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

    /**
     * One layer's attention boundary. {@code rotary} is null for the plain form ([1, heads, tokens,
     * head_dim] tensors, rotary already applied by the graph); for a fused GroupQueryAttention layer
     * it describes what kvquant does in the operator's place ([1, tokens, heads x head_dim] tensors,
     * queries|keys|values packed in one when {@code packed}).
     */
    public record LayerInfo(String query, String newKey, String newValue, String output, double scale, Fused rotary) {
        public LayerInfo(String query, String newKey, String newValue, String output, double scale) {
            this(query, newKey, newValue, output, scale, null);
        }
    }

    /** The GroupQueryAttention form: heads, packing, rotary tables ([positions][rotaryDim / 2], cos then sin). */
    public record Fused(int qHeads, int kvHeads, boolean packed, boolean interleaved, int rotaryDim, int positions,
                        float[] cos, float[] sin) {
    }

    static final int ROTARY_MAGIC = 0x4b565152; // "KVQR"
    static final int ROTARY_VERSION = 1;

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
            List<float[]> tables = new ArrayList<>();
            Map<Path, Path> data = new java.util.LinkedHashMap<>();
            for (int i = 0; i < split.layers.size(); i++) {
                AttentionSplit.Layer l = split.layers.get(i);
                m.append("    {\"query\": ").append(Json.quote(l.query())).append(", \"new_key\": ").append(Json.quote(l.newKey()))
                        .append(", \"new_value\": ").append(Json.quote(l.newValue())).append(", \"output\": ")
                        .append(Json.quote(l.output())).append(", \"scale\": ").append(l.scale());
                AttentionSplit.Fused f = l.fused();
                if (f != null) {
                    m.append(", \"form\": \"GroupQueryAttention\", \"q_heads\": ").append(f.qHeads())
                            .append(", \"kv_heads\": ").append(f.kvHeads()).append(", \"packed\": ").append(f.packed())
                            .append(", \"rotary_interleaved\": ").append(f.interleaved())
                            .append(", \"rotary_dim\": ").append(f.rotaryDim());
                    if (f.cos() != null) {
                        int k = 0;
                        while (k < tables.size() && !(java.util.Arrays.equals(tables.get(k), f.cos())
                                && java.util.Arrays.equals(tables.get(k + 1), f.sin()))) {
                            k += 2;
                        }
                        if (k == tables.size()) {
                            tables.add(f.cos());
                            tables.add(f.sin());
                            writeRotary(tmp.resolve("rotary-" + k / 2 + ".bin"), f);
                        }
                        m.append(", \"rotary\": \"rotary-").append(k / 2).append(".bin\"");
                    }
                }
                m.append('}').append(i + 1 < split.layers.size() ? ",\n" : "\n");
            }
            m.append("  ],\n  \"pieces\": [\n");
            for (int s = 0; s < split.pieces.size(); s++) {
                AttentionSplit.Piece p = split.pieces.get(s);
                data.putAll(OnnxModel.writeLinked(p.model(), tmp.resolve("piece-" + s + ".onnx")));
                m.append("    {\"file\": \"piece-").append(s).append(".onnx\", \"inputs\": ").append(list(p.inputs()))
                        .append(", \"outputs\": ").append(list(p.outputs())).append('}')
                        .append(s + 1 < split.pieces.size() ? ",\n" : "\n");
            }
            m.append("  ],\n  \"data\": [");
            int k = 0;
            for (Map.Entry<Path, Path> e : data.entrySet()) {
                // weights referenced where they lie: the link, its source, and the source's size and
                // time, so that a data file replaced after preparation is caught at open
                m.append(k++ > 0 ? ",\n" : "\n").append("    {\"link\": ").append(Json.quote(e.getKey().getFileName().toString()))
                        .append(", \"source\": ").append(Json.quote(e.getValue().toString())).append(", \"bytes\": ")
                        .append(Files.size(e.getValue())).append(", \"modified_ms\": ")
                        .append(Files.getLastModifiedTime(e.getValue()).toMillis()).append('}');
            }
            m.append(k > 0 ? "\n  ]\n}\n" : "]\n}\n");
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

    /** Rotary tables: magic, version, positions, half width, then cos and sin row-major, little-endian fp32. */
    private static void writeRotary(Path file, AttentionSplit.Fused f) throws IOException {
        int half = f.rotaryDim() / 2;
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(16 + 8 * f.cos().length).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putInt(ROTARY_MAGIC).putInt(ROTARY_VERSION).putInt(f.cos().length / half).putInt(half);
        for (float x : f.cos()) {
            b.putFloat(x);
        }
        for (float x : f.sin()) {
            b.putFloat(x);
        }
        Files.write(file, b.array());
    }

    private static float[][] readRotary(Path file, int rotaryDim) throws IOException {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(Files.readAllBytes(file)).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        if (b.getInt() != ROTARY_MAGIC || b.getInt() != ROTARY_VERSION) {
            throw new IllegalArgumentException(file + " is not a rotary table of this kvquant version; run ./kvq prepare again");
        }
        int rows = b.getInt();
        int half = b.getInt();
        if (half * 2 != rotaryDim || b.remaining() != 8L * rows * half) {
            throw new IllegalArgumentException(file + " does not hold " + rows + " x " + half + " cos/sin tables");
        }
        float[][] r = new float[2][rows * half];
        b.asFloatBuffer().get(r[0]);
        b.position(b.position() + 4 * rows * half);
        b.asFloatBuffer().get(r[1]);
        return r;
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
        for (Object o : (List<Object>) m.getOrDefault("data", List.of())) {
            Map<String, Object> d = (Map<String, Object>) o;
            Path link = dir.resolve((String) d.get("link"));
            Path source = Path.of((String) d.get("source"));
            boolean fresh = Files.exists(link) && Files.exists(source)
                    && Files.size(source) == ((Number) d.get("bytes")).longValue()
                    && Files.getLastModifiedTime(source).toMillis() == ((Number) d.get("modified_ms")).longValue()
                    && (Files.isSameFile(link, source) || Files.size(link) == Files.size(source));
            if (!fresh) {
                throw new IllegalArgumentException("the java-attention preparation in " + dir + " references " + source
                        + ", which changed or is gone since; run ./kvq prepare --model " + modelDir + " again");
            }
        }
        List<LayerInfo> layers = new ArrayList<>();
        for (Object o : (List<Object>) m.get("layers")) {
            Map<String, Object> l = (Map<String, Object>) o;
            Fused fused = null;
            if ("GroupQueryAttention".equals(l.get("form"))) {
                int rd = ((Number) l.get("rotary_dim")).intValue();
                float[][] t = l.get("rotary") == null ? new float[2][] : readRotary(dir.resolve((String) l.get("rotary")), rd);
                fused = new Fused(((Number) l.get("q_heads")).intValue(), ((Number) l.get("kv_heads")).intValue(),
                        (Boolean) l.get("packed"), (Boolean) l.get("rotary_interleaved"), rd,
                        t[0] == null ? 0 : t[0].length / (rd / 2), t[0], t[1]);
            }
            layers.add(new LayerInfo((String) l.get("query"), (String) l.get("new_key"), (String) l.get("new_value"),
                    (String) l.get("output"), ((Number) l.get("scale")).doubleValue(), fused));
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
