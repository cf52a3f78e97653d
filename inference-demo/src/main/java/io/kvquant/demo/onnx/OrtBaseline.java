package io.kvquant.demo.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.OrtQuantKv;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * A model opened for ONNX Runtime alone, the baselines kvquant is measured against:
 * {@code --kv ort} (the graph as exported, any attention form, present fed back as past) and
 * {@code --kv ort-int8} / {@code ort-int4} (ONNX Runtime's own quantized KV cache: the
 * GroupQueryAttention graph rewritten by {@link OrtQuantKv}).
 *
 * <p>Calibration of the quantized settings: ONNX Runtime needs static per-channel scales; they
 * are taken from one run of the unquantized graph over the calibration tokens given to
 * {@link #open} (the first prompt chunk: per layer, per KV head and channel, max |x| over those
 * tokens / 127 or / 7). That session is closed before the quantized graph is opened. The
 * rewritten graph (a few KB; weights referenced through a hard link, as the engine's
 * preparation does) lives in a temporary folder under the kvquant cache, removed on close.
 */
public final class OrtBaseline implements AutoCloseable {

    public final OrtQuantKv.Setting setting;
    public final Path file;
    public final PlainOrtDecoder.Graph graph;
    public final int maxContext;
    public final int eosTokenId;
    /** Tokens and seconds of the calibration run (0 for {@code ort}). */
    public final int calibrationTokens;
    public final double calibrationSeconds;
    /** Per-layer scales [layer][kvHeads·headDim] (null for {@code ort}). */
    public final float[][] keyScales;
    public final float[][] valueScales;
    private final OrtSession session;
    private final Path work;

    private OrtBaseline(OrtQuantKv.Setting setting, Path file, OrtSession session, PlainOrtDecoder.Graph graph, ModelConfig cfg,
                        int calibrationTokens, double calibrationSeconds, float[][] k, float[][] v, Path work) {
        this.setting = setting;
        this.file = file;
        this.session = session;
        this.graph = graph;
        this.maxContext = cfg.maxPositions();
        this.eosTokenId = cfg.eosTokenId();
        this.calibrationTokens = calibrationTokens;
        this.calibrationSeconds = calibrationSeconds;
        this.keyScales = k;
        this.valueScales = v;
        this.work = work;
    }

