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

    /**
     * One layer's attention boundary. {@code rotary} is null for the plain form ([1, heads, tokens,
     * head_dim] tensors, rotary already applied by the graph); for a fused GroupQueryAttention layer
     * it describes what kvquant does in the operator's place ([1, tokens, heads x head_dim] tensors,
     * queries|keys|values packed in one when {@code packed}). {@code mods}: what the layer does to
     * its scores besides scale and the causal mask (sliding window, softcap, ALiBi, sinks).
     */
    public record LayerInfo(String query, String newKey, String newValue, String output, double scale, Fused rotary,
                            io.kvquant.attention.ScoreMods mods) {
        public LayerInfo(String query, String newKey, String newValue, String output, double scale) {
            this(query, newKey, newValue, output, scale, null);
        }

        public LayerInfo(String query, String newKey, String newValue, String output, double scale, Fused rotary) {
            this(query, newKey, newValue, output, scale, rotary, io.kvquant.attention.ScoreMods.NONE);
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
    /** The one-token forms of the pieces, run for decode steps; null: the general sessions run every step. */
    DecodeSessions decode;
    /** The pieces' weights, held once for the general and the one-token sessions; null: ONNX Runtime reads them. */
    SharedWeights weights;
    /** The decode step in Java on the shared weights ({@code kvq.engine.decodePieces=java}); null: ONNX Runtime runs it. */
    JavaPieces javaStep;
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
                (into, sha, started) -> write(modelDir, file, into, sha, started), progress);
    }

    /**
     * Cuts {@code file} and writes into {@code out}: the pieces (weights referenced where they lie,
     * through links, never copied), rotary tables of fused layers, and the manifest, last: a folder
     * with a manifest has all its pieces.
     */
    private static void write(Path modelDir, Path file, Path out, String sha, Runnable started) throws IOException {
        OnnxModel model = OnnxModel.read(file);
        started.run();
        Path conf = modelDir.resolve("config.json");
        int context = Files.isRegularFile(conf) ? ModelConfig.read(conf).maxPositions() : 0;
        AttentionSplit split = AttentionSplit.of(model, context);
        StringBuilder m = new StringBuilder();
        m.append("{\n  \"format\": ").append(FORMAT).append(",\n  \"source\": ")
                .append(Json.quote(file.toAbsolutePath().normalize().toString())).append(",\n  \"source_sha256\": \"")
                .append(sha).append("\",\n  \"layers\": [\n");
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
                        writeRotary(out.resolve("rotary-" + k / 2 + ".bin"), f);
                    }
                    m.append(", \"rotary\": \"rotary-").append(k / 2).append(".bin\"");
                }
            }
            m.append(modsJson(split.mods(l.index())));
            m.append('}').append(i + 1 < split.layers.size() ? ",\n" : "\n");
        }
        m.append("  ],\n  \"pieces\": [\n");
        for (int s = 0; s < split.pieces.size(); s++) {
            AttentionSplit.Piece p = split.pieces.get(s);
            Path piece = out.resolve("piece-" + s + ".onnx");
            data.putAll(OnnxModel.writeLinked(p.model(), piece));
            m.append("    {\"file\": \"piece-").append(s).append(".onnx\", \"bytes\": ").append(Files.size(piece))
                    .append(", \"inputs\": ").append(list(p.inputs())).append(", \"outputs\": ").append(list(p.outputs()))
                    .append('}').append(s + 1 < split.pieces.size() ? ",\n" : "\n");
        }
        m.append("  ],\n  \"data\": [");
        int k = 0;
        for (Map.Entry<Path, Path> e : data.entrySet()) {
            // weights referenced where they lie: the link, its source, and the source's size and
            // time, so that a data file replaced after preparation makes the preparation stale
            m.append(k++ > 0 ? ",\n" : "\n").append("    {\"link\": ").append(Json.quote(e.getKey().getFileName().toString()))
                    .append(", \"source\": ").append(Json.quote(e.getValue().toString())).append(", \"bytes\": ")
                    .append(Files.size(e.getValue())).append(", \"modified_ms\": ")
                    .append(Files.getLastModifiedTime(e.getValue()).toMillis()).append('}');
        }
        m.append(k > 0 ? "\n  ]\n}\n" : "]\n}\n");
        Files.writeString(out.resolve("manifest.json"), m.toString());
    }

    /** A layer's score modifiers as manifest fields (none for plain causal attention). */
    private static String modsJson(io.kvquant.attention.ScoreMods mods) {
        StringBuilder b = new StringBuilder();
        if (mods.window() > 0) {
            b.append(", \"window\": ").append(mods.window());
        }
        if (mods.softcap() > 0) {
            b.append(", \"softcap\": ").append(mods.softcap());
        }
        for (String key : new String[] {"alibi", "sinks"}) {
            float[] v = key.equals("alibi") ? mods.slopes() : mods.sinks();
            if (v != null) {
                b.append(", \"").append(key).append("\": [");
                for (int k = 0; k < v.length; k++) {
                    b.append(k > 0 ? ", " : "").append(v[k]);
                }
                b.append(']');
            }
        }
        return b.toString();
    }

    @SuppressWarnings("unchecked")
    private static io.kvquant.attention.ScoreMods readMods(Map<String, Object> l) {
        float[][] lists = new float[2][];
        String[] keys = {"alibi", "sinks"};
        for (int k = 0; k < 2; k++) {
            if (l.get(keys[k]) instanceof List<?> v) {
                lists[k] = new float[v.size()];
                for (int j = 0; j < v.size(); j++) {
                    lists[k][j] = ((Number) v.get(j)).floatValue();
                }
            }
        }
        int window = l.get("window") instanceof Number w ? w.intValue() : 0;
        float softcap = l.get("softcap") instanceof Number c ? c.floatValue() : 0f;
        return io.kvquant.attention.ScoreMods.of(window, softcap, lists[0], lists[1]);
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
            for (Object o : (List<Object>) m.getOrDefault("data", List.of())) {
                // weights linked from where they lie: a source replaced or gone since makes the preparation stale
                Map<String, Object> d = (Map<String, Object>) o;
                Path link = dir.resolve((String) d.get("link"));
                Path source = Path.of((String) d.get("source"));
                boolean fresh = Files.exists(link) && Files.exists(source)
                        && Files.size(source) == ((Number) d.get("bytes")).longValue()
                        && Files.getLastModifiedTime(source).toMillis() == ((Number) d.get("modified_ms")).longValue()
                        && (Files.isSameFile(link, source) || Files.size(link) == Files.size(source));
                if (!fresh) {
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
            Fused fused = null;
            if ("GroupQueryAttention".equals(l.get("form"))) {
                int rd = ((Number) l.get("rotary_dim")).intValue();
                float[][] t = l.get("rotary") == null ? new float[2][] : readRotary(dir.resolve((String) l.get("rotary")), rd);
                fused = new Fused(((Number) l.get("q_heads")).intValue(), ((Number) l.get("kv_heads")).intValue(),
                        (Boolean) l.get("packed"), (Boolean) l.get("rotary_interleaved"), rd,
                        t[0] == null ? 0 : t[0].length / (rd / 2), t[0], t[1]);
            }
            layers.add(new LayerInfo((String) l.get("query"), (String) l.get("new_key"), (String) l.get("new_value"),
                    (String) l.get("output"), ((Number) l.get("scale")).doubleValue(), fused, readMods(l)));
        }
        List<PieceInfo> pieces = new ArrayList<>();
        List<Path> files = new ArrayList<>();
        for (Object o : (List<Object>) m.get("pieces")) {
            Map<String, Object> p = (Map<String, Object>) o;
            pieces.add(new PieceInfo((List<String>) (List<?>) p.get("inputs"), (List<String>) (List<?>) p.get("outputs")));
            files.add(dir.resolve((String) p.get("file")));
        }
        JavaAttentionModel jm = new JavaAttentionModel(modelDir.resolve("model.onnx"), cfg, layers, pieces, opts, dir);
        String mode = DecodeSessions.mode();
        if (mode.equals("java") && !opts.javaDecodeStep() && System.getProperty("kvq.engine.decodePieces") == null) {
            mode = "off"; // asked for ONNX Runtime's pieces (kvq generate --warmup off: the Java step would run uncompiled)
        }
        List<OnnxModel> pieceModels = null;
        if (mode.equals("shared") || mode.equals("java")) {
            // the one-token pieces' sessions and the general ones get the same weight tensors
            // (SharedWeights); on any failure: one line, the general pieces alone, as before
            try {
                List<OnnxModel> models = new ArrayList<>();
                for (Path f : files) {
                    models.add(OnnxModel.read(f));
                }
                if (mode.equals("java") && JavaPieces.weightBytes(models) > JavaPieces.maxWeightBytes()) {
                    // weights streamed from memory every step: ONNX Runtime's prepacked products are
                    // faster there (docs/engine.md, "Where the Java step pays"); no line, a choice
                    openOrFail(jm, files, opts);
                    return jm;
                }
                jm.weights = SharedWeights.load(models);
                jm.openSessions(files, opts);
                pieceModels = models;
            } catch (OrtException | IOException | RuntimeException e) {
                jm.closeSessions();
                String why = "the weights cannot be shared: " + DecoderModel.firstLine(e.getMessage());
                System.err.println(mode.equals("java") ? JavaPieces.cannot(why) : DecodeSessions.cannot(why));
                mode = "off";
            }
        }
        if (jm.sessions.isEmpty()) {
            openOrFail(jm, files, opts);
        }
        if (mode.equals("java")) {
            jm.javaStep = JavaPieces.build(jm, pieceModels, jm.weights,
                    opts.threads() > 0 ? opts.threads() : Runtime.getRuntime().availableProcessors(), System.err::println);
            if (jm.javaStep != null && jm.javaStep.runner() != null) {
                jm.attention.workers(jm.javaStep.runner()); // a decode step's attention tasks on the same helper
            }
        } else if (!mode.equals("off")) {
            jm.decode = DecodeSessions.build(jm, files, dir, opts, System.err::println);
        }
        if (jm.decode == null && jm.javaStep == null && jm.weights != null) {
            // no one-token pieces after all: the general pieces as ONNX Runtime loads them (prepacked)
            jm.closeSessions();
            openOrFail(jm, files, opts);
        }
        return jm;
    }

    /** {@link #openSessions}, closing {@code jm} and saying so in one line when ONNX Runtime cannot load a piece. */
    private static void openOrFail(JavaAttentionModel jm, List<Path> files, DecoderModel.Options opts) {
        try {
            jm.openSessions(files, opts);
        } catch (OrtException e) {
            jm.close();
            throw new IllegalStateException("ONNX Runtime cannot load an engine piece: " + e.getMessage(), e);
        }
    }

    /** The general sessions, one per piece, with the shared weights when there are. */
    private void openSessions(List<Path> files, DecoderModel.Options opts) throws OrtException {
        for (int s = 0; s < files.size(); s++) {
            try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
                engineSessionOptions(so);
                if (weights != null) {
                    weights.apply(so, s);
                }
                sessions.add(DecoderModel.environment().createSession(files.get(s).toString(), so));
            }
        }
    }

    /** Closes the general sessions and the shared weights (sessions first: they use the weights). */
    private void closeSessions() {
        DecodeSessions.closeAll(sessions);
        if (weights != null) {
            weights.close();
            weights = null;
        }
    }

    /**
     * The engine's session options on top of {@link DecoderModel#sessionOptions}. The pieces run one
     * after another with Java attention in between: ONNX Runtime's worker threads must not
     * spin-wait for work, or they take the cores the running piece and the attention threads need.
     * Diagnostics (docs/engine.md, "Per-token overhead"), as system properties:
     * {@code kvq.engine.spin=1} lets them spin, {@code kvq.engine.ortThreads=N} gives the pieces N
     * intra-op threads instead of {@code --threads}, {@code kvq.engine.arena=off} and
     * {@code kvq.engine.memPattern=off} turn off ONNX Runtime's CPU arena and memory-pattern planning, {@code kvq.engine.ortProfile=PREFIX} writes ONNX Runtime's per-node profile of
     * every piece to PREFIX_*.json. The decode sessions ({@link DecodeSessions}) get these too.
     */
    static void engineSessionOptions(OrtSession.SessionOptions so) throws OrtException {
        so.addConfigEntry("session.intra_op.allow_spinning", "1".equals(System.getProperty("kvq.engine.spin")) ? "1" : "0");
        Integer ot = Integer.getInteger("kvq.engine.ortThreads");
        if (ot != null && ot > 0) {
            so.setIntraOpNumThreads(ot);
        }
        if ("off".equals(System.getProperty("kvq.engine.arena"))) {
            // measured: no lower peak RSS at 8K (docs/engine.md), so ONNX Runtime's default stays
            so.setCPUArenaAllocator(false);
        }
        if ("off".equals(System.getProperty("kvq.engine.memPattern"))) {
            so.setMemoryPatternOptimization(false);
        }
        String prof = System.getProperty("kvq.engine.ortProfile");
        if (prof != null && !prof.isBlank()) {
            so.enableProfiling(prof);
        }
    }

    /**
     * Compiles the Java decode step ({@link JavaPieces}) before a run that measures speed: real
     * decode steps through the engine's own decoder, on scratch caches of setting {@code cfg}
     * (a 16-token prompt, then {@value #WARM_ROUND} steps per round), so the very code paths of a
     * run are compiled (the step's attention callback, the helper thread's share of the attention,
     * the interpreter's kernels). Rounds go on until two in a row pass without the JIT finishing a
     * compilation (at least {@value #WARM_MIN_ROUNDS} rounds, at most {@value #WARM_BUDGET_S} s).
     * Returns the seconds it took; 0 when decode steps run through ONNX Runtime. Part of
     * {@code kvq generate --warmup full}; a service can call it once after opening the engine.
     */
    public double warmDecodeStep(io.kvquant.cache.KvQuantConfig cfg) {
        if (javaStep == null) {
            return 0;
        }
        long t0 = System.nanoTime();
        java.lang.management.CompilationMXBean jit = java.lang.management.ManagementFactory.getCompilationMXBean();
        boolean timed = jit != null && jit.isCompilationTimeMonitoringSupported();
        long before = timed ? jit.getTotalCompilationTime() : 0;
        int quiet = 0;
        long[] prompt = new long[16];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = i % 2;
        }
        for (int round = 0; round < 100 && System.nanoTime() - t0 < WARM_BUDGET_S * 1_000_000_000L; round++) {
            try (io.kvquant.cache.KvCache c = io.kvquant.cache.KvCaches.create(cfg, layers.size(), config.kvHeads(),
                    config.headDim())) {
                Decoder d = newDecoder(c, prompt.length);
                d.prefill(prompt, null);
                for (int i = 0; i < WARM_ROUND; i++) {
                    d.step(i % 2);
                }
            }
            long now = timed ? jit.getTotalCompilationTime() : 0;
            quiet = now == before ? quiet + 1 : 0;
            before = now;
            if (round + 1 >= WARM_MIN_ROUNDS && (!timed || quiet >= 2)) {
                break;
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    static final int WARM_ROUND = 32;
    static final int WARM_MIN_ROUNDS = 8;
    static final int WARM_BUDGET_S = 4;

    /** Whether decode steps run the Java decode step (else ONNX Runtime's pieces). */
    public boolean javaDecodeStep() {
        return javaStep != null;
    }

    /** The prepared folder this engine runs from. */
    public Path preparedDir() {
        return preparedDir;
    }

    @Override
    public void close() {
        if (decode != null) {
            decode.close();
            decode = null;
        }
        if (javaStep != null) {
            javaStep.close();
            javaStep = null;
        }
        closeSessions();
        attention.close();
    }

}
