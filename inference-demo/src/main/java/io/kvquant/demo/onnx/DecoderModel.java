package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.providers.OrtCUDAProviderOptions;
import io.kvquant.cache.KvCache;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.ShortBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * An exported decoder run by ONNX Runtime with its KV cache held by kvquant (round-trip mode):
 * before each step the past tensors are rebuilt from the {@link KvCache}; after it the new
 * positions of {@code present.*} are appended to the cache. With a {@code full} cache the
 * logits equal plain ONNX Runtime decoding exactly.
 */
public final class DecoderModel implements AutoCloseable {

    private final OrtEnvironment env;
    private final OrtSession session;
    private final ModelInfo info;
    private final Path dir;

    /** Opens {@code dir/model.onnx} on the CPU (or CUDA) execution provider. */
    public DecoderModel(Path dir, int threads, String ep) {
        this.dir = dir;
        Path file = dir.resolve("model.onnx");
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("no model.onnx in " + dir + " (expected an exported decoder; see models/README.md)");
        }
        env = OrtEnvironment.getEnvironment();
        OrtSession s = null;
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions()) {
            opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
            if (threads > 0) {
                opts.setIntraOpNumThreads(threads);
            }
            opts.setInterOpNumThreads(1);
            switch (ep) {
                case "cpu" -> {
                }
                case "cuda" -> {
                    try (OrtCUDAProviderOptions cuda = new OrtCUDAProviderOptions(0)) {
                        opts.addCUDA(cuda);
                    } catch (OrtException | UnsatisfiedLinkError | IllegalArgumentException e) {
                        throw new IllegalArgumentException("--ep cuda needs ONNX Runtime's GPU build (the onnxruntime_gpu "
                                + "artifact, Maven profile -Pcuda) and a CUDA device; this build has the CPU provider only");
                    }
                }
                default -> throw new IllegalArgumentException("unknown execution provider '" + ep + "' (known: cpu, cuda)");
            }
            s = env.createSession(file.toString(), opts);
            this.info = ModelInfo.discover(s.getInputInfo(), s.getOutputInfo());
            this.session = s;
        } catch (OrtException e) {
            if (s != null) {
                closeQuietly(s);
            }
            throw new IllegalArgumentException("ONNX Runtime cannot load " + file + ": " + firstLine(e.getMessage()));
        } catch (IllegalArgumentException e) {
            if (s != null) {
                closeQuietly(s);
            }
            throw new IllegalArgumentException(file + ": " + e.getMessage());
        }
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (OrtException ignored) {
            // closing after a failed open: nothing more to report
        }
    }

    static String firstLine(String s) {
        if (s == null) {
            return "unknown error";
        }
        int i = s.indexOf('\n');
        return i < 0 ? s : s.substring(0, i);
    }

    public ModelInfo info() {
        return info;
    }

    public Path directory() {
        return dir;
    }

    /**
     * Runs one step of {@code ids.length} new tokens at positions [past, past + n) where past is
     * the cache's current length, appends their keys and values to the cache, and returns the
     * logits of the last position ({@code allPositions=false}) or of every new position
     * ({@code [n][vocab]} flattened).
     */
    public float[] step(long[] ids, KvCache cache, boolean allPositions) {
        int n = ids.length;
        int past = cache.length(0);
        int L = info.layers();
        int H = info.kvHeads();
        int D = info.headDim();
        Map<String, OnnxTensor> in = new HashMap<>();
        try {
            in.put("input_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(ids), new long[]{1, n}));
            if (info.hasAttentionMask()) {
                long[] mask = new long[past + n];
                java.util.Arrays.fill(mask, 1L);
                in.put("attention_mask", OnnxTensor.createTensor(env, LongBuffer.wrap(mask), new long[]{1, past + n}));
            }
            if (info.hasPositionIds()) {
                long[] pos = new long[n];
                for (int i = 0; i < n; i++) {
                    pos[i] = past + i;
                }
                in.put("position_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(pos), new long[]{1, n}));
            }
            if (info.hasUseCacheBranch()) {
                in.put("use_cache_branch", OnnxTensor.createTensor(env, new boolean[]{past > 0}));
            }
            float[] k = new float[H * past * D];
            float[] v = new float[H * past * D];
            long[] shape = {1, H, past, D};
            for (int l = 0; l < L; l++) {
                if (past > 0) {
                    cache.read(l, 0, past, k, v);
                }
                in.put("past_key_values." + l + ".key", tensor(k, shape));
                in.put("past_key_values." + l + ".value", tensor(v, shape));
            }
            try (OrtSession.Result r = session.run(in)) {
                float[] logits = floats(r.get("logits").orElseThrow());
                int vocab = logits.length / n;
                // hand the new positions of present.* to the cache
                float[] nk = new float[H * n * D];
                float[] nv = new float[H * n * D];
                for (int l = 0; l < L; l++) {
                    lastPositions(floats(r.get("present." + l + ".key").orElseThrow()), H, past + n, n, D, nk);
                    lastPositions(floats(r.get("present." + l + ".value").orElseThrow()), H, past + n, n, D, nv);
                    cache.append(l, nk, nv, n);
                }
                return allPositions ? logits : java.util.Arrays.copyOfRange(logits, (n - 1) * vocab, n * vocab);
            }
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on a decode step: " + firstLine(e.getMessage()), e);
        } finally {
            for (OnnxTensor t : in.values()) {
                t.close();
            }
        }
    }

    /**
     * Plain ONNX Runtime decoding, for reference: past tensors are the previous step's present
     * outputs as they are. {@code past} holds [k0, v0, k1, v1, ...] flattened arrays (empty at start)
     * and is replaced by the new presents.
     */
    public float[] plainStep(long[] ids, float[][] past, int pastLen) {
        int n = ids.length;
        int L = info.layers();
        Map<String, OnnxTensor> in = new HashMap<>();
        try {
            in.put("input_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(ids), new long[]{1, n}));
            long[] mask = new long[pastLen + n];
            java.util.Arrays.fill(mask, 1L);
            if (info.hasAttentionMask()) {
                in.put("attention_mask", OnnxTensor.createTensor(env, LongBuffer.wrap(mask), new long[]{1, pastLen + n}));
            }
            if (info.hasPositionIds()) {
                long[] pos = new long[n];
                for (int i = 0; i < n; i++) {
                    pos[i] = pastLen + i;
                }
                in.put("position_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(pos), new long[]{1, n}));
            }
            if (info.hasUseCacheBranch()) {
                in.put("use_cache_branch", OnnxTensor.createTensor(env, new boolean[]{pastLen > 0}));
            }
            long[] shape = {1, info.kvHeads(), pastLen, info.headDim()};
            for (int l = 0; l < L; l++) {
                in.put("past_key_values." + l + ".key", tensor(past[2 * l], shape));
                in.put("past_key_values." + l + ".value", tensor(past[2 * l + 1], shape));
            }
            try (OrtSession.Result r = session.run(in)) {
                float[] logits = floats(r.get("logits").orElseThrow());
                for (int l = 0; l < L; l++) {
                    past[2 * l] = floats(r.get("present." + l + ".key").orElseThrow());
                    past[2 * l + 1] = floats(r.get("present." + l + ".value").orElseThrow());
                }
                int vocab = logits.length / n;
                return java.util.Arrays.copyOfRange(logits, (n - 1) * vocab, n * vocab);
            }
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on a decode step: " + firstLine(e.getMessage()), e);
        } finally {
            for (OnnxTensor t : in.values()) {
                t.close();
            }
        }
    }

    private OnnxTensor tensor(float[] data, long[] shape) throws OrtException {
        int n = (int) (shape[0] * shape[1] * shape[2] * shape[3]);
        if (info.fp16()) {
            ByteBuffer bb = ByteBuffer.allocateDirect(n * 2).order(ByteOrder.nativeOrder());
            ShortBuffer sb = bb.asShortBuffer();
            for (int i = 0; i < n; i++) {
                sb.put(i, Float.floatToFloat16(data[i]));
            }
            return OnnxTensor.createTensor(env, bb, shape, ai.onnxruntime.OnnxJavaType.FLOAT16);
        }
        return OnnxTensor.createTensor(env, FloatBuffer.wrap(data, 0, n), shape);
    }

    private static float[] floats(OnnxValue v) {
        OnnxTensor t = (OnnxTensor) v;
        if (t.getInfo().type == ai.onnxruntime.OnnxJavaType.FLOAT16) {
            ShortBuffer sb = t.getShortBuffer();
            float[] f = new float[sb.remaining()];
            for (int i = 0; i < f.length; i++) {
                f[i] = Float.float16ToFloat(sb.get(i));
            }
            return f;
        }
        FloatBuffer fb = t.getFloatBuffer();
        float[] f = new float[fb.remaining()];
        fb.get(f);
        return f;
    }

    /** Copies positions [total − n, total) of a [1][H][total][D] tensor into [H][n][D]. */
    private static void lastPositions(float[] present, int heads, int total, int n, int dim, float[] out) {
        for (int h = 0; h < heads; h++) {
            System.arraycopy(present, (h * total + total - n) * dim, out, h * n * dim, n * dim);
        }
    }

    @Override
    public void close() {
        closeQuietly(session);
    }
}
