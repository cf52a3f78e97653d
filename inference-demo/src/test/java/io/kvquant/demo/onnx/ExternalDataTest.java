package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.Pb;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashSet;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model whose weights are in an external data file (model.onnx + data), as large exports are:
 * read without loading the weights, prepared into pieces that reference the data file instead of
 * copying it, decoded exactly like the same model with embedded weights.
 */
class ExternalDataTest {

    @Test
    void externalDataModelPreparesWithoutCopyingWeightsAndDecodesTheSame(@TempDir Path tmp) throws IOException {
        Path src = tmp.resolve("src");
        Files.createDirectories(src);
        for (String f : new String[] {"model.onnx", "config.json", "tokenizer.json"}) {
            Files.copy(TestModel.dir().resolve(f), src.resolve(f));
        }
        // the bundled model rewritten with its weights in an external file: small model.onnx + data
        Path ext = tmp.resolve("ext");
        Files.createDirectories(ext);
        OnnxModel m = OnnxModel.read(src.resolve("model.onnx"));
        byte[] whole = m.subModel("main", new LinkedHashSet<>(m.nodes), List.copyOf(m.inputs.keySet()),
                List.copyOf(m.outputs.keySet()));
        java.util.Map<Path, Path> data = OnnxModel.writeLinked(whole, ext.resolve("model.onnx"));
        assertEquals(1, data.size(), "one data file");
        Files.copy(src.resolve("config.json"), ext.resolve("config.json"));
        long weights = Files.size(src.resolve("model.onnx"));
        assertTrue(Files.size(ext.resolve("model.onnx")) < weights / 50, "weights are external: model.onnx is "
                + Files.size(ext.resolve("model.onnx")) + " bytes");
        int external = 0;
        for (Pb.Field f : Pb.parse(Files.readAllBytes(ext.resolve("model.onnx"))).one(7).message().all(5)) {
            external += f.message().varint(14, 0) == 1 ? 1 : 0;
        }
        assertTrue(external >= 10, external + " external initializers");

        Path prep = JavaAttentionModel.prepare(ext);
        long pieceBytes = 0;
        try (var files = Files.list(prep)) {
            for (Path p : files.toList()) {
                if (p.getFileName().toString().startsWith("piece-")) {
                    pieceBytes += Files.size(p);
                }
            }
        }
        assertTrue(pieceBytes < weights / 20, "pieces reference the weights: " + pieceBytes + " bytes of pieces for "
                + weights + " bytes of weights");

        DecoderModel.Options opts = new DecoderModel.Options(1, DecoderModel.Ep.CPU);
        try (DecoderModel plain = DecoderModel.open(src, opts);
             JavaAttentionModel split = JavaAttentionModel.open(ext, opts);
             DecodeAttention attention = new DecodeAttention(1);
             KvCache a = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim());
             KvCache b = KvCaches.create("full", plain.layers(), plain.kvHeads(), plain.headDim())) {
            long[] prompt = new long[40];
            for (int i = 0; i < prompt.length; i++) {
                prompt[i] = (i * 37 + 11) % 4000;
            }
            Decoder x = new KvHookDecoder(plain, a, 64);
            Decoder y = new JavaAttentionDecoder(split, b, attention, 64);
            float[] lx = x.prefill(prompt, null);
            float[] ly = y.prefill(prompt, null);
            for (int step = 0; step <= 16; step++) {
                double diff = TestModel.maxAbsDiff(lx, ly);
                assertTrue(diff < 2e-3, "step " + step + ": max |logit diff| " + diff);
                int t = JavaAttentionTest.argmax(lx);
                lx = x.step(t);
                ly = y.step(t);
            }
        }
    
        // the data file replaced after preparation (a new export beside the same model.onnx): the
        // preparation's hard link still holds the old weights, so it is stale and made again
        Path dataFile = data.keySet().iterator().next(); // the external data file of ext/model.onnx
        Path fresh = tmp.resolve("fresh.bin");
        Files.copy(dataFile, fresh);
        Files.delete(dataFile);
        Files.move(fresh, dataFile);
        Files.setLastModifiedTime(dataFile, java.nio.file.attribute.FileTime.fromMillis(
                Files.getLastModifiedTime(dataFile).toMillis() + 5000));
        assertTrue(JavaAttentionModel.prepare(ext, line -> { }).made(), "a preparation whose weights changed is redone");
        assertTrue(!JavaAttentionModel.prepare(ext, line -> { }).made(), "and reused after that");
    }
}