    /**
     * Opens {@code model.onnx} of a folder (or the file) for {@code setting}. {@code calibration}
     * (the quantized settings only; at least one token) are the tokens whose keys and values set
     * the scales.
     */
    public static OrtBaseline open(Path modelDirOrFile, DecoderModel.Options opts, OrtQuantKv.Setting setting,
                                   long[] calibration) throws IOException {
        Path file = Files.isDirectory(modelDirOrFile) ? modelDirOrFile.resolve("model.onnx") : modelDirOrFile;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("model file not found: " + file);
        }
        ModelConfig cfg = ModelConfig.read(file.toAbsolutePath().getParent().resolve("config.json"));
        if (setting.bits == 0) {
            OrtSession s = session(file, opts);
            try {
                return new OrtBaseline(setting, file, s, graphOf(s, cfg, file), cfg, 0, 0, null, null, null);
            } catch (RuntimeException e) {
                closeQuietly(s);
                throw e;
            }
        }
        OnnxModel m = OnnxModel.read(file);
        OrtQuantKv.attentionNodes(m, setting.cli); // refuse a plain graph before any work
        if (calibration == null || calibration.length == 0) {
            throw new IllegalArgumentException("--kv " + setting.cli + " calibrates its scales on the prompt: it is empty");
        }
        long t0 = System.nanoTime();
        float[][] k;
        float[][] v;
        PlainOrtDecoder.Graph plain;
        OrtSession cs = session(file, opts);
        try {
            plain = graphOf(cs, cfg, file);
            k = new float[plain.layers()][];
            v = new float[plain.layers()][];
            try (PlainOrtDecoder dec = new PlainOrtDecoder(plain, calibration.length)) {
                dec.prefill(calibration, null);
                for (int l = 0; l < plain.layers(); l++) {
                    k[l] = dec.presentFloats(l, "key");
                    v[l] = dec.presentFloats(l, "value");
                }
            }
        } finally {
            closeQuietly(cs);
        }
        float[][] ks = OrtQuantKv.scales(k, plain.kvHeads(), plain.headDim(), setting);
        float[][] vs = OrtQuantKv.scales(v, plain.kvHeads(), plain.headDim(), setting);
        double secs = (System.nanoTime() - t0) / 1e9;
        byte[] rewritten = OrtQuantKv.rewrite(m, setting, ks, vs, plain.kvHeads(), plain.headDim());
        Path root = PreparedModels.root().resolve("ort-quant");
        Path work;
        try {
            Files.createDirectories(root);
            work = Files.createTempDirectory(root, setting.cli + "-");
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot write the rewritten graph under " + root + " (" + e.getMessage()
                    + "); set " + PreparedModels.ENV + " to a writable folder");
        }
        try {
            Path target = work.resolve("model.onnx");
            OnnxModel.writeLinked(rewritten, target);
            OrtSession s = session(target, opts);
            try {
                return new OrtBaseline(setting, file, s, graphOf(s, cfg, file), cfg, calibration.length, secs, ks, vs, work);
            } catch (RuntimeException e) {
                closeQuietly(s);
                throw e;
            }
        } catch (IOException | RuntimeException e) {
            PreparedModels.deleteTree(work);
            throw e;
        }
    }

    private static OrtSession session(Path file, DecoderModel.Options opts) throws IOException {
        try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
            return DecoderModel.environment().createSession(file.toString(), so);
        } catch (OrtException e) {
            throw new IOException("ONNX Runtime cannot load " + file + ": " + DecoderModel.firstLine(e.getMessage()), e);
        }
    }

    /** The decoder-with-past layout (input_ids, attention_mask, position_ids, past_key_values.i.*), checked. */
    private static PlainOrtDecoder.Graph graphOf(OrtSession s, ModelConfig cfg, Path file) {
        String where = file.getFileName().toString();
        try {
            Map<String, NodeInfo> in = s.getInputInfo();
            if (!in.containsKey("input_ids") || !s.getOutputNames().contains("logits")) {
                throw new IllegalArgumentException(where + ": needs an input_ids input and a logits output (inputs: "
                        + in.keySet() + ")");
            }
            int n = 0;
            while (in.containsKey("past_key_values." + n + ".key")) {
                n++;
            }
            if (n == 0) {
                throw new IllegalArgumentException(where + ": no 'past_key_values.0.key' input: this export has no KV cache");
            }
            Set<String> known = new TreeSet<>(Set.of("input_ids", "attention_mask", "position_ids", "use_cache_branch"));
            for (int i = 0; i < n; i++) {
                known.add("past_key_values." + i + ".key");
                known.add("past_key_values." + i + ".value");
                if (!in.containsKey("past_key_values." + i + ".value") || !s.getOutputNames().contains("present." + i + ".key")
                        || !s.getOutputNames().contains("present." + i + ".value")) {
                    throw new IllegalArgumentException(where + ": layer " + i + " lacks past_key_values." + i
                            + ".value or present." + i + ".key/value");
                }
            }
            for (String name : in.keySet()) {
                if (!known.contains(name)) {
                    throw new IllegalArgumentException(where + ": unsupported input '" + name + "'");
                }
            }
            if (!(in.get("past_key_values.0.key").getInfo() instanceof TensorInfo pk) || pk.getShape().length != 4) {
                throw new IllegalArgumentException(where + ": past_key_values.0.key must be a [batch, kv_heads, past, "
                        + "head_dim] tensor");
            }
            long[] shape = pk.getShape();
            int h = shape[1] > 0 ? (int) shape[1] : cfg.kvHeads();
            int pastDim = (int) shape[3];
            int bytes = switch (pk.type) {
                case FLOAT -> 4;
                case FLOAT16, BFLOAT16 -> 2;
                case INT8, UINT8 -> 1;
                default -> throw new IllegalArgumentException(where + ": past_key_values are " + pk.type);
            };
            if (pastDim <= 0 && pk.type != OnnxJavaType.UINT8) {
                pastDim = cfg.headDim();
            }
            if (h <= 0 || pastDim <= 0) {
                throw new IllegalArgumentException(where + ": KV heads / head dim are symbolic in the graph and config.json "
                        + "does not give num_key_value_heads and head_dim");
            }
            int headDim = pk.type == OnnxJavaType.UINT8 ? 2 * pastDim : pastDim;
            return new PlainOrtDecoder.Graph(s, n, h, headDim, pastDim, pk.type, bytes, in.containsKey("attention_mask"),
                    in.containsKey("position_ids"), in.containsKey("use_cache_branch"));
        } catch (OrtException e) {
            throw new IllegalStateException(where + ": " + DecoderModel.firstLine(e.getMessage()), e);
        }
    }

    /** A decoder over this graph (present fed back as past). */
    public PlainOrtDecoder newDecoder(int prefillChunk) {
        return new PlainOrtDecoder(graph, prefillChunk);
    }

    /** One line for results: the setting, the past's element type, calibration. */
    public String describe() {
        return setting.cli + " (" + graph.layers() + " layers x " + graph.kvHeads() + " KV heads x " + graph.headDim()
                + ", past " + graph.pastType() + (setting.bits == 4 ? " two values a byte" : "")
                + (setting.bits > 0 ? ", per-channel scales from " + calibrationTokens + " calibration tokens" : "") + ")";
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (OrtException e) {
            // closing; nothing to do
        }
    }

    @Override
    public void close() {
        closeQuietly(session);
        if (work != null) {
            try {
                PreparedModels.deleteTree(work);
            } catch (IOException e) {
                System.err.println("kvquant: could not remove " + work + ": " + e.getMessage());
            }
        }
    }
}
