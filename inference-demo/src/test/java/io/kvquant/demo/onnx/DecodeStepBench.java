package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Per-step wall time of the engine's decode steps, variants interleaved in one process so that a
 * shared machine's load hits them alike (docs/engine.md, "Per-token overhead"): the general
 * pieces, the one-token pieces with the engine's threads, and with one intra-op thread. Prints
 * min / p10 / median milliseconds per step per variant; the minimum and p10 are the figures that
 * survive a loaded machine. Not a test (no assertions); run from the test classpath:
 * {@code java -cp inference-demo/target/test-classes:inference-demo/target/classes:eval/target/lib/*
 * --add-modules jdk.incubator.vector io.kvquant.demo.onnx.DecodeStepBench MODEL_DIR PROMPT_FILE
 * CONTEXT ROUNDS STEPS [KV]}.
 */
public final class DecodeStepBench {

    private DecodeStepBench() {
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("kvq.engine.decodePieces", "on"); // opt-in in the product; the bench compares them
        Path dir = Path.of(args[0]);
        int context = Integer.parseInt(args[2]);
        int rounds = Integer.parseInt(args[3]);
        int steps = Integer.parseInt(args[4]);
        String kv = args.length > 5 ? args[5] : "turbo3.5";
        long[] prompt;
        try (TextTokenizer tok = TextTokenizer.open(dir)) {
            prompt = Arrays.copyOf(tok.encode(Files.readString(Path.of(args[1]))), context);
        }
        DecoderModel.Options opts = new DecoderModel.Options(2, DecoderModel.Ep.CPU);
        try (JavaAttentionModel m = JavaAttentionModel.open(dir, opts)) {
            Map<String, DecodeSessions> variants = new LinkedHashMap<>();
            variants.put("general", null);
            variants.put("one-token", m.decode);
            System.setProperty("kvq.engine.decodeThreads", "1");
            variants.put("one-token 1 thread", DecodeSessions.build(m, files(m), m.preparedDir(), opts, System.err::println));
            System.clearProperty("kvq.engine.decodeThreads");
            Map<String, List<Double>> times = new LinkedHashMap<>();
            List<Double> warm = new ArrayList<>(); // round 0, every variant in turn: the JIT's warm-up
            // ONNX Runtime alone: the five piece runs of one dummy step (zeros as attention outputs)
            Map<String, List<Double>> ort = new LinkedHashMap<>();
            Map<String, Double> cpuMs = new LinkedHashMap<>();
            for (int r = 0; r < rounds; r++) {
                for (Map.Entry<String, DecodeSessions> v : variants.entrySet()) {
                    List<Double> list = ort.computeIfAbsent(v.getKey(), k -> new ArrayList<>());
                    long c0 = cpu();
                    for (int s = 0; s < steps; s++) {
                        List<AutoCloseable> owned = new ArrayList<>();
                        long t0 = System.nanoTime();
                        DecodeSessions.probe(m, v.getValue() == null ? m.sessions : v.getValue().sessions,
                                v.getValue() == null ? null : v.getValue().inputs, new java.util.HashMap<>(), owned);
                        long t1 = System.nanoTime();
                        DecodeSessions.closeAll(owned);
                        if (r > 0) {
                            list.add((t1 - t0) / 1e6);
                        }
                    }
                    if (r > 0) {
                        cpuMs.merge(v.getKey(), (cpu() - c0) / 1e6 / steps / (rounds - 1), Double::sum);
                    }
                }
            }
            print("ONNX Runtime only (5 piece runs)", ort);
            cpuMs.forEach((k, c) -> System.out.printf("  %-20s process CPU %.3f ms/step%n", k, c));
            try (KvCache cache = KvCaches.create(kv, m.layers(), m.kvHeads(), m.headDim())) {
                Decoder d = m.newDecoder(cache, 256);
                float[] logits = d.prefill(prompt, null);
                long t = io.kvquant.demo.sampling.Sampler.argmax(logits);
                for (int r = 0; r < rounds; r++) {
                    for (Map.Entry<String, DecodeSessions> v : variants.entrySet()) {
                        m.decode = v.getValue();
                        List<Double> list = times.computeIfAbsent(v.getKey(), k -> new ArrayList<>());
                        for (int s = 0; s < steps; s++) {
                            long t0 = System.nanoTime();
                            logits = d.step(t);
                            long t1 = System.nanoTime();
                            if (r > 0) { // round 0 warms up
                                list.add((t1 - t0) / 1e6);
                            } else {
                                warm.add((t1 - t0) / 1e6);
                            }
                            t = io.kvquant.demo.sampling.Sampler.argmax(logits);
                        }
                    }
                }
            }
            StringBuilder w = new StringBuilder("first decode steps after the prefill, mean ms per 16 steps:");
            for (int i = 0; i + 16 <= warm.size(); i += 16) {
                w.append(String.format(" %.2f", warm.subList(i, i + 16).stream().mapToDouble(Double::doubleValue).sum() / 16));
            }
            System.out.println(w);
            print(String.format("decode steps, context %d, %s, %d rounds x %d steps per variant (first round left out)",
                    context, kv, rounds, steps), times);
            for (DecodeSessions v : variants.values()) {
                if (v != null) {
                    v.close();
                }
            }
            m.decode = null;
        }
    }

    /** The process's CPU time so far (all threads), ns. */
    private static long cpu() {
        return ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean()).getProcessCpuTime();
    }

    private static void print(String title, Map<String, List<Double>> times) {
        System.out.println(title);
        for (Map.Entry<String, List<Double>> e : times.entrySet()) {
            double[] a = e.getValue().stream().mapToDouble(Double::doubleValue).sorted().toArray();
            System.out.printf("  %-20s min %.3f  p10 %.3f  median %.3f ms/step%n", e.getKey(), a[0], a[a.length / 10],
                    a[a.length / 2]);
        }
    }

    private static List<Path> files(JavaAttentionModel m) {
        List<Path> f = new ArrayList<>();
        for (int s = 0; s < m.pieces.size(); s++) {
            f.add(m.preparedDir().resolve("piece-" + s + ".onnx"));
        }
        return f;
    }
}
