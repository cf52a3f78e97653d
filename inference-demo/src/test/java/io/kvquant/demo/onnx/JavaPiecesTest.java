package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.graph.OnnxModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java decode step ({@link JavaPieces}, the engine's default for decode steps) against ONNX
 * Runtime's general pieces on every model form the engine takes: the same logits to float
 * rounding where it is built (same weights, same cache, same attention; only the dense layers'
 * arithmetic differs in summation order), and one line plus ONNX Runtime's pieces where the
 * pieces hold something it does not implement (fused attention operators, fp16).
 */
class JavaPiecesTest {

    static final DecoderModel.Options TWO = new DecoderModel.Options(2, DecoderModel.Ep.CPU);

    @Test
    void javaStepGivesOnnxRuntimesLogitsOnEveryModelItTakes(@TempDir Path tmp) throws Exception {
        List<Path> dirs = List.of(TestModel.dir(), TestModel.dir("kvq-gpt2"), EngineTest.fixture("tiny-gpt2"),
                EngineTest.fixture("mha-gpt"), GenAiFixtureTest.fixture("genai-llama", tmp),
                GenAiFixtureTest.fixture("genai-llama-fp16", tmp));
        int built = 0;
        for (Path dir : dirs) {
            String name = dir.getFileName().toString();
            for (DecoderModel.Options opts : List.of(EngineTest.ONE, TWO)) {
                try (JavaAttentionModel m = JavaAttentionModel.open(dir, opts);
                     KvCache a = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim());
                     KvCache b = KvCaches.create("full", m.layers(), m.kvHeads(), m.headDim())) {
                    JavaPieces js = m.javaStep;
                    boolean fused = m.layers.stream().anyMatch(l -> l.rotary() != null);
                    boolean fp16 = name.contains("fp16");
                    if (fused || fp16) {
                        assertNull(js, name + ": fused attention operators or fp16 weights are refused (ONNX Runtime decodes)");
                    } else {
                        assertNotNull(js, name + ": the Java decode step was built");
                        built++;
                    }
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
                        long t = EngineTest.argmax(ly);
                        m.javaStep = js;
                        lx = x.step(t);
                        m.javaStep = null;
                        ly = y.step(t);
                        m.javaStep = js;
                        double e = EngineTest.relErr(lx, ly);
                        worst = Math.max(worst, e);
                        assertTrue(e <= 1e-5, name + ", " + opts.threads() + " thread(s), step " + step
                                + ": Java step vs ONNX Runtime's pieces, relative logit error " + e);
                        assertEquals(EngineTest.argmax(ly), EngineTest.argmax(lx), name + ", step " + step + ": greedy token");
                    }
                    if (js != null) {
                        System.out.printf("java step vs ONNX Runtime, %s, %d thread(s): %d nodes per step, %d folded; worst "
                                + "relative logit error %.2e%n", name, opts.threads(), js.dynamicNodes, js.foldedNodes, worst);
                    }
                }
            }
        }
        assertEquals(3 * 2, built, "kvq-llama, kvq-gpt2 and tiny-gpt2, with one and two threads");
    }

    @Test
    void warmUpRunsAndEndsWithinItsBudget() throws Exception {
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), TWO)) {
            assertTrue(m.javaDecodeStep());
            double s = m.warmDecodeStep(io.kvquant.cache.KvQuantConfig.parse("turbo3.5"));
            assertTrue(s > 0 && s < JavaAttentionModel.WARM_BUDGET_S + 5, "seconds " + s);
        }
    }

    @Test
    void anOperatorItDoesNotImplementIsRefusedInOneLineNamingIt() throws Exception {
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            List<OnnxModel> models = pieces(m);
            // rename one node's operator in the last piece: Sigmoid becomes HardSigmoid
            swapSigmoid(models, "HardSigmoid", "");
            List<String> lines = new ArrayList<>();
            assertNull(JavaPieces.build(m, models, m.weights, 1, lines::add));
            assertEquals(1, lines.size(), lines.toString());
            assertTrue(lines.get(0).startsWith("kvquant: the engine's Java decode step cannot be built (operator HardSigmoid")
                    && lines.get(0).endsWith("; decoding with ONNX Runtime") && !lines.get(0).contains("\n"), lines.get(0));
            // an operator from another domain
            models = pieces(m);
            swapSigmoid(models, "Sigmoid", "com.microsoft");
            lines.clear();
            assertNull(JavaPieces.build(m, models, m.weights, 1, lines::add));
            assertTrue(lines.get(0).contains("operator com.microsoft:Sigmoid"), lines.get(0));
        }
    }

    @Test
    void aDifferenceFromOnnxRuntimeOnTheCheckStepIsRefused() throws Exception {
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            List<OnnxModel> models = pieces(m);
            // Sigmoid read as Tanh: a valid program that computes something else
            swapSigmoid(models, "Tanh", "");
            List<String> lines = new ArrayList<>();
            assertNull(JavaPieces.build(m, models, m.weights, 1, lines::add));
            assertEquals(1, lines.size(), lines.toString());
            assertTrue(lines.get(0).startsWith("kvquant: the engine's Java decode step differs from ONNX Runtime's pieces on "
                    + "a check step (") && lines.get(0).contains("relative difference"), lines.get(0));
        }
    }

    @Test
    void weightsOverTheLimitStayWithOnnxRuntimePrepacked() throws Exception {
        System.setProperty("kvq.engine.javaStepMaxMiB", "0");
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            assertNull(m.javaStep, "18 MB of weights over a 0 MiB limit");
            assertNull(m.weights, "ONNX Runtime loads (and prepacks) its own weights");
        } finally {
            System.clearProperty("kvq.engine.javaStepMaxMiB");
        }
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            List<OnnxModel> models = pieces(m);
            long bytes = JavaPieces.weightBytes(models);
            assertTrue(bytes > 16_000_000 && bytes < 20_000_000, "the bundled model's weights, each once: " + bytes);
            assertEquals(m.weights.bytes, bytes, "what SharedWeights holds");
        }
    }

    @Test
    void offKeepsOnnxRuntimesPiecesAndTheirPrepackedWeights() throws Exception {
        System.setProperty("kvq.engine.decodePieces", "off");
        try (JavaAttentionModel m = JavaAttentionModel.open(TestModel.dir(), EngineTest.ONE)) {
            assertNull(m.javaStep);
            assertNull(m.weights, "ONNX Runtime loads its own weights");
        } finally {
            System.clearProperty("kvq.engine.decodePieces");
        }
    }

    /** The engine's prepared pieces, read afresh (tests alter them). */
    private static List<OnnxModel> pieces(JavaAttentionModel m) throws java.io.IOException {
        List<OnnxModel> models = new ArrayList<>();
        for (int s = 0; s < m.pieces.size(); s++) {
            models.add(OnnxModel.read(m.preparedDir().resolve("piece-" + s + ".onnx")));
        }
        return models;
    }

    /** The last piece's first Sigmoid node as operator {@code op} of {@code domain}, all else as it was. */
    private static void swapSigmoid(List<OnnxModel> models, String op, String domain) {
        OnnxModel last = models.get(models.size() - 1);
        OnnxModel.Node n = last.nodes.stream().filter(x -> x.op().equals("Sigmoid")).findFirst().orElseThrow();
        last.nodes.set(n.index(), new OnnxModel.Node(n.index(), n.raw(), n.inputs(), n.outputs(), op, domain, n.name()));
    }
}
