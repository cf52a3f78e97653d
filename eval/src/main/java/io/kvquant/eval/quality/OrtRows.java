package io.kvquant.eval.quality;

import io.kvquant.cache.KvQuantConfig;
import io.kvquant.demo.graph.OrtQuantKv;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.OrtBaseline;
import io.kvquant.demo.onnx.PlainOrtDecoder;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The ONNX Runtime rows of {@code kvq eval perplexity} and {@code kvq eval needle}: {@code ort}
 * (the graph as exported, ONNX Runtime alone) and {@code ort-int8}/{@code ort-int4} (its own
 * quantized KV cache, GroupQueryAttention graphs only), beside kvquant's settings on the same
 * model. A quantized row is calibrated on the first {@code prefill chunk} tokens of each sequence
 * it decodes (ONNX Runtime needs static scales), so it opens a fresh graph per sequence.
 */
final class OrtRows {

    private OrtRows() {
    }

    /**
     * Splits a {@code --kv} list into its rows, in order: {@link OrtQuantKv.Setting} for the ORT
     * rows, {@link KvQuantConfig} for kvquant's (parsed as {@link QualityModel#parseSettings}).
     */
    static List<Object> parse(String spec) {
        if (spec == null || spec.isBlank()) {
            throw new IllegalArgumentException("--kv is empty (e.g. full,turbo3.5,turbo2.5,kivi2)");
        }
        List<Object> out = new ArrayList<>();
        StringBuilder rest = new StringBuilder();
        for (String group : spec.split(";")) {
            String[] items = group.split(",");
            for (int i = 0; i < items.length; i++) {
                OrtQuantKv.Setting s = OrtQuantKv.Setting.of(items[i]);
                if (s == null) {
                    rest.append(rest.isEmpty() ? "" : ",").append(items[i]);
                    continue;
                }
                if (i + 1 < items.length && items[i + 1].contains("=")) {
                    throw new IllegalArgumentException("--kv " + s + " takes no options, got '" + items[i + 1].trim() + "'");
                }
                flush(rest, out);
                if (out.contains(s)) {
                    throw new IllegalArgumentException("--kv lists '" + s + "' twice");
                }
                out.add(s);
            }
            flush(rest, out);
        }
        return out;
    }

    private static void flush(StringBuilder rest, List<Object> out) {
        if (rest.isEmpty()) {
            return;
        }
        for (KvQuantConfig c : QualityModel.parseSettings(rest.toString())) {
            if (out.contains(c)) {
                throw new IllegalArgumentException("--kv lists '" + c + "' twice");
            }
            out.add(c);
        }
        rest.setLength(0);
    }

    /** Refuses, before anything runs, a quantized ORT row on a model without GroupQueryAttention. */
    static void check(QualityModel qm, List<?> rows) throws IOException {
        for (Object r : rows) {
            if (r instanceof OrtQuantKv.Setting s && s.bits > 0) {
                OrtQuantKv.attentionNodes(io.kvquant.demo.graph.OnnxModel.read(qm.dir.resolve("model.onnx")), s.cli);
                return;
            }
        }
    }

    /** One sequence decoded by ONNX Runtime alone: the opened graph and its decoder. */
    record Run(OrtBaseline model, PlainOrtDecoder decoder) implements AutoCloseable {

        /** Bits per stored key/value element (32 fp32, 16 fp16, 8 int8, 4 int4; the static scales are not counted). */
        double bitsPerElement() {
            return model.graph.pastBytes() * 8.0 * model.graph.pastDim() / model.graph.headDim();
        }

        @Override
        public void close() {
            decoder.close();
            model.close();
        }
    }

    /** Opens {@code s} on the evaluated model for one sequence whose first tokens are {@code prompt}'s. */
    static Run start(QualityModel qm, OrtQuantKv.Setting s, long[] prompt) throws IOException {
        long[] calibration = Arrays.copyOf(prompt, Math.min(prompt.length, qm.prefillChunk));
        OrtBaseline m = OrtBaseline.open(qm.dir, new DecoderModel.Options(qm.threads, DecoderModel.Ep.CPU), s, calibration);
        return new Run(m, m.newDecoder(qm.prefillChunk));
    }
}
