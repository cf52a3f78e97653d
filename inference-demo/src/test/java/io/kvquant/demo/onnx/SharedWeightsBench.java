package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtSession;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Not a test (no timed assertions): ONNX Runtime's share of a prompt chunk and of a decode step
 * with the weights prepacked by ONNX Runtime (decode pieces off; the old copying decode pieces)
 * against the shared, unpacked weights, the variants interleaved in one process so that the
 * machine's load hits them alike. Only the pieces run (attention outputs are zeros), so this is
 * the part prepacking can change. Run from the test classpath:
 * {@code java -cp ... io.kvquant.demo.onnx.SharedWeightsBench MODEL_DIR [CHUNK] [ROUNDS] [THREADS]}.
 */
public final class SharedWeightsBench {

    private SharedWeightsBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        int chunk = args.length > 1 ? Integer.parseInt(args[1]) : 256;
        int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 7;
        int threads = args.length > 3 ? Integer.parseInt(args[3]) : 2;
        DecoderModel.Options opts = new DecoderModel.Options(threads, DecoderModel.Ep.CPU);
        Map<String, JavaAttentionModel> models = new LinkedHashMap<>();
        for (String mode : List.of("off", "copy", "shared")) {
            System.setProperty("kvq.engine.decodePieces", mode);
            models.put(mode, JavaAttentionModel.open(dir, opts));
        }
        System.clearProperty("kvq.engine.decodePieces");
        JavaAttentionModel off = models.get("off");
        JavaAttentionModel copy = models.get("copy");
        JavaAttentionModel shared = models.get("shared");
        if (copy.decode == null || shared.decode == null || shared.weights == null) {
            throw new IllegalStateException("the decode pieces were not built");
        }
        Map<String, List<Double>> ms = new LinkedHashMap<>();
        int reps = 5;
        for (int r = 0; r <= rounds; r++) {
            Map<String, Double> t = new LinkedHashMap<>();
            t.put("prompt chunk, prepacked (general, pieces off)", time(off, off.sessions, null, chunk, 1));
            t.put("prompt chunk, shared unpacked (general)", time(shared, shared.sessions, null, chunk, 1));
            t.put("decode step, prepacked (general, pieces off)", time(off, off.sessions, null, 1, reps));
            t.put("decode step, prepacked (one-token, copy)", time(copy, copy.decode.sessions, copy.decode.inputs, 1, reps));
            t.put("decode step, shared unpacked (one-token)", time(shared, shared.decode.sessions, shared.decode.inputs, 1,
                    reps));
            if (r > 0) { // round 0: warm-up
                t.forEach((k, v) -> ms.computeIfAbsent(k, x -> new ArrayList<>()).add(v));
            }
        }
        System.out.printf("%s, chunk %d, %d threads, %d rounds (ms per pass through all pieces: median / min)%n",
                dir.getFileName(), chunk, threads, rounds);
        ms.forEach((k, v) -> {
            List<Double> s = new ArrayList<>(v);
            s.sort(null);
            System.out.printf("  %-50s %8.2f / %8.2f%n", k, s.get(s.size() / 2), s.get(0));
        });
        for (JavaAttentionModel m : models.values()) {
            m.close();
        }
    }

    /** Milliseconds per pass of {@code len} tokens through {@code sessions} (mean of {@code reps}). */
    private static double time(JavaAttentionModel m, List<OrtSession> sessions, List<List<String>> inputs, int len, int reps)
            throws Exception {
        var env = DecoderModel.environment();
        long[][] ids = new long[1][len];
        long[][] mask = new long[1][len];
        for (int i = 0; i < len; i++) {
            ids[0][i] = i % 100;
            mask[0][i] = 1;
        }
        long total = 0;
        for (int rep = 0; rep < reps; rep++) {
            List<AutoCloseable> owned = new ArrayList<>();
            try {
                Map<String, OnnxTensor> avail = new HashMap<>();
                OnnxTensor idT = OnnxTensor.createTensor(env, ids);
                OnnxTensor maskT = OnnxTensor.createTensor(env, mask);
                owned.add(idT);
                owned.add(maskT);
                avail.put("input_ids", idT);
                avail.put("position_ids", idT);
                avail.put("attention_mask", maskT);
                long t0 = System.nanoTime();
                for (int s = 0; s < sessions.size(); s++) {
                    Map<String, OnnxTensor> in = new HashMap<>();
                    for (String name : inputs == null ? m.pieces.get(s).inputs() : inputs.get(s)) {
                        in.put(name, avail.get(name));
                    }
                    OrtSession.Result res = sessions.get(s).run(in);
                    owned.add(res);
                    for (String name : m.pieces.get(s).outputs()) {
                        OnnxValue v = res.get(name).orElseThrow();
                        avail.put(name, (OnnxTensor) v);
                    }
                    if (s < m.layers.size()) {
                        JavaAttentionModel.LayerInfo l = m.layers.get(s);
                        OnnxTensor out = DecodeSessions.zeroAttention(m, l, avail.get(l.query()), len);
                        owned.add(out);
                        avail.put(l.output(), out);
                    }
                }
                total += System.nanoTime() - t0;
            } finally {
                DecodeSessions.closeAll(owned);
            }
        }
        return total / 1e6 / reps;
    }
}
