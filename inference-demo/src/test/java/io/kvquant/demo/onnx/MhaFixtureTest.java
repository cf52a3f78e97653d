package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.graph.AttentionSplit;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.OrtQuantKv;
import io.kvquant.demo.graph.Pb;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A decoder whose self-attention is com.microsoft MultiHeadAttention with past
 * (models/scripts/make_mha_fixture.py: the operator's bias input and key_padding_mask on layer 0,
 * scale and mask_filter_value on layer 1): the engine with a lossless cache equals ONNX Runtime on
 * the unsplit graph over a prompt and 16 steps; turbo3.5 (its codec alone, window=0) stays within a
 * bounded logit error;
 * what kvquant does not implement is refused by name.
 */
class MhaFixtureTest {

    static final String NODE0 = "node '/layers.0/attn/MultiHeadAttention' (com.microsoft::MultiHeadAttention) of layer 0: ";

    static Path fixture(Path tmp) throws Exception {
        Path src = Path.of(MhaFixtureTest.class.getResource("/mha-gpt/model.onnx").toURI()).getParent();
        Path dir = tmp.resolve("mha-gpt");
        Files.createDirectories(dir);
        for (String f : new String[] {"model.onnx", "config.json"}) {
            Files.copy(src.resolve(f), dir.resolve(f));
        }
        return dir;
    }

