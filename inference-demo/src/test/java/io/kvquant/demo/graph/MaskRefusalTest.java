package io.kvquant.demo.graph;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.ScoreMods;
import io.kvquant.demo.graph.OnnxModel.Node;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Zero silent drops: every pattern between the attention scores and Softmax other than the causal
 * mask is refused with one line naming the node. Each test graph is the tiny GPT-2 fixture
 * (causal mask by Where, padding mask by Add) with a pattern from a real architecture spliced in
 * before layer 0's Softmax, built here with {@link Pb}.
 */
class MaskRefusalTest {

    static OnnxModel fixture() throws IOException {
        try (InputStream in = MaskRefusalTest.class.getResourceAsStream("/tiny-gpt2/model.onnx")) {
            // initializers read from it are referenced, not copied: it must outlive the test
            Path tmp = Files.createTempFile("tiny-gpt2", ".onnx");
            tmp.toFile().deleteOnExit();
            Files.write(tmp, in.readAllBytes());
            return OnnxModel.read(tmp);
        }
    }

    static Pb node(String name, String op, List<String> ins, String out, Pb... attrs) {
        Pb n = new Pb();
        for (String i : ins) {
            n.add(1, i);
        }
        n.add(2, out).add(3, name).add(4, op);
        for (Pb a : attrs) {
            n.add(5, a);
        }
        return n;
    }

    static Pb intAttr(String name, long v) {
        return new Pb().add(1, name).addVarint(3, v).addVarint(20, 2);
    }

    static Pb floatTensor(String name, float v) {
        byte[] b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(v).array();
        return new Pb().addVarint(2, OnnxModel.FLOAT).add(8, name).add(9, b);
    }

    static Pb longTensor(String name, long... v) {
        ByteBuffer b = ByteBuffer.allocate(8 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long x : v) {
            b.putLong(x);
        }
        Pb t = new Pb();
        if (v.length > 1) {
            t.addVarint(1, v.length);
        }
        return t.addVarint(2, OnnxModel.INT64).add(8, name).add(9, b.array());
    }

    static Pb boolTensor(String name, boolean v) {
        return new Pb().addVarint(2, OnnxModel.BOOL).add(8, name).add(9, new byte[] {(byte) (v ? 1 : 0)});
    }

    /**
     * The fixture with {@code nodes} inserted before layer 0's Softmax, which then reads {@code newInput};
     * {@code scores} is replaced by the name of the tensor Softmax read before.
     */
    static OnnxModel splice(OnnxModel m, List<Pb> nodes, List<Pb> inits, String newInput, Path dir) throws IOException {
        return splice(m, nodes, inits, newInput, List.of(), null, dir);
    }

    /**
     * As above, and {@code after} inserted after layer 0's Softmax (reading its output as
     * "PROBS"), whose consumers then read {@code newProbs}.
     */
    static OnnxModel splice(OnnxModel m, List<Pb> nodes, List<Pb> inits, String newInput, List<Pb> after, String newProbs,
                            Path dir) throws IOException {
        Node softmax = m.nodes.stream().filter(n -> n.op().equals("Softmax")).findFirst().orElseThrow();
        String scores = softmax.inputs().get(0);
        String probs = softmax.outputs().get(0);
        Pb g = m.graph.without(1, 5);
        List<Pb.Field> fields = new ArrayList<>();
        for (Node n : m.nodes) {
            if (n == softmax) {
                for (Pb p : nodes) {
                    fields.add(new Pb.Field(1, 2, 0, rename(p, "SCORES", scores).toBytes()));
                }
                fields.add(new Pb.Field(1, 2, 0, rename(n.raw(), scores, newInput).toBytes()));
                for (Pb p : after) {
                    fields.add(new Pb.Field(1, 2, 0, rename(p, "PROBS", probs).toBytes()));
                }
            } else {
                fields.add(new Pb.Field(1, 2, 0, (newProbs == null ? n.raw() : rename(n.raw(), probs, newProbs)).toBytes()));
            }
        }
        for (byte[] t : m.initializers.values()) {
            fields.add(new Pb.Field(5, 2, 0, t));
        }
        for (Pb t : inits) {
            fields.add(new Pb.Field(5, 2, 0, t.toBytes()));
        }
        fields.addAll(g.fields);
        Path f = dir.resolve("spliced.onnx");
        Files.write(f, m.model.without(7).add(7, new Pb(fields)).toBytes());
        return OnnxModel.read(f);
    }

