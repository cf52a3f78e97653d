package io.kvquant.demo.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtProvider;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.ShortBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * A decoder exported in the Hugging Face/optimum "decoder with past" layout, opened with ONNX
 * Runtime. Layers, KV heads, head dim and dtype come from the graph's inputs and outputs
 * ({@code past_key_values.i.key|value}, {@code present.i.key|value}); a model the runner cannot
 * drive is rejected with a message naming what is missing or unsupported.
 *
 * <p>{@link #run} is one forward step for batch 1: it takes the dense past as flat
 * {@code [kvHeads][past][headDim]} arrays per layer and returns the last position's logits plus
 * the new positions of {@code present}. Every ONNX Runtime object it creates is closed before
 * it returns. Not thread-safe.
 */
public final class DecoderModel implements ModelRunner {

    /** Execution provider. */
    public enum Ep { CPU, CUDA }

    /**
     * How to open a model. threads &lt;= 0 leaves ONNX Runtime's default. {@code javaDecodeStep}:
     * whether the engine may run decode steps in Java ({@link JavaPieces}; the default), or should
     * keep ONNX Runtime's prepacked pieces, as for a one-shot run that does not compile the Java
     * step first (docs/engine.md); {@code -Dkvq.engine.decodePieces} set explicitly overrides it.
     */
    public record Options(int threads, Ep ep, boolean javaDecodeStep) {
        public Options(int threads, Ep ep) {
            this(threads, ep, true);
        }

        public static Options defaults() {
            return new Options(0, Ep.CPU);
        }
    }

    /** The result of one step: last-position logits and the step's new K/V per layer. */
    public record Step(float[] logits, float[][] keys, float[][] values, int tokens) {
    }

    private static final OrtEnvironment ENV = startEnvironment();

    /**
     * The process-wide ONNX Runtime environment. DJL's ONNX Runtime engine creates it with its
     * own thread-pool options and fails if one exists already, so when that engine is on the
     * class path it is started first and its environment shared (the DJL drop-in and kvquant's
     * own decoding then work in one JVM, in either order).
     */
    private static OrtEnvironment startEnvironment() {
        try {
            Class.forName("ai.djl.onnxruntime.engine.OrtEngine", false, DecoderModel.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            return OrtEnvironment.getEnvironment();
        }
        ai.djl.engine.Engine.getEngine("OnnxRuntime");
        return OrtEnvironment.getEnvironment();
    }

    private final Path file;
    private final OrtSession session;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final boolean fp16;
    private final boolean hasAttentionMask;
    private final boolean hasPositionIds;
    private final boolean hasUseCacheBranch;
    private final int maxContext;
    private final int eosTokenId;
    private final Set<String> opTypes;
    private boolean closed;
    private final Map<String, ByteBuffer> buffers = new HashMap<>();

    private DecoderModel(Path file, OrtSession session, ModelConfig cfg, Set<String> ops) throws OrtException {
        this.file = file;
        this.session = session;
        this.opTypes = ops;
        Map<String, NodeInfo> in = session.getInputInfo();
        Map<String, NodeInfo> out = session.getOutputInfo();
        String where = file.getFileName().toString();
        if (!in.containsKey("input_ids")) {
            throw new IllegalArgumentException(where + ": no 'input_ids' input (inputs: " + in.keySet()
                    + "); kvquant reads the Hugging Face/optimum decoder layout");
        }
        if (!out.containsKey("logits")) {
            throw new IllegalArgumentException(where + ": no 'logits' output (outputs: " + out.keySet() + ")");
        }
        int n = 0;
        while (in.containsKey("past_key_values." + n + ".key")) {
            n++;
        }
        if (n == 0) {
            throw new IllegalArgumentException(where + ": no 'past_key_values.0.key' input: this export has no KV cache"
                    + " (export with past, e.g. optimum's text-generation-with-past task)");
        }
        for (int i = 0; i < n; i++) {
            for (String name : List.of("past_key_values." + i + ".value", "present." + i + ".key",
                    "present." + i + ".value")) {
                if (!(name.startsWith("present") ? out : in).containsKey(name)) {
                    throw new IllegalArgumentException(where + ": missing '" + name + "' (layer " + i + " of " + n
                            + "); the runner needs past_key_values.i.key|value inputs and present.i.key|value outputs");
                }
            }
        }
        Set<String> known = new TreeSet<>(Set.of("input_ids", "attention_mask", "position_ids", "use_cache_branch"));
        for (int i = 0; i < n; i++) {
            known.add("past_key_values." + i + ".key");
            known.add("past_key_values." + i + ".value");
        }
        for (String name : in.keySet()) {
            if (!known.contains(name)) {
                throw new IllegalArgumentException(where + ": unsupported input '" + name + "' (the runner feeds "
                        + "input_ids, attention_mask, position_ids, use_cache_branch, past_key_values.i.key|value)");
            }
        }
        TensorInfo pk = tensorInfo(in.get("past_key_values.0.key"), where);
        if (pk.type != OnnxJavaType.FLOAT && pk.type != OnnxJavaType.FLOAT16) {
            throw new IllegalArgumentException(where + ": past_key_values are " + pk.type + "; only float32 and float16 "
                    + "are supported");
        }
        long[] shape = pk.getShape();
        if (shape.length != 4) {
            throw new IllegalArgumentException(where + ": past_key_values.0.key has rank " + shape.length
                    + "; expected [batch, kv_heads, past_sequence, head_dim]");
        }
        int h = shape[1] > 0 ? (int) shape[1] : cfg.kvHeads();
        int d = shape[3] > 0 ? (int) shape[3] : cfg.headDim();
        if (h <= 0 || d <= 0) {
            throw new IllegalArgumentException(where + ": KV heads / head dim are symbolic in the graph and config.json "
                    + "does not give num_key_value_heads and head_dim");
        }
        this.layers = n;
        this.kvHeads = h;
        this.headDim = d;
        this.fp16 = pk.type == OnnxJavaType.FLOAT16;
        this.hasAttentionMask = in.containsKey("attention_mask");
        this.hasPositionIds = in.containsKey("position_ids");
        this.hasUseCacheBranch = in.containsKey("use_cache_branch");
        this.maxContext = cfg.maxPositions();
        this.eosTokenId = cfg.eosTokenId();
    }

    private static TensorInfo tensorInfo(NodeInfo ni, String where) {
        if (!(ni.getInfo() instanceof TensorInfo ti)) {
            throw new IllegalArgumentException(where + ": " + ni.getName() + " is not a tensor");
        }
        return ti;
    }

    /**
     * Opens {@code model.onnx} in a model directory (or the given .onnx file). config.json beside
     * it is read when present (context length, EOS id, head counts if symbolic).
     */
    public static DecoderModel open(Path modelDirOrFile, Options opts) throws IOException {
        Path file = Files.isDirectory(modelDirOrFile) ? modelDirOrFile.resolve("model.onnx") : modelDirOrFile;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("model file not found: " + file);
        }
        ModelConfig cfg = ModelConfig.read(file.toAbsolutePath().getParent().resolve("config.json"));
        Set<String> ops = OnnxOps.opTypes(file);
        List<String> fused = new ArrayList<>();
        for (String op : ops) {
            if (OnnxOps.FUSED_ATTENTION.contains(op)) {
                fused.add(op);
            }
        }
        if (!fused.isEmpty()) {
            throw new IllegalArgumentException(file.getFileName() + ": fused attention operators " + fused + " are not "
                    + "supported; export with plain attention ops (MatMul/Softmax), e.g. without ORT transformer optimizations");
        }
        try (OrtSession.SessionOptions so = sessionOptions(opts)) {
            OrtSession session = ENV.createSession(file.toString(), so);
            try {
                return new DecoderModel(file, session, cfg, ops);
            } catch (RuntimeException e) {
                session.close();
                throw e;
            }
        } catch (OrtException e) {
            throw new IOException("ONNX Runtime cannot load " + file + ": " + firstLine(e.getMessage()), e);
        }
    }

    /**
     * Session options of every execution mode: {@code opts.threads()} intra-op threads (one
     * inter-op) when set, and the CUDA provider for {@code --ep cuda}, refused in one line when
     * this build of ONNX Runtime has none.
     */
    static OrtSession.SessionOptions sessionOptions(Options opts) throws OrtException {
        OrtSession.SessionOptions so = new OrtSession.SessionOptions();
        if (opts.threads() > 0) {
            so.setIntraOpNumThreads(opts.threads());
            so.setInterOpNumThreads(1);
        }
        if (opts.ep() == Ep.CUDA) {
            if (!OrtEnvironment.getAvailableProviders().contains(OrtProvider.CUDA)) {
                so.close();
                throw new IllegalArgumentException("--ep cuda needs the CUDA build of ONNX Runtime: build with mvn -Pcuda "
                        + "(artifact com.microsoft.onnxruntime:onnxruntime_gpu); this build has "
                        + OrtEnvironment.getAvailableProviders().toString().toLowerCase(Locale.ROOT));
            }
            so.addCUDA(0);
        }
        return so;
    }

    static String firstLine(String s) {
        if (s == null) {
            return "(no message)";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    public int layers() {
        return layers;
    }

    public int kvHeads() {
        return kvHeads;
    }

    public int headDim() {
        return headDim;
    }

    public boolean fp16() {
        return fp16;
    }

    public boolean hasPositionIds() {
        return hasPositionIds;
    }

    public boolean hasUseCacheBranch() {
        return hasUseCacheBranch;
    }

    /** max_position_embeddings from config.json, or -1 when unknown. */
    public int maxContext() {
        return maxContext;
    }

    /** eos_token_id from config.json, or -1. */
    public int eosTokenId() {
        return eosTokenId;
    }

    public Set<String> opTypes() {
        return opTypes;
    }

    public Path file() {
        return file;
    }

    /** The ONNX Runtime session, for tests that drive it directly. */
    public OrtSession session() {
        return session;
    }

    @Override
    public Decoder newDecoder(io.kvquant.cache.KvCache cache, int prefillChunk) {
        return new KvHookDecoder(this, cache, prefillChunk);
    }

    public static OrtEnvironment environment() {
        return ENV;
    }

    public String describe() {
        return file.getFileName() + ": " + layers + " layers, " + kvHeads + " KV heads, head dim " + headDim + ", "
                + (fp16 ? "fp16" : "fp32") + (maxContext > 0 ? ", context " + maxContext : "");
    }

    /**
     * Runs tokens {@code ids[off, off+len)} at positions {@code pastLen..pastLen+len-1} with the
     * given dense past ({@code pastK[l]}, {@code pastV[l]} hold at least kvHeads·pastLen·headDim
     * floats in [kvHeads][pastLen][headDim] order).
     */
    public Step run(long[] ids, int off, int len, int pastLen, float[][] pastK, float[][] pastV) {
        int pastN = kvHeads * pastLen * headDim;
        for (int l = 0; l < layers && pastN > 0; l++) {
            if (pastK[l] == null || pastK[l].length < pastN || pastV[l] == null || pastV[l].length < pastN) {
                throw new IllegalArgumentException("layer " + l + ": past arrays need " + pastN + " floats");
            }
        }
        return run(ids, off, len, pastLen, (layer, key, heads, dst) -> {
            for (int h = 0; h < heads.length; h++) {
                heads[h] = key ? pastK[layer] : pastV[layer];
                dst[h] = h * pastLen * headDim;
            }
        });
    }

    /**
     * Supplies the dense past of one layer as per-head blocks: for KV head {@code h},
     * {@code heads[h]} from offset {@code offsets[h]} holds {@code pastLen x headDim} floats.
     */
    @FunctionalInterface
    public interface PastSource {
        void blocks(int layer, boolean key, float[][] heads, int[] offsets);
    }

    /** Like {@link #run(long[], int, int, int, float[][], float[][])} with the past given per head. */
    public Step run(long[] ids, int off, int len, int pastLen, PastSource past) {
        if (closed) {
            throw new IllegalStateException("the model is closed");
        }
        if (len < 1 || off < 0 || off + len > ids.length) {
            throw new IllegalArgumentException("bad token range [" + off + ", " + (off + len) + ") of " + ids.length);
        }
        int total = pastLen + len;
        Map<String, OnnxTensor> inputs = new HashMap<>();
        try {
            LongBuffer idBuf = longs("input_ids", len);
            idBuf.put(ids, off, len).flip();
            inputs.put("input_ids", OnnxTensor.createTensor(ENV, idBuf, new long[] {1, len}));
            if (hasAttentionMask) {
                LongBuffer mask = longs("attention_mask", total);
                for (int i = 0; i < total; i++) {
                    mask.put(1L);
                }
                inputs.put("attention_mask", OnnxTensor.createTensor(ENV, mask.flip(), new long[] {1, total}));
            }
            if (hasPositionIds) {
                LongBuffer pos = longs("position_ids", len);
                for (int i = 0; i < len; i++) {
                    pos.put(pastLen + i);
                }
                inputs.put("position_ids", OnnxTensor.createTensor(ENV, pos.flip(), new long[] {1, len}));
            }
            if (hasUseCacheBranch) {
                inputs.put("use_cache_branch", OnnxTensor.createTensor(ENV, new boolean[] {pastLen > 0}));
            }
            long[] pastShape = {1, kvHeads, pastLen, headDim};
            int pastN = kvHeads * pastLen * headDim;
            for (int l = 0; l < layers; l++) {
                inputs.put("past_key_values." + l + ".key", pastTensor("k" + l, past, l, true, pastLen, pastShape));
                inputs.put("past_key_values." + l + ".value", pastTensor("v" + l, past, l, false, pastLen, pastShape));
            }
            try (OrtSession.Result res = session.run(inputs)) {
                float[] logits = lastRow(res, len);
                float[][] nk = new float[layers][];
                float[][] nv = new float[layers][];
                for (int l = 0; l < layers; l++) {
                    nk[l] = newPositions(res, "present." + l + ".key", pastLen, len);
                    nv[l] = newPositions(res, "present." + l + ".value", pastLen, len);
                }
                return new Step(logits, nk, nv, len);
            }
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on a step (past " + pastLen + ", " + len + " tokens): "
                    + firstLine(e.getMessage()), e);
        } finally {
            for (OnnxTensor t : inputs.values()) {
                t.close();
            }
        }
    }

    private OnnxTensor pastTensor(String slot, PastSource past, int layer, boolean key, int pastLen, long[] shape)
            throws OrtException {
        int block = pastLen * headDim;
        int n = kvHeads * block;
        float[][] heads = new float[kvHeads][];
        int[] offsets = new int[kvHeads];
        if (n > 0) {
            past.blocks(layer, key, heads, offsets);
        }
        if (fp16) {
            ShortBuffer hb = direct(slot, n, 2).asShortBuffer();
            for (int h = 0; h < kvHeads && n > 0; h++) {
                for (int i = 0; i < block; i++) {
                    hb.put(h * block + i, Float.floatToFloat16(heads[h][offsets[h] + i]));
                }
            }
            return OnnxTensor.createTensor(ENV, hb, shape, OnnxJavaType.FLOAT16);
        }
        FloatBuffer f = direct(slot, n, 4).asFloatBuffer();
        for (int h = 0; h < kvHeads && n > 0; h++) {
            f.put(h * block, heads[h], offsets[h], block);
        }
        return OnnxTensor.createTensor(ENV, f, shape);
    }

    /** Bytes of the reusable direct input buffers (mostly the dense past, in round-trip mode). */
    public long inputBufferBytes() {
        long b = 0;
        for (ByteBuffer buf : buffers.values()) {
            b += buf.capacity();
        }
        return b;
    }

    private LongBuffer longs(String slot, int n) {
        return direct(slot, n, 8).asLongBuffer();
    }

    /**
     * A reusable direct buffer per input, grown geometrically: ONNX Runtime wraps direct
     * buffers without copying, and reusing them keeps each step free of native allocations
     * (heap buffers would be copied into a fresh direct buffer that only the GC releases).
     */
    private ByteBuffer direct(String slot, int n, int bytesPer) {
        long need = (long) n * bytesPer;
        ByteBuffer b = buffers.get(slot);
        if (b == null || b.capacity() < need) {
            long cap = Math.max(need, b == null ? 0 : b.capacity() + b.capacity() / 2);
            if (cap > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("input " + slot + " needs " + need + " bytes, over 2 GiB");
            }
            b = ByteBuffer.allocateDirect((int) Math.max(cap, 64)).order(ByteOrder.nativeOrder());
            buffers.put(slot, b);
        }
        return b.clear().limit((int) need).slice().order(ByteOrder.nativeOrder());
    }

    private static OnnxTensor output(OrtSession.Result res, String name) {
        OnnxValue v = res.get(name).orElseThrow(() -> new IllegalStateException("output '" + name + "' missing"));
        if (!(v instanceof OnnxTensor t)) {
            throw new IllegalStateException("output '" + name + "' is not a tensor");
        }
        return t;
    }

    private static float[] lastRow(OrtSession.Result res, int len) {
        OnnxTensor t = output(res, "logits");
        long[] shape = t.getInfo().getShape();
        int vocab = (int) shape[shape.length - 1];
        FloatBuffer fb = t.getFloatBuffer();
        int rows = fb.remaining() / vocab;
        float[] out = new float[vocab];
        fb.position((rows - 1) * vocab);
        fb.get(out);
        return out;
    }

    private float[] newPositions(OrtSession.Result res, String name, int pastLen, int len) {
        OnnxTensor t = output(res, name);
        long[] shape = t.getInfo().getShape();
        int total = pastLen + len;
        if (shape.length != 4 || shape[1] != kvHeads || shape[2] != total || shape[3] != headDim) {
            throw new IllegalStateException(name + " has shape " + java.util.Arrays.toString(shape) + ", expected [1, "
                    + kvHeads + ", " + total + ", " + headDim + "] (past + new positions)");
        }
        FloatBuffer fb = t.getFloatBuffer();
        float[] out = new float[kvHeads * len * headDim];
        for (int h = 0; h < kvHeads; h++) {
            fb.position((h * total + pastLen) * headDim);
            fb.get(out, h * len * headDim, len * headDim);
        }
        return out;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            try {
                session.close();
            } catch (OrtException e) {
                throw new IllegalStateException("closing the ONNX Runtime session: " + firstLine(e.getMessage()), e);
            }
        }
    }
}
