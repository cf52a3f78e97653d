package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.Pb;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The engine holds each piece's weights once ({@link SharedWeights}) for its general and its
 * one-token sessions: one tensor per distinct weight, every external initializer of every piece
 * given to ONNX Runtime from those tensors (ONNX Runtime reads none from the files), the same
 * logits as the engine without one-token pieces, and the switch between off (the default), the
 * copying form and the shared one.
 */
class SharedWeightsTest {

    @org.junit.jupiter.api.BeforeEach
    void switchOn() {
        System.setProperty("kvq.engine.decodePieces", "shared");
    }

    @org.junit.jupiter.api.AfterEach
    void switchBack() {
        System.clearProperty("kvq.engine.decodePieces");
    }

    /** location@offset+length of every initializer with external data in {@code piece}, by name. */
    private static Map<String, String> regions(OnnxModel piece) {
        Map<String, String> r = new HashMap<>();
        for (Map.Entry<String, byte[]> e : piece.initializers.entrySet()) {
            Pb t = Pb.parse(e.getValue());
            if (t.varint(14, 0) != 1) {
                continue;
            }
            String loc = "";
            String off = "0";
            String len = "";
            for (Pb.Field f : t.all(13)) {
                Pb kv = f.message();
                switch (kv.string(1, "")) {
                    case "location" -> loc = kv.string(2, "");
                    case "offset" -> off = kv.string(2, "0");
                    case "length" -> len = kv.string(2, "");
                    default -> {
                    }
                }
            }
            r.put(e.getKey(), Path.of(loc).normalize() + "@" + off + "+" + len);
        }
        return r;
    }

    private static List<Path> pieceFiles(JavaAttentionModel m) {
        List<Path> files = new ArrayList<>();
        for (int s = 0; s < m.pieces.size(); s++) {
            files.add(m.preparedDir().resolve("piece-" + s + ".onnx"));
        }
        return files;
    }

    @Test
    void oneTensorPerDistinctWeightGivenToBothSessionSets() throws Exception {
        for (Path dir : List.of(TestModel.dir(), TestModel.dir("kvq-gpt2"))) {
            String name = dir.getFileName().toString();
            try (JavaAttentionModel m = JavaAttentionModel.open(dir, EngineTest.ONE)) {
                assertNotNull(m.weights, name + ": shared weights");
                assertNotNull(m.decode, name + ": the one-token pieces on them");
                Set<String> distinct = new LinkedHashSet<>();
                int refs = 0;
                long bytes = 0;
                for (int s = 0; s < m.pieces.size(); s++) {
                    Map<String, String> r = regions(OnnxModel.read(pieceFiles(m).get(s)));
                    assertEquals(r.keySet(), m.weights.pieces.get(s).keySet(),
                            name + ", piece " + s + ": every initializer with external data, and only those, is shared");
                    for (Map.Entry<String, String> e : r.entrySet()) {
                        refs++;
                        if (distinct.add(e.getValue())) {
                            bytes += Long.parseLong(e.getValue().substring(e.getValue().lastIndexOf('+') + 1));
                        }
                        // the same region read by two pieces is the same tensor object
                        for (int t = 0; t < s; t++) {
                            Map<String, String> before = regions(OnnxModel.read(pieceFiles(m).get(t)));
                            for (Map.Entry<String, String> b : before.entrySet()) {
                                if (b.getValue().equals(e.getValue())) {
                                    assertSame(m.weights.pieces.get(t).get(b.getKey()), m.weights.pieces.get(s).get(e.getKey()));
                                }
                            }
                        }
                    }
                }
                assertTrue(refs > m.layers() * 4, name + ": the weights are external in the prepared pieces (" + refs + ")");
                assertEquals(distinct.size(), m.weights.tensors(), name + ": one OnnxTensor per distinct weight");
                assertEquals(refs, m.weights.references, name);
                assertEquals(bytes, m.weights.bytes, name + ": bytes held = the distinct weights' bytes");
                System.out.printf("shared weights, %s: %d tensors, %.1f MiB, %d initializer references, %d read into memory%n",
                        name, m.weights.tensors(), m.weights.bytes / 1048576.0, refs, m.weights.copied);
            }
        }
    }