    /**
     * ONNX Runtime (reference: the unsplit graph, prompt in one run, present fed back as past)
     * against the engine (prompt in chunks of 16: MultiHeadAttention's past + several new tokens).
     */
    @Test
    void engineMatchesOnnxRuntimeOnTheUnsplitGraph(@TempDir Path tmp) throws Exception {
        System.setProperty(PreparedModels.PROPERTY, tmp.resolve("cache").toString());
        Path dir = fixture(tmp);
        JavaAttentionModel.prepare(dir);
        DecoderModel.Options opts = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
        long[] prompt = new long[40];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = (i * 37 + 5) % 250;
        }
        try (JavaAttentionModel split = JavaAttentionModel.open(dir, opts);
             OrtBaseline ort = OrtBaseline.open(dir, opts, OrtQuantKv.Setting.ORT, null);
             DecodeAttention attention = new DecodeAttention(1)) {
            assertEquals(2, split.layers());
            assertEquals(4, split.kvHeads());
            assertEquals(16, split.headDim());
            // turbo3.5 without its 64-token fp32 window: at 56 tokens the window would hold them all
            for (String kv : new String[] {"full", "turbo3.5,window=0"}) {
                try (PlainOrtDecoder ref = ort.newDecoder(prompt.length);
                     PlainOrtDecoder chunked = ort.newDecoder(16);
                     KvCache cache = KvCaches.create(kv, split.layers(), split.kvHeads(), split.headDim())) {
                    Decoder dec = new JavaAttentionDecoder(split, cache, attention, 16);
                    float[] want = ref.prefill(prompt, null);
                    // ONNX Runtime itself: chunked prefill (past + new tokens, unidirectional) = one run
                    double[] self = GenAiFixtureTest.errors(want, chunked.prefill(prompt, null));
                    assertTrue(self[0] < 1e-5, "ONNX Runtime chunked vs whole prefill: " + self[0]);
                    float[] got = dec.prefill(prompt, null);
                    double worst = 0;
                    int agree = 0;
                    for (int step = 0; step <= 16; step++) {
                        double[] e = GenAiFixtureTest.errors(want, got);
                        worst = Math.max(worst, kv.equals("full") ? e[0] : e[1]);
                        int t = JavaAttentionTest.argmax(want);
                        agree += t == JavaAttentionTest.argmax(got) ? 1 : 0;
                        if (step < 16) {
                            want = ref.step(t);
                            got = dec.step(t);
                        }
                    }
                    System.out.printf("mha-gpt, %s: engine vs ONNX Runtime over 40 prompt tokens + 16 steps: worst %s %.2e, "
                            + "top-1 agree %d/17%n", kv, kv.equals("full") ? "max|diff|/max|logit|" : "relative L2", worst, agree);
                    if (kv.equals("full")) {
                        assertTrue(worst < 1e-4, "full: " + worst);
                    } else {
                        assertTrue(worst < GenAiFixtureTest.TURBO_BOUND && worst > 1e-3, "turbo3.5 (lossy, bounded): " + worst);
                        assertTrue(agree >= 10, "turbo3.5 top-1 agreement " + agree);
                    }
                }
            }
        }
    }

    /** The fixture with layer 0's MultiHeadAttention node edited. */
    static Path edited(Path tmp, UnaryOperator<Pb> edit) throws Exception {
        Path dir = fixture(tmp);
        Pb m = Pb.parse(Files.readAllBytes(dir.resolve("model.onnx")));
        Pb g = m.one(7).message();
        List<Pb.Field> fields = new ArrayList<>();
        for (Pb.Field f : g.fields) {
            boolean hit = f.number() == 1 && f.message().string(3, "").equals("/layers.0/attn/MultiHeadAttention");
            fields.add(hit ? new Pb.Field(1, 2, 0, edit.apply(f.message()).toBytes()) : f);
        }
        Files.write(dir.resolve("model.onnx"), m.without(7).add(7, new Pb(fields)).toBytes());
        return dir;
    }

    static String refusal(Path dir) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AttentionSplit.of(OnnxModel.read(dir.resolve("model.onnx")), 128));
        assertEquals(-1, e.getMessage().indexOf('\n'), e.getMessage());
        return e.getMessage();
    }

    /** The node with its attributes replaced (inputs, outputs, name, op, domain kept). */
    static Pb withAttributes(Pb n, Pb... attrs) {
        Pb r = n.without(5);
        for (Pb a : attrs) {
            r.add(5, a);
        }
        return r;
    }

    static Pb intAttr(String name, long v) {
        return new Pb().add(1, name).addVarint(3, v).addVarint(20, 2);
    }

    static Pb floatAttr(String name, float v) {
        Pb a = new Pb().add(1, name);
        a.fields.add(new Pb.Field(2, 5, Float.floatToIntBits(v) & 0xffffffffL, null));
        return a.addVarint(20, 1);
    }

    /** The node with input k replaced. */
    static Pb withInput(Pb n, int k, String name) {
        List<String> ins = new ArrayList<>(n.strings(1));
        while (ins.size() <= k) {
            ins.add("");
        }
        ins.set(k, name);
        Pb r = new Pb();
        for (String s : ins) {
            r.add(1, s);
        }
        r.fields.addAll(n.without(1).fields);
        return r;
    }

    @Test
    void unimplementedAttributesAndInputsAreRefusedByName(@TempDir Path tmp) throws Exception {
        assertEquals(NODE0 + "attribute unidirectional = 0: bidirectional attention over past and new tokens (a prefill "
                        + "would see later tokens); kvquant's attention is causal: export with unidirectional = 1",
                refusal(edited(tmp.resolve("a"), n -> withAttributes(n, intAttr("num_heads", 4)))));
        assertEquals(NODE0 + "attribute mask_filter_value = -1.0: masked scores would keep some weight; kvquant masks "
                        + "exactly (values <= -10000 are supported)",
                refusal(edited(tmp.resolve("b"), n -> withAttributes(n, intAttr("num_heads", 4), intAttr("unidirectional", 1),
                        floatAttr("mask_filter_value", -1f)))));
        assertEquals(NODE0 + "attribute some_future_option: kvquant does not implement it",
                refusal(edited(tmp.resolve("c"), n -> n.add(5, intAttr("some_future_option", 1)))));
        assertEquals(NODE0 + "input attention_bias (position_ids) is not supported",
                refusal(edited(tmp.resolve("d"), n -> withInput(n, 5, "position_ids"))));
        assertEquals(NODE0 + "input key_padding_mask (position_ids) is not the graph's attention_mask; not supported",
                refusal(edited(tmp.resolve("e"), n -> withInput(n, 4, "position_ids"))));
        assertEquals(NODE0 + "input bias (/layers.0/q) is not a constant initializer; not supported",
                refusal(edited(tmp.resolve("f"), n -> withInput(n, 3, "/layers.0/q"))));
        assertEquals(NODE0 + "input past_sequence_length (position_ids) is not supported",
                refusal(edited(tmp.resolve("g"), n -> withInput(n, 8, "position_ids"))));
    }
}
