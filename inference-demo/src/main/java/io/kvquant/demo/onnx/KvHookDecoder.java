package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import java.util.function.IntConsumer;

/**
 * The KV hook in round-trip mode: before each step the dense past is what the {@link KvCache}
 * reconstructs ({@code read(layer, 0, len)}), after it the step's new keys and values (the last
 * positions of {@code present}) are appended to the cache. With a lossless cache ({@code full})
 * the logits equal plain ONNX Runtime decoding exactly.
 */
public final class KvHookDecoder {

    /** Execution modes; only round-trip exists so far. */
    public enum Mode {
        ROUNDTRIP("roundtrip"), JAVA_ATTENTION("java-attention"), GRAPH("graph");

        public final String cli;

        Mode(String cli) {
            this.cli = cli;
        }

        /** Parses a --mode value; modes from later issues are refused with a one-line reason. */
        public static Mode parse(String s) {
            for (Mode m : values()) {
                if (m.cli.equalsIgnoreCase(s.trim())) {
                    if (m != ROUNDTRIP) {
                        throw new IllegalArgumentException("--mode " + m.cli + " is not available yet (it comes with its"
                                + " own issue); use --mode roundtrip");
                    }
                    return m;
                }
            }
            throw new IllegalArgumentException("unknown --mode '" + s + "' (known: roundtrip, java-attention, graph)");
        }
    }

    private final DecoderModel model;
    private final KvCache cache;
    private final int prefillChunk;
    private final float[][] pastK;
    private final float[][] pastV;

    public KvHookDecoder(DecoderModel model, KvCache cache, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        if (cache.layers() != model.layers() || cache.kvHeads() != model.kvHeads() || cache.headDim() != model.headDim()) {
            throw new IllegalArgumentException("cache shape " + cache.layers() + "x" + cache.kvHeads() + "x" + cache.headDim()
                    + " does not match the model's " + model.layers() + "x" + model.kvHeads() + "x" + model.headDim());
        }
        this.model = model;
        this.cache = cache;
        this.prefillChunk = prefillChunk;
        this.pastK = new float[model.layers()][0];
        this.pastV = new float[model.layers()][0];
    }

    /** Tokens held in the cache (the next position). */
    public int position() {
        return cache.length(0);
    }

    public KvCache cache() {
        return cache;
    }

    /**
     * Feeds the prompt in chunks of at most {@code --prefill-chunk} tokens; returns the logits
     * after its last token. {@code progress} receives the number of tokens done after each chunk.
     */
    public float[] prefill(long[] tokens, IntConsumer progress) {
        if (tokens.length == 0) {
            throw new IllegalArgumentException("the prompt is empty (no tokens)");
        }
        float[] logits = null;
        for (int off = 0; off < tokens.length; off += prefillChunk) {
            int len = Math.min(prefillChunk, tokens.length - off);
            logits = feed(tokens, off, len);
            if (progress != null) {
                progress.accept(off + len);
            }
        }
        return logits;
    }

    /** One decode step: feeds {@code token}, returns the next-token logits. */
    public float[] step(long token) {
        return feed(new long[] {token}, 0, 1);
    }

    private float[] feed(long[] ids, int off, int len) {
        int past = cache.length(0);
        int n = model.kvHeads() * past * model.headDim();
        for (int l = 0; l < model.layers(); l++) {
            if (cache.length(l) != past) {
                throw new IllegalStateException("cache layers out of step: layer " + l + " holds " + cache.length(l)
                        + " tokens, layer 0 holds " + past);
            }
            if (pastK[l].length < n) {
                int cap = Math.max(n, pastK[l].length + pastK[l].length / 2);
                pastK[l] = new float[cap];
                pastV[l] = new float[cap];
            }
            if (past > 0) {
                cache.read(l, 0, past, pastK[l], pastV[l]);
            }
        }
        DecoderModel.Step s = model.run(ids, off, len, past, pastK, pastV);
        for (int l = 0; l < model.layers(); l++) {
            cache.append(l, s.keys()[l], s.values()[l], len);
        }
        return s.logits();
    }
}