    @Test
    void onnxRuntimeTakesEveryWeightFromTheSharedTensorsNotFromTheFile(@TempDir Path tmp) throws Exception {
        // The pieces copied beside a weight file of zeros (same name, same size): sessions given the
        // shared tensors compute exactly what the engine's sessions compute; without them ONNX
        // Runtime reads the zeros, and the outputs differ (so the check can fail).
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            List<Path> copies = new ArrayList<>();
            for (Path f : pieceFiles(m)) {
                Path c = tmp.resolve(f.getFileName());
                Files.copy(f, c);
                copies.add(c);
            }
            int zeroed = 0;
            try (var files = Files.list(m.preparedDir())) {
                for (Path f : files.filter(p -> p.getFileName().toString().startsWith("weights-")).toList()) {
                    Files.write(tmp.resolve(f.getFileName()), new byte[(int) Files.size(f)]);
                    zeroed++;
                }
            }
            assertTrue(zeroed > 0, "the preparation links its weight file(s)");
            Map<String, OnnxTensor> want = new HashMap<>();
            List<AutoCloseable> owned = new ArrayList<>();
            try {
                DecodeSessions.probe(m, m.sessions, null, want, owned);
                for (boolean shared : new boolean[] {true, false}) {
                    List<OrtSession> sessions = new ArrayList<>();
                    try {
                        for (int s = 0; s < copies.size(); s++) {
                            try (OrtSession.SessionOptions so = DecoderModel.sessionOptions(EngineTest.ONE)) {
                                if (shared) {
                                    m.weights.apply(so, s);
                                }
                                sessions.add(DecoderModel.environment().createSession(copies.get(s).toString(), so));
                            }
                        }
                        Map<String, OnnxTensor> got = new HashMap<>();
                        DecodeSessions.probe(m, sessions, null, got, owned);
                        double worst = 0;
                        for (Map.Entry<String, OnnxTensor> e : want.entrySet()) {
                            worst = Math.max(worst, DecodeSessions.relDiff(e.getValue(), got.get(e.getKey())));
                        }
                        if (shared) {
                            assertTrue(worst <= 1e-6, "with the shared tensors: every piece output as the engine's, worst "
                                    + worst);
                        } else {
                            assertTrue(!(worst <= 1e-2), "reading the zeroed file: the outputs differ, worst " + worst);
                        }
                    } finally {
                        for (OrtSession s : sessions) {
                            s.close();
                        }
                    }
                }
            } finally {
                DecodeSessions.closeAll(owned);
            }
        }
    }

    @Test
    void weightsThatAreNotThereAreRefusedNamingTheInitializer(@TempDir Path tmp) throws Exception {
        // a weight file shorter than the pieces say: refused in one message, nothing left open
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            try (var files = Files.list(m.preparedDir())) {
                for (Path f : files.filter(p -> p.getFileName().toString().startsWith("weights-")).toList()) {
                    Files.write(tmp.resolve(f.getFileName()), new byte[(int) Files.size(f) / 2]);
                }
            }
            List<OnnxModel> models = new ArrayList<>();
            for (Path f : pieceFiles(m)) {
                Files.copy(f, tmp.resolve(f.getFileName()));
                models.add(OnnxModel.read(tmp.resolve(f.getFileName())));
            }
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> SharedWeights.load(models));
            assertTrue(e.getMessage().startsWith("initializer ") && e.getMessage().contains("lie outside"), e.getMessage());
        }
    }

    @Test
    void sharedPiecesGiveTheLogitsOfTheEngineWithoutThem() throws Exception {
        // Same weights, same cache codec; only ONNX Runtime's MatMul layout (unpacked) and the
        // one-token graph differ: float rounding, within the engine parity bound (1e-4 relative).
        long[] prompt = new long[40];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = (i * 53 + 7) % 250;
        }
        for (Path dir : List.of(TestModel.dir(), TestModel.dir("kvq-gpt2"))) {
            String name = dir.getFileName().toString();
            System.setProperty("kvq.engine.decodePieces", "off");
            JavaAttentionModel plain = JavaAttentionModel.open(dir, EngineTest.ONE);
            System.setProperty("kvq.engine.decodePieces", "shared");
            try (plain; JavaAttentionModel m = JavaAttentionModel.open(dir, EngineTest.ONE);
                 io.kvquant.cache.KvCache a = io.kvquant.cache.KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim());
                 io.kvquant.cache.KvCache b = io.kvquant.cache.KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim())) {
                assertNotNull(m.weights);
                assertNotNull(m.decode);
                assertNull(plain.decode);
                Decoder x = m.newDecoder(a, 16);
                Decoder y = plain.newDecoder(b, 16);
                float[] lx = x.prefill(prompt, null);
                float[] ly = y.prefill(prompt, null);
                double worst = EngineTest.relErr(lx, ly);
                for (int step = 0; step < 12; step++) {
                    long t = EngineTest.argmax(ly);
                    lx = x.step(t);
                    ly = y.step(t);
                    worst = Math.max(worst, EngineTest.relErr(lx, ly));
                }
                assertTrue(worst <= 1e-4, name + ": shared one-token pieces vs the general pieces alone, relative logit error "
                        + worst);
                System.out.printf("shared pieces vs engine without them, %s: worst relative logit error %.2e%n", name, worst);
            }
        }
    }

    @Test
    void theSwitchSelectsOffOnCopyOrShared() throws Exception {
        for (String mode : new String[] {null, "java", "off", "on", "copy", "shared"}) {
            if (mode == null) {
                System.clearProperty("kvq.engine.decodePieces");
            } else {
                System.setProperty("kvq.engine.decodePieces", mode);
            }
            try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
                boolean java = mode == null || mode.equals("java"); // the default: the Java decode step
                boolean pieces = !java && !mode.equals("off");
                assertEquals(pieces, m.decode != null, mode + ": one-token pieces");
                assertEquals(java, m.javaStep != null, mode + ": the Java decode step");
                assertEquals(java || "shared".equals(mode), m.weights != null,
                        mode + ": weights held by kvquant when shared or read by the Java step (else ONNX Runtime loads "
                                + "and prepacks them)");
            }
        }
    }
}
