package io.kvquant.demo.onnx;

import io.kvquant.demo.graph.OnnxModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The dense part of one decode step alone (attention outputs zeros), interleaved in one process:
 * ONNX Runtime's general pieces (five runs on the bundled model) against the Java decode step
 * ({@link JavaPieces}) with its helper thread and without. Prints median / min ms per step per
 * round. Run from the repository root after {@code mvn -DskipTests install}:
 * {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -cp
 * inference-demo/target/test-classes:inference-demo/target/classes:eval/target/lib/*
 * io.kvquant.demo.onnx.JavaStepBench models/kvq-llama ROUNDS STEPS}
 */
public final class JavaStepBench {
    private JavaStepBench() {
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("kvq.engine.decodePieces", "java");
        Path dir = Path.of(args[0]);
        int rounds = Integer.parseInt(args[1]);
        int steps = Integer.parseInt(args[2]);
        DecoderModel.Options opts = new DecoderModel.Options(2, DecoderModel.Ep.CPU);
        try (JavaAttentionModel m = JavaAttentionModel.open(dir, opts)) {
            if (m.javaStep == null) {
                throw new IllegalStateException("no Java decode step");
            }
            List<OnnxModel> models = new ArrayList<>();
            for (int s = 0; s < m.pieces.size(); s++) {
                models.add(OnnxModel.read(m.preparedDir().resolve("piece-" + s + ".onnx")));
            }
            JavaPieces single = JavaPieces.build(m, models, m.weights, 1, System.err::println);
            Map<String, float[]> zeros = new HashMap<>();
            JavaPieces.Attend att = (layer, q, k, v) -> zeros.computeIfAbsent(layer + "/" + q.length, x -> new float[q.length]);
            System.out.println("java step: " + m.javaStep.dynamicNodes + " nodes per step, " + m.javaStep.foldedNodes + " folded");
            String[] names = {"ort general pieces", "java 2 threads", "java 1 thread"};
            for (int r = 0; r < rounds; r++) {
                StringBuilder line = new StringBuilder("round " + r + ":");
                for (int variant = 0; variant < names.length; variant++) {
                    if (args.length > 3 && !names[variant].startsWith(args[3])) {
                        continue;
                    }
                    double[] t = new double[steps];
                    for (int s = 0; s < steps; s++) {
                        long t0 = System.nanoTime();
                        switch (variant) {
                            case 0 -> {
                                List<AutoCloseable> owned = new ArrayList<>();
                                DecodeSessions.probe(m, m.sessions, null, new HashMap<>(), owned);
                                DecodeSessions.closeAll(owned);
                            }
                            case 1 -> m.javaStep.step(s % 4000, 1000 + s, att);
                            default -> single.step(s % 4000, 1000 + s, att);
                        }
                        t[s] = (System.nanoTime() - t0) / 1e6;
                    }
                    Arrays.sort(t);
                    line.append(String.format(java.util.Locale.ROOT, "  %s %.3f / %.3f ms", names[variant], t[steps / 2], t[0]));
                    if (variant == 1) {
                        var mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
                        long a0 = mx.getCurrentThreadAllocatedBytes();
                        m.javaStep.step(1, 1000, att);
                        line.append(String.format(java.util.Locale.ROOT, " (%.0f KB allocated per step)",
                                (mx.getCurrentThreadAllocatedBytes() - a0) / 1024.0));
                    }
                }
                System.out.println(line);
            }
            single.close();
        }
    }
}
