package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.DecodePieces;
import io.kvquant.demo.graph.OnnxModel;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The engine's decode sessions: one per piece, its one-token form ({@link DecodePieces}), run for
 * every step of one token while the general sessions run the prompt. Built when the engine
 * opens: the pieces are analysed for what is fixed during a decode step, the general sessions
 * are run once on a dummy token (zeros for the attention outputs) to read the constant shape
 * tensors and the static shapes, and each decode piece is loaded from the same weight files as
 * its general piece. The decode sessions are then checked on that dummy step against the
 * general ones (every piece output, relative difference at most {@value #TOLERANCE}); anything
 * that fails gives one line on stderr and the engine runs the general sessions alone.
 */
final class DecodeSessions implements AutoCloseable {

    /** Largest relative difference (max |a − b| / max |a|, per output) accepted on the check step. */
    static final double TOLERANCE = 1e-4;
    /** Constant inputs larger than this (elements) stay inputs. */
    private static final int MAX_CONSTANT = 4096;

    final List<OrtSession> sessions = new ArrayList<>();
    /** Per piece: the inputs the decode piece still reads. */
    final List<List<String>> inputs = new ArrayList<>();
    /** How many piece inputs became constants, and how many got static shapes. */
    int constants;
    int shaped;

    private DecodeSessions() {
    }

    /**
     * Builds the decode sessions for {@code jm}'s pieces ({@code files}, in {@code dir}), or
     * returns null after one line to {@code warn} saying why not.
     */
    static DecodeSessions build(JavaAttentionModel jm, List<Path> files, Path dir, DecoderModel.Options opts,
                                java.util.function.Consumer<String> warn) {
        String mode = mode();
        if (!mode.equals("copy") && !mode.equals("shared")) {
            return null; // off, or the Java decode step (JavaPieces)
        }
        SharedWeights weights = mode.equals("shared") ? jm.weights : null;
        if (mode.equals("shared") && weights == null) {
            return null; // the weights could not be shared: the engine said so in one line
        }
        DecodeSessions ds = new DecodeSessions();
        try {
            List<OnnxModel> models = new ArrayList<>();
            for (Path f : files) {
                models.add(OnnxModel.read(f));
            }
            Set<String> shapeFixed = new HashSet<>(Set.of("input_ids", "position_ids"));
            for (JavaAttentionModel.LayerInfo l : jm.layers) {
                shapeFixed.add(l.output());
            }
            Map<String, DecodePieces.Fixed> fixed = DecodePieces.analyse(models, shapeFixed);
            Map<String, OnnxTensor> general = new HashMap<>();
            List<AutoCloseable> owned = new ArrayList<>();
            try {
                Map<String, OnnxTensor> fed = probe(jm, jm.sessions, null, general, owned);
                for (int s = 0; s < files.size(); s++) {
                    try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(opts)) {
                        JavaAttentionModel.engineSessionOptions(so);
                        decodeSessionOptions(so, dir);
                        if (weights != null) {
                            weights.apply(so, s); // the general session's tensors, not a second copy
                        }
                        Map<String, long[]> shapes = new LinkedHashMap<>();
                        Map<String, byte[]> consts = new LinkedHashMap<>();
                        List<String> keep = new ArrayList<>();
                        for (String in : jm.pieces.get(s).inputs()) {
                            DecodePieces.Fixed f = fixed.getOrDefault(in, DecodePieces.Fixed.NONE);
                            OnnxTensor t = fed.get(in);
                            byte[] c = f == DecodePieces.Fixed.VALUE ? constant(in, t) : null;
                            if (c != null) {
                                consts.put(in, c);
                                continue;
                            }
                            keep.add(in);
                            if (f != DecodePieces.Fixed.NONE) {
                                shapes.put(in, t.getInfo().getShape());
                            }
                        }
                        ds.constants += consts.size();
                        ds.shaped += shapes.size();
                        byte[] bytes = DecodePieces.specialise(models.get(s), dir, shapes, consts);
                        String opt = System.getProperty("kvq.engine.decodeOptimized");
                        if (opt != null && !opt.isBlank()) { // diagnostics: ONNX Runtime's optimized decode pieces
                            so.setOptimizedModelFilePath(opt + "-" + s + ".onnx");
                        }
                        ds.sessions.add(DecoderModel.environment().createSession(bytes, so));
                        ds.inputs.add(keep);
                    }
                }
                String diff = check(jm, ds, general);
                if (diff != null) {
                    ds.close();
                    warn.accept("kvquant: the engine's one-token pieces differ from the general ones on a check step ("
                            + diff + "); decoding with the general pieces");
                    return null;
                }
            } finally {
                closeAll(owned);
            }
            return ds;
        } catch (OrtException | IOException | RuntimeException e) {
            ds.close();
            warn.accept(cannot(DecoderModel.firstLine(e.getMessage())));
            return null;
        }
    }

    /** The one line said when the one-token pieces cannot be built, for {@code reason}. */
    static String cannot(String reason) {
        return "kvquant: the engine's one-token pieces cannot be built (" + reason + "); decoding with the general pieces";
    }

    /**
     * {@code kvq.engine.decodePieces}: {@code java} (the default): decode steps run the pieces'
     * dense layers in Java ({@link JavaPieces}) on the weights ONNX Runtime's general sessions use
     * (held once, {@link SharedWeights}), falling back to {@code off} with one line when the
     * pieces hold something it does not implement; {@code off}: the general pieces run every
     * step (ONNX Runtime loading and prepacking the weights itself); {@code on} or {@code copy}:
     * the one-token ONNX Runtime pieces, weights loaded again; {@code shared}: the one-token
     * pieces on shared, unpacked weights. Measured in docs/engine.md ("The Java decode step").
     */
    static String mode() {
        return switch (System.getProperty("kvq.engine.decodePieces", "java")) {
            case "on", "copy" -> "copy";
            case "shared" -> "shared";
            case "off" -> "off";
            default -> "java";
        };
    }

    /**
     * Session options of the decode pieces on top of the engine's: weights read from the
     * prepared folder; {@code kvq.engine.decodeThreads=N} sets their intra-op threads.
     */
    static void decodeSessionOptions(OrtSession.SessionOptions so, Path dir) throws OrtException {
        so.addConfigEntry("session.model_external_initializers_file_folder_path", dir.toAbsolutePath().toString());
        if ("off".equals(System.getProperty("kvq.engine.decodePrepack"))) {
            so.addConfigEntry("session.disable_prepacking", "1");
        }
        Integer t = Integer.getInteger("kvq.engine.decodeThreads");
        if (t != null && t > 0) {
            so.setIntraOpNumThreads(t);
        }
    }

    /**
     * Runs one dummy decode step (token 0 at position 0, zeros as attention outputs) through
     * {@code sessions}, reading {@code inputs} per piece (null: the general pieces' inputs);
     * every piece output goes into {@code outputs}. Returns every tensor fed to a piece, by name.
     */
    static Map<String, OnnxTensor> probe(JavaAttentionModel jm, List<OrtSession> sessions, List<List<String>> inputs,
                                                 Map<String, OnnxTensor> outputs, List<AutoCloseable> owned)
            throws OrtException {
        Map<String, OnnxTensor> avail = new HashMap<>();
        var env = DecoderModel.environment();
        OnnxTensor ids = OnnxTensor.createTensor(env, new long[][] {{0}});
        owned.add(ids);
        avail.put("input_ids", ids);
        avail.put("position_ids", ids);
        OnnxTensor mask = OnnxTensor.createTensor(env, new long[][] {{1}});
        owned.add(mask);
        avail.put("attention_mask", mask);
        for (int s = 0; s < sessions.size(); s++) {
            Map<String, OnnxTensor> in = new HashMap<>();
            for (String name : inputs == null ? jm.pieces.get(s).inputs() : inputs.get(s)) {
                OnnxTensor t = avail.get(name);
                if (t == null) {
                    throw new IllegalStateException("piece " + s + " needs " + name + ", which no earlier piece made");
                }
                in.put(name, t);
            }
            OrtSession.Result r = sessions.get(s).run(in);
            owned.add(r);
            for (String name : jm.pieces.get(s).outputs()) {
                OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException("piece output " + name + " missing"));
                avail.put(name, (OnnxTensor) v);
                outputs.put(name, (OnnxTensor) v);
            }
            if (s < jm.layers.size()) {
                JavaAttentionModel.LayerInfo l = jm.layers.get(s);
                OnnxTensor out = zeroAttention(jm, l, avail.get(l.query()), 1);
                owned.add(out);
                avail.put(l.output(), out);
            }
        }
        return avail;
    }

    /**
     * Zeros in the shape of layer {@code l}'s attention output for {@code tokens} tokens, from its
     * query tensor (the fused GroupQueryAttention cut gives [1, tokens, qHeads · headDim]).
     */
    static OnnxTensor zeroAttention(JavaAttentionModel jm, JavaAttentionModel.LayerInfo l, OnnxTensor q, long tokens)
            throws OrtException {
        long[] shape = l.rotary() == null ? q.getInfo().getShape()
                : new long[] {1, tokens, (long) l.rotary().qHeads() * jm.headDim()};
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return JavaAttentionDecoder.tensor(new float[(int) n], shape, q.getInfo().type);
    }

    /** An integer or float tensor's value as an initializer, or null (other types, too large). */
    private static byte[] constant(String name, OnnxTensor t) {
        OnnxJavaType type = t.getInfo().type;
        int elem = switch (type) {
            case INT64 -> OnnxModel.INT64;
            case INT32 -> OnnxModel.INT32;
            case FLOAT -> OnnxModel.FLOAT;
            default -> 0;
        };
        if (elem == 0 || t.getInfo().getNumElements() > MAX_CONSTANT) {
            return null;
        }
        ByteBuffer b = t.getByteBuffer().order(ByteOrder.nativeOrder());
        byte[] raw = new byte[b.remaining()];
        ByteBuffer le = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            switch (type) {
                case INT64 -> le.putLong(b.getLong());
                case INT32 -> le.putInt(b.getInt());
                default -> le.putFloat(b.getFloat());
            }
        }
        return DecodePieces.tensor(name, elem, t.getInfo().getShape(), raw);
    }

    /** The dummy step through the decode sessions against the general ones: null when they agree, else what differs. */
    private static String check(JavaAttentionModel jm, DecodeSessions ds, Map<String, OnnxTensor> general)
            throws OrtException {
        Map<String, OnnxTensor> mine = new HashMap<>();
        List<AutoCloseable> owned = new ArrayList<>();
        try {
            probe(jm, ds.sessions, ds.inputs, mine, owned);
            for (Map.Entry<String, OnnxTensor> e : general.entrySet()) {
                OnnxTensor a = e.getValue();
                OnnxTensor b = mine.get(e.getKey());
                if (!java.util.Arrays.equals(a.getInfo().getShape(), b.getInfo().getShape())) {
                    return e.getKey() + ": shape " + java.util.Arrays.toString(b.getInfo().getShape()) + " instead of "
                            + java.util.Arrays.toString(a.getInfo().getShape());
                }
                double rel = relDiff(a, b);
                if (!(rel <= TOLERANCE)) {
                    return e.getKey() + ": relative difference " + rel;
                }
            }
            return null;
        } finally {
            closeAll(owned);
        }
    }

    /** max |a − b| / max |a| over two tensors of one type (integers: 0 or infinity). */
    static double relDiff(OnnxTensor a, OnnxTensor b) {
        if (a.getInfo().type != b.getInfo().type) {
            return Double.POSITIVE_INFINITY;
        }
        return switch (a.getInfo().type) {
            case FLOAT, FLOAT16, BFLOAT16 -> {
                float[] x = floats(a);
                float[] y = floats(b);
                double num = 0;
                double den = 0;
                for (int i = 0; i < x.length; i++) {
                    num = Math.max(num, Math.abs((double) x[i] - y[i]));
                    den = Math.max(den, Math.abs(x[i]));
                }
                yield num == 0 ? 0 : num / Math.max(den, 1e-30);
            }
            default -> a.getByteBuffer().equals(b.getByteBuffer()) ? 0 : Double.POSITIVE_INFINITY;
        };
    }

    private static float[] floats(OnnxTensor t) {
        java.nio.FloatBuffer fb = t.getFloatBuffer();
        float[] r = new float[fb.remaining()];
        fb.get(r);
        return r;
    }

    static void closeAll(List<? extends AutoCloseable> owned) {
        for (AutoCloseable c : owned) {
            try {
                c.close();
            } catch (Exception e) {
                // closing native buffers and sessions: nothing to recover
            }
        }
        owned.clear();
    }

    @Override
    public void close() {
        closeAll(sessions);
    }
}
