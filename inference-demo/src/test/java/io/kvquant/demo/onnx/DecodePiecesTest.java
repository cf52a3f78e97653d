package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.graph.DecodePieces;
import io.kvquant.demo.graph.DecodePieces.Fixed;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.Pb;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The engine's one-token decode pieces ({@link DecodePieces}, {@link DecodeSessions}): the same
 * logits as the general pieces on every model form the engine takes, what the analysis proves
 * constant, and the fall-back when they cannot be built.
 */
class DecodePiecesTest {

    /** The one-token pieces are opt-in (docs/engine.md); these tests switch them on (ONNX Runtime's own weights). */
    @org.junit.jupiter.api.BeforeAll
    static void switchOn() {
        System.setProperty("kvq.engine.decodePieces", "on");
    }

    @org.junit.jupiter.api.AfterAll
    static void switchBack() {
        System.clearProperty("kvq.engine.decodePieces");
    }

    @Test
    void oneTokenPiecesGiveTheGeneralPiecesLogitsOnEveryModelForm(@TempDir Path tmp) throws Exception {
        // Same cache codec, same Java attention, same weights: only ONNX Runtime's graph differs
        // (shape plumbing folded, static shapes), so the logits agree to float rounding.
        List<Path> dirs = List.of(TestModel.dir(), TestModel.dir("kvq-gpt2"), EngineTest.fixture("tiny-gpt2"),
                EngineTest.fixture("mha-gpt"), GenAiFixtureTest.fixture("genai-llama", tmp),
                GenAiFixtureTest.fixture("genai-gptoss", tmp), GenAiFixtureTest.fixture("genai-llama-fp16", tmp));
        for (Path dir : dirs) {
            String name = dir.getFileName().toString();
            try (JavaAttentionModel m = JavaAttentionModel.open(dir, EngineTest.ONE);
                 KvCache a = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim());
                 KvCache b = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim())) {
                DecodeSessions one = m.decode;
                assertNotNull(one, name + ": the one-token pieces were built");
                long[] prompt = new long[24];
                for (int i = 0; i < prompt.length; i++) {
                    prompt[i] = (i * 37 + 5) % 200;
                }
                Decoder x = m.newDecoder(a, 8);
                Decoder y = m.newDecoder(b, 8);
                float[] lx = x.prefill(prompt, null);
                float[] ly = y.prefill(prompt, null);
                double worst = 0;
                for (int step = 0; step < 12; step++) {
                    long t = EngineTest.argmax(lx);
                    m.decode = one;
                    lx = x.step(t);
                    m.decode = null;
                    ly = y.step(t);
                    m.decode = one;
                    double e = EngineTest.relErr(lx, ly);
                    worst = Math.max(worst, e);
                    assertTrue(e <= 1e-5, name + ", step " + step + ": one-token vs general pieces, relative logit error " + e);
                }
                System.out.printf("one-token vs general pieces, %s: %d shape inputs made constant, %d given static shapes; "
                        + "worst relative logit error %.2e%n", name, one.constants, one.shaped, worst);
                if (name.equals("kvq-llama")) {
                    assertEquals(m.layers(), one.constants, "each layer piece's Reshape target crossing from the piece before");
                }
            }
        }
    }

    private static OnnxModel.Node node(String op, String domain, List<String> in, String out) {
        return new OnnxModel.Node(0, new Pb(), in, List.of(out), op, domain, op);
    }

    @Test
    void analysisMarksOnlyWhatOneTokenFixes() {
        Map<String, Fixed> f = new HashMap<>(Map.of("ids", Fixed.SHAPE, "mask", Fixed.NONE, "c", Fixed.VALUE,
                "x", Fixed.SHAPE));
        assertEquals(Fixed.VALUE, DecodePieces.of(node("Shape", "", List.of("ids"), "s"), f), "shape of [1, 1]");
        assertEquals(Fixed.NONE, DecodePieces.of(node("Shape", "", List.of("mask"), "s"), f), "mask grows with the past");
        f.put("s", Fixed.VALUE);
        assertEquals(Fixed.VALUE, DecodePieces.of(node("Concat", "", List.of("s", "c"), "t"), f));
        assertEquals(Fixed.SHAPE, DecodePieces.of(node("Reshape", "", List.of("x", "s"), "r"), f));
        assertEquals(Fixed.NONE, DecodePieces.of(node("Reshape", "", List.of("x", "x"), "r"), f),
                "a target computed from data is not a fixed shape");
        assertEquals(Fixed.SHAPE, DecodePieces.of(node("MatMul", "", List.of("x", "c"), "m"), f));
        assertEquals(Fixed.VALUE, DecodePieces.of(node("Range", "", List.of("c", "s", "c"), "g"), f));
        assertEquals(Fixed.NONE, DecodePieces.of(node("Range", "", List.of("c", "x", "c"), "g"), f));
        assertEquals(Fixed.NONE, DecodePieces.of(node("NonZero", "", List.of("c"), "n"), f), "not in the tables");
        assertEquals(Fixed.NONE, DecodePieces.of(node("Add", "com.microsoft", List.of("c", "c"), "n"), f),
                "another domain");
        assertEquals(Fixed.VALUE, DecodePieces.of(node("Constant", "", List.of(), "k"), f));
    }

    @Test
    void onRealPiecesTheCrossingShapeTensorsAreConstantAndTheRotaryTablesAreNot() throws Exception {
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            List<OnnxModel> pieces = new ArrayList<>();
            for (int s = 0; s < m.pieces.size(); s++) {
                pieces.add(OnnxModel.read(m.preparedDir().resolve("piece-" + s + ".onnx")));
            }
            Set<String> given = new HashSet<>(Set.of("input_ids", "position_ids"));
            m.layers.forEach(l -> given.add(l.output()));
            Map<String, Fixed> f = DecodePieces.analyse(pieces, given);
            int constants = 0;
            for (int s = 1; s < pieces.size(); s++) {
                for (String in : m.pieces.get(s).inputs()) {
                    int type = pieces.get(s).elemType(in);
                    if (type == OnnxModel.INT64) {
                        assertEquals(Fixed.VALUE, f.get(in), in);
                        constants++;
                    } else {
                        // the residual stream, cos/sin of the positions, attention outputs: data
                        assertEquals(Fixed.SHAPE, f.get(in), in);
                    }
                }
            }
            assertEquals(m.layers(), constants);
        }
    }

    @Test
    void fallsBackToTheGeneralPiecesWithOneLine() throws Exception {
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            // the pieces' files in the wrong order: piece 0's session cannot be fed
            List<Path> wrong = new ArrayList<>();
            for (int s = m.pieces.size() - 1; s >= 0; s--) {
                wrong.add(m.preparedDir().resolve("piece-" + s + ".onnx"));
            }
            List<String> lines = new ArrayList<>();
            var opts = EngineTest.ONE;
            List<ai.onnxruntime.OrtSession> general = new ArrayList<>(m.sessions);
            m.sessions.clear();
            for (int s = general.size() - 1; s >= 0; s--) {
                m.sessions.add(general.get(s));
            }
            try {
                assertNull(DecodeSessions.build(m, wrong, m.preparedDir(), opts, lines::add));
            } finally {
                m.sessions.clear();
                m.sessions.addAll(general);
            }
            assertEquals(1, lines.size(), lines.toString());
            assertTrue(lines.get(0).startsWith("kvquant: the engine's one-token pieces cannot be built (")
                    && lines.get(0).endsWith("; decoding with the general pieces") && !lines.get(0).contains("\n"),
                    lines.get(0));
            System.clearProperty("kvq.engine.decodePieces");
            try {
                lines.clear();
                assertNull(DecodeSessions.build(m, wrong, m.preparedDir(), opts, lines::add));
                assertTrue(lines.isEmpty(), "not switched on (the default): no line");
            } finally {
                System.setProperty("kvq.engine.decodePieces", "on");
            }
        }
    }
}
