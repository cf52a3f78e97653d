package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import java.util.function.IntConsumer;

/**
 * Incremental decoding of one sequence over a {@link KvCache}: the contract shared by the
 * execution modes (round-trip hook, Java attention, in-graph dequantization), so that the CLI,
 * the evaluation harness and the DJL integration drive any of them the same way.
 */
public interface Decoder {

    /** Execution modes: round-trip, Java attention, in-graph dequantization. */
    enum Mode {
        ROUNDTRIP("roundtrip"), JAVA_ATTENTION("java-attention"), GRAPH("graph");

        public final String cli;

        Mode(String cli) {
            this.cli = cli;
        }

        /** Parses a --mode value. */
        public static Mode parse(String s) {
            for (Mode m : values()) {
                if (m.cli.equalsIgnoreCase(s.trim())) {
                    return m;
                }
            }
            throw new IllegalArgumentException("unknown --mode '" + s + "' (known: roundtrip, java-attention, graph)");
        }
    }

    /**
     * Feeds the prompt in chunks of {@link #prefillChunk()} tokens and returns the next-token
     * logits after its last token. {@code progress}, if not null, receives the tokens done so far.
     */
    default float[] prefill(long[] tokens, IntConsumer progress) {
        if (tokens.length == 0) {
            throw new IllegalArgumentException("the prompt is empty (no tokens)");
        }
        int chunk = prefillChunk();
        float[] logits = null;
        for (int off = 0; off < tokens.length; off += chunk) {
            int len = Math.min(chunk, tokens.length - off);
            logits = feed(tokens, off, len);
            if (progress != null) {
                progress.accept(off + len);
            }
        }
        return logits;
    }

    /** One decode step: feeds {@code token}, returns the next-token logits. */
    default float[] step(long token) {
        return feed(new long[] {token}, 0, 1);
    }

    /** Runs tokens {@code ids[off, off+len)} at the next positions; returns the logits after the last. */
    float[] feed(long[] ids, int off, int len);

    /** Prompt tokens per model call in {@link #prefill}. */
    int prefillChunk();

    /** Tokens held in the cache (the position of the next token). */
    int position();

    /** The cache this decoder appends to and reads from. */
    KvCache cache();
}