    /** A node with input {@code from} renamed to {@code to}. */
    static Pb rename(Pb node, String from, String to) {
        List<Pb.Field> r = new ArrayList<>();
        for (Pb.Field f : node.fields) {
            r.add(f.number() == 1 && f.string().equals(from) ? new Pb.Field(1, 2, 0, to.getBytes()) : f);
        }
        return new Pb(r);
    }

    static String refusal(OnnxModel m) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> AttentionSplit.of(m, 256));
        assertEquals(-1, e.getMessage().indexOf('\n'), "one line: " + e.getMessage());
        return e.getMessage();
    }

    static final String LAYER0 = " between the attention scores and Softmax of layer 0";

    @Test
    void theFixturesCausalMaskIsRecognized() throws IOException {
        AttentionSplit s = AttentionSplit.of(fixture(), 256);
        assertEquals(2, s.layers.size());
    }

    /** Positions from the attention mask's running count, as Bloom/MPT-style ALiBi builds them. */
    static List<Pb> keyPositions() {
        return List.of(
                node("am_float", "Cast", List.of("attention_mask"), "am_f", intAttr("to", OnnxModel.FLOAT)),
                node("am_cumsum", "CumSum", List.of("am_f", "axis1"), "am_count"),
                node("key_pos", "Sub", List.of("am_count", "one"), "kpos"),
                node("key_pos4", "Unsqueeze", List.of("kpos", "axes12"), "kpos4"));
    }

    static List<Pb> commonInits() {
        return List.of(longTensor("axis1", 1), floatTensor("one", 1f), longTensor("axes12", 1, 2), longTensor("axes13", 1, 3));
    }

    @Test
    void alibiWithoutAHeadsDimensionIsRefusedNamingTheAdd(@TempDir Path tmp) throws IOException {
        List<Pb> nodes = new ArrayList<>(keyPositions());
        nodes.add(node("alibi_slope", "Mul", List.of("kpos4", "slope"), "alibi"));
        nodes.add(node("alibi_add", "Add", List.of("SCORES", "alibi"), "biased"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.add(floatTensor("slope", 0.5f));
        String msg = refusal(splice(fixture(), nodes, inits, "biased", tmp));
        assertTrue(msg.startsWith("node 'alibi_add' (Add)" + LAYER0 + " is not a causal mask kvquant recognizes: it adds "
                + "0.5 x key position to every head alike (ALiBi without a heads dimension?)"), msg);
    }

    /** A [1, 2, 1, 1] float tensor: one value per head of the fixture. */
    static Pb perHead(String name, float a, float b) {
        byte[] raw = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putFloat(a).putFloat(b).array();
        return new Pb().addVarint(1, 1).addVarint(1, 2).addVarint(1, 1).addVarint(1, 1).addVarint(2, OnnxModel.FLOAT)
                .add(8, name).add(9, raw);
    }

    /**
     * Bloom/MPT-style ALiBi on layer 0: slopes [0.5, 0.25] x key position added to the scores, then
     * the scores multiplied by 2 (so the effective slopes are [1, 0.5]: scalings after the Add
     * scale the bias too).
     */
    static OnnxModel alibi(Path tmp) throws IOException {
        List<Pb> nodes = new ArrayList<>(keyPositions());
        nodes.add(node("alibi_slope", "Mul", List.of("kpos4", "slopes"), "alibi"));
        nodes.add(node("alibi_add", "Add", List.of("SCORES", "alibi"), "biased"));
        nodes.add(node("times_two", "Mul", List.of("biased", "two"), "doubled"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.add(perHead("slopes", 0.5f, 0.25f));
        inits.add(floatTensor("two", 2f));
        return splice(fixture(), nodes, inits, "doubled", tmp);
    }

    @Test
    void alibiSlopesPerHeadAreProvedAndKept(@TempDir Path tmp) throws IOException {
        AttentionSplit s = AttentionSplit.of(alibi(tmp), 256);
        float[] slopes = s.mods(0).slopes();
        assertEquals(2, slopes.length);
        assertEquals(1f, slopes[0], 1e-6f);
        assertEquals(0.5f, slopes[1], 1e-6f);
        assertEquals(0, s.mods(0).window());
        assertEquals(ScoreMods.NONE, s.mods(1));
    }

    @Test
    void aNonLinearBiasIsRefusedNamingTheAdd(@TempDir Path tmp) throws IOException {
        // slopes x position^2: per head, but not linear in the key position
        List<Pb> nodes = new ArrayList<>(keyPositions());
        nodes.add(node("square", "Mul", List.of("kpos4", "kpos4"), "k2"));
        nodes.add(node("bias_slope", "Mul", List.of("k2", "slopes"), "quad"));
        nodes.add(node("quad_add", "Add", List.of("SCORES", "quad"), "biased"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.add(perHead("slopes", 0.5f, 0.25f));
        String msg = refusal(splice(fixture(), nodes, inits, "biased", tmp));
        assertTrue(msg.startsWith("node 'quad_add' (Add)" + LAYER0 + " is not a causal mask kvquant recognizes: it adds "),
                msg);
        assertTrue(msg.contains("not a bias linear in the key position"), msg);
    }

    /** bool [1,1,n,total]: key more than 3 positions behind the query (a Mistral-style window of 4). */
    static List<Pb> outsideWindow() {
        List<Pb> nodes = new ArrayList<>(keyPositions());
        nodes.add(node("q_float", "Cast", List.of("position_ids"), "qpos", intAttr("to", OnnxModel.FLOAT)));
        nodes.add(node("q_pos4", "Unsqueeze", List.of("qpos", "axes13"), "qpos4"));
        nodes.add(node("distance", "Sub", List.of("qpos4", "kpos4"), "dist"));
        nodes.add(node("outside", "Greater", List.of("dist", "window"), "far"));
        return nodes;
    }

    /** Layer 0 masked to a window of {@code window} keys by an added -1e9 bias; layer 1 plain causal. */
    static OnnxModel windowAsAdd(Path tmp, float distance) throws IOException {
        List<Pb> nodes = new ArrayList<>(outsideWindow());
        nodes.add(node("window_bias", "Where", List.of("far", "neg", "zero"), "wbias"));
        nodes.add(node("window_add", "Add", List.of("SCORES", "wbias"), "windowed"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.addAll(List.of(floatTensor("window", distance), floatTensor("neg", -1e9f), floatTensor("zero", 0f)));
        return splice(fixture(), nodes, inits, "windowed", tmp);
    }

    @Test
    void slidingWindowAsAnAddedMaskIsProvedAndKept(@TempDir Path tmp) throws IOException {
        // keys more than 3 positions behind are masked: query p sees (p - 4, p], a window of 4
        AttentionSplit s = AttentionSplit.of(windowAsAdd(tmp, 3f), 256);
        assertEquals(ScoreMods.of(4, 0f, null, null), s.mods(0));
        assertEquals(ScoreMods.NONE, s.mods(1));
    }

    /**
     * The engine on the windowed graph (window 4 on layer 0) with a full cache equals ONNX Runtime
     * running the whole graph (round-trip mode with a full cache: the exact past every step) over
     * a 40-token prompt, prefilled in chunks of 16, and 16 steps: the window really cuts.
     */
    @Test
    void slidingWindowInAPlainGraphRunsInTheEngine(@TempDir Path tmp) throws Exception {
        windowAsAdd(tmp, 3f);
        engineEqualsOnnxRuntime(tmp, "a window of 4 on layer 0");
    }

    /** The same with ALiBi slopes [0.5, 0.25] on layer 0. */
    @Test
    void alibiInAPlainGraphRunsInTheEngine(@TempDir Path tmp) throws Exception {
        alibi(tmp);
        engineEqualsOnnxRuntime(tmp, "ALiBi on layer 0");
    }

    /** tmp/spliced.onnx in the engine vs ONNX Runtime on the whole graph, and against the unspliced fixture. */
    static void engineEqualsOnnxRuntime(Path tmp, String what) throws Exception {
        Path dir = tmp.resolve("model");
        Files.createDirectories(dir);
        // the splice references the fixture's weights by absolute path: inline them
        Files.write(dir.resolve("model.onnx"), OnnxModel.inlined(Files.readAllBytes(tmp.resolve("spliced.onnx")), 1L << 30));
        try (InputStream in = MaskRefusalTest.class.getResourceAsStream("/tiny-gpt2/config.json")) {
            Files.write(dir.resolve("config.json"), in.readAllBytes());
        }
        io.kvquant.demo.onnx.JavaAttentionModel.prepare(dir);
        io.kvquant.demo.onnx.DecoderModel.Options o = new io.kvquant.demo.onnx.DecoderModel.Options(1,
                io.kvquant.demo.onnx.DecoderModel.Ep.CPU);
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(5);
        long[] prompt = new long[40];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = rnd.nextInt(256);
        }
        try (io.kvquant.demo.onnx.DecoderModel plain = io.kvquant.demo.onnx.DecoderModel.open(dir, o);
             io.kvquant.demo.onnx.JavaAttentionModel split = io.kvquant.demo.onnx.JavaAttentionModel.open(dir, o);
             io.kvquant.cache.KvCache a = io.kvquant.cache.KvCaches.create("full", plain.layers(), plain.kvHeads(),
                     plain.headDim());
             io.kvquant.cache.KvCache b = io.kvquant.cache.KvCaches.create("full", split.layers(), split.kvHeads(),
                     split.headDim())) {
            io.kvquant.demo.onnx.Decoder x = plain.newDecoder(a, 16);
            io.kvquant.demo.onnx.Decoder y = split.newDecoder(b, 16);
            float[] lx = x.prefill(prompt, null);
            float[] ly = y.prefill(prompt, null);
            double worst = 0;
            for (int step = 0; step <= 16; step++) {
                double diff = 0;
                double max = 0;
                for (int k = 0; k < lx.length; k++) {
                    diff = Math.max(diff, Math.abs(lx[k] - ly[k]));
                    max = Math.max(max, Math.abs(lx[k]));
                }
                worst = Math.max(worst, diff / max);
                if (step < 16) {
                    long t = rnd.nextInt(256);
                    lx = x.step(t);
                    ly = y.step(t);
                }
            }
            System.out.printf("plain graph with %s: engine vs ONNX Runtime, worst max|diff|/max|logit| %.2e%n", what, worst);
            assertTrue(worst < 1e-4, "max|diff|/max|logit| " + worst);
        }
        // control: the same weights without the window give other logits after this prompt
        Path unwindowed = tmp.resolve("unwindowed");
        Files.createDirectories(unwindowed);
        for (String f : new String[] {"model.onnx", "config.json"}) {
            try (InputStream in = MaskRefusalTest.class.getResourceAsStream("/tiny-gpt2/" + f)) {
                Files.write(unwindowed.resolve(f), in.readAllBytes());
            }
        }
        try (io.kvquant.demo.onnx.DecoderModel plain = io.kvquant.demo.onnx.DecoderModel.open(dir, o);
             io.kvquant.demo.onnx.DecoderModel base = io.kvquant.demo.onnx.DecoderModel.open(unwindowed, o);
             io.kvquant.cache.KvCache a = io.kvquant.cache.KvCaches.create("full", plain.layers(), plain.kvHeads(),
                     plain.headDim());
             io.kvquant.cache.KvCache b = io.kvquant.cache.KvCaches.create("full", base.layers(), base.kvHeads(),
                     base.headDim())) {
            float[] lx = plain.newDecoder(a, 16).prefill(prompt, null);
            float[] lb = base.newDecoder(b, 16).prefill(prompt, null);
            double diff = 0;
            double max = 0;
            for (int k = 0; k < lx.length; k++) {
                diff = Math.max(diff, Math.abs(lx[k] - lb[k]));
                max = Math.max(max, Math.abs(lx[k]));
            }
            assertTrue(diff / max > 1e-2, what + " changes the logits by only " + diff / max);
        }
    }

    @Test
    void slidingWindowAsAWhereIsProvedAndKept(@TempDir Path tmp) throws IOException {
        List<Pb> nodes = new ArrayList<>(outsideWindow());
        nodes.add(node("window_where", "Where", List.of("far", "neg", "SCORES"), "windowed"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.addAll(List.of(floatTensor("window", 100f), floatTensor("neg", -1e4f)));
        AttentionSplit s = AttentionSplit.of(splice(fixture(), nodes, inits, "windowed", tmp), 256);
        assertEquals(ScoreMods.of(101, 0f, null, null), s.mods(0));
        assertEquals(ScoreMods.NONE, s.mods(1));
    }

    @Test
    void maskingAVisibleKeyThatIsNotAWindowIsRefused(@TempDir Path tmp) throws IOException {
        // key 1 masked for every query (keys 0 and 2.. visible): no sliding window does that
        List<Pb> nodes = new ArrayList<>(keyPositions());
        nodes.add(node("is_key1", "Equal", List.of("kpos4", "one"), "k1"));
        nodes.add(node("key1_where", "Where", List.of("k1", "neg", "SCORES"), "holed"));
        List<Pb> inits = new ArrayList<>(commonInits());
        inits.add(floatTensor("neg", -1e4f));
        String msg = refusal(splice(fixture(), nodes, inits, "holed", tmp));
        assertTrue(msg.startsWith("node 'key1_where' (Where)" + LAYER0 + " is not a causal mask or sliding window kvquant "
                + "recognizes: it masks visible key 1 for query 1 but not key 0"), msg);
    }

    @Test
    void logitSoftcapIsRefusedNamingTheTanh(@TempDir Path tmp) throws IOException {
        List<Pb> nodes = List.of(node("softcap_div", "Div", List.of("SCORES", "cap"), "s1"),
                node("softcap_tanh", "Tanh", List.of("s1"), "s2"),
                node("softcap_mul", "Mul", List.of("s2", "cap"), "capped"));
        String msg = refusal(splice(fixture(), nodes, List.of(floatTensor("cap", 50f)), "capped", tmp));
        assertEquals("node 'softcap_tanh' (Tanh)" + LAYER0 + " is logit softcapping, which kvquant's attention does not "
                + "support in this graph form", msg);
    }

    @Test
    void attentionSinksAreRefusedNamingTheConcat(@TempDir Path tmp) throws IOException {
        List<Pb> nodes = List.of(node("sinks_concat", "Concat", List.of("SCORES", "sink"), "with_sink",
                intAttr("axis", -1)));
        String msg = refusal(splice(fixture(), nodes, List.of(floatTensor("sink", 0f)), "with_sink", tmp));
        assertEquals("node 'sinks_concat' (Concat)" + LAYER0 + " extends the scores (attention sinks?) but no Slice drops "
                + "the extra column before the MatMul with the values; not supported", msg);
    }

    /** A [1] int64 tensor. */
    static Pb long1(String name, long v) {
        return new Pb().addVarint(1, 1).addVarint(2, OnnxModel.INT64).add(8, name)
                .add(9, ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
    }

    /** A [2] float tensor: one sink logit per head of the fixture. */
    static Pb sinkLogits(String name, float a, float b) {
        byte[] raw = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putFloat(a).putFloat(b).array();
        return new Pb().addVarint(1, 2).addVarint(2, OnnxModel.FLOAT).add(8, name).add(9, raw);
    }

    /**
     * gpt-oss-style attention sinks on layer 0: sinks [2] reshaped to [1, 2, 1, 1], expanded to
     * the queries' [1, heads, n, 1], concatenated onto the scores, Softmax, then the last column
     * sliced off before the MatMul with the values.
     */
    static OnnxModel sinks(Path tmp, long sliceEnd) throws IOException {
        return sinks(tmp, sliceEnd, false);
    }

    /** As above; with {@code alibi}, ALiBi slopes [0.5, 0.25] x key position are added before the Concat. */
    static OnnxModel sinks(Path tmp, long sliceEnd, boolean alibi) throws IOException {
        OnnxModel m = fixture();
        String query = AttentionSplit.of(m, 256).layers.get(0).query();
        List<Pb> nodes = new ArrayList<>();
        List<Pb> inits = new ArrayList<>();
        String scores = "SCORES";
        if (alibi) {
            nodes.addAll(keyPositions());
            nodes.add(node("alibi_slope", "Mul", List.of("kpos4", "slopes"), "alibi"));
            nodes.add(node("alibi_add", "Add", List.of("SCORES", "alibi"), "biased"));
            inits.addAll(commonInits());
            inits.add(perHead("slopes", 0.5f, 0.25f));
            scores = "biased";
        }
        nodes.addAll(List.of(
                node("sinks_reshape", "Reshape", List.of("sink_logits", "shape1h11"), "sinks4"),
                node("q_shape", "Shape", List.of(query), "qshape"),
                node("q_shape3", "Slice", List.of("qshape", "zero1", "three1"), "qshape3"),
                node("sink_shape", "Concat", List.of("qshape3", "one1"), "sinkshape", intAttr("axis", 0)),
                node("sinks_expand", "Expand", List.of("sinks4", "sinkshape"), "sinksx"),
                node("sinks_concat", "Concat", List.of(scores, "sinksx"), "with_sinks", intAttr("axis", -1))));
        List<Pb> after = List.of(node("drop_sinks", "Slice", List.of("PROBS", "zero1", "minus1", "minus1"), "probs"));
        inits.addAll(List.of(sinkLogits("sink_logits", 4f, 2.5f), longTensor("shape1h11", 1, -1, 1, 1),
                long1("zero1", 0), long1("three1", 3), long1("one1", 1), long1("minus1", sliceEnd)));
        return splice(m, nodes, inits, "with_sinks", after, "probs", tmp);
    }

    @Test
    void attentionSinksAreProvedAndKept(@TempDir Path tmp) throws IOException {
        AttentionSplit s = AttentionSplit.of(sinks(tmp, -1), 256);
        assertEquals(ScoreMods.of(0, 0f, null, new float[] {4f, 2.5f}), s.mods(0));
        assertEquals(ScoreMods.NONE, s.mods(1));
    }

    @Test
    void attentionSinksInAPlainGraphRunInTheEngine(@TempDir Path tmp) throws Exception {
        sinks(tmp, -1);
        engineEqualsOnnxRuntime(tmp, "attention sinks on layer 0");
    }

    @Test
    void attentionSinksWithAlibiAreRefused(@TempDir Path tmp) throws IOException {
        assertEquals("node 'sinks_concat' (Concat) of layer 0: attention sinks together with ALiBi are not supported in "
                + "this graph form", refusal(sinks(tmp, -1, true)));
    }

    @Test
    void aSliceThatKeepsTheSinksColumnIsRefused(@TempDir Path tmp) throws IOException {
        String msg = refusal(sinks(tmp, -2));
        assertTrue(msg.startsWith("layer 0: the Slice 'drop_sinks' after Softmax does not drop exactly the attention "
                + "sinks' last column"), msg);
    }

    @Test
    void anAddedConstantBiasIsRefused(@TempDir Path tmp) throws IOException {
        List<Pb> nodes = List.of(node("const_bias", "Add", List.of("SCORES", "b"), "biased"));
        String msg = refusal(splice(fixture(), nodes, List.of(floatTensor("b", 0.25f)), "biased", tmp));
        assertTrue(msg.startsWith("node 'const_bias' (Add)" + LAYER0 + " is not a causal mask kvquant recognizes: it adds "
                + "0.25 to the score of visible key 0"), msg);
    }

    @Test
    void aGraphWithoutCausalMaskingIsRefused(@TempDir Path tmp) throws IOException {
        // the fixture's causal Where reads an all-true condition: padding only, every key visible
        OnnxModel m = fixture();
        Node where = m.nodes.stream().filter(n -> n.op().equals("Where")).findFirst().orElseThrow();
        String cond = where.inputs().get(0);
        Pb g = m.graph.without(1, 5);
        List<Pb.Field> fields = new ArrayList<>();
        for (Node n : m.nodes) {
            fields.add(new Pb.Field(1, 2, 0, (n == where ? rename(n.raw(), cond, "all_true") : n.raw()).toBytes()));
        }
        for (byte[] t : m.initializers.values()) {
            fields.add(new Pb.Field(5, 2, 0, t));
        }
        fields.add(new Pb.Field(5, 2, 0, boolTensor("all_true", true).toBytes()));
        fields.addAll(g.fields);
        Path f = tmp.resolve("noncausal.onnx");
        Files.write(f, m.model.without(7).add(7, new Pb(fields)).toBytes());
        String msg = refusal(OnnxModel.read(f));
        assertTrue(msg.startsWith("layer 0: the mask between the attention scores and Softmax ('" + where.name() + "', "),
                msg);
        assertTrue(msg.contains("leaves future key"), msg);
    }
}
