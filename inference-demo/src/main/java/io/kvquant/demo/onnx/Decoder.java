package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import java.util.function.IntConsumer;

/**
 * Incremental decoding of one sequence over a {@link KvCache}: the contract shared by the
 * execution modes (round-trip hook, Java attention, in-graph dequantization), so that the CLI,
 * the evaluation harness and the DJL integration drive any of them the same way.
 */
public interface Decoder {

    /**
     * Execution modes. {@link #JAVA_ATTENTION} is the engine (the default, {@code --mode engine};
     * {@code java-attention} is kept as an alias): ONNX Runtime runs the dense parts of the graph cut
     * at each attention, kvquant attends on the compressed cache, and no dense past exists.
     * {@link #ROUNDTRIP} is the reference: the quality simulation that hands ONNX Runtime a dense
     * past rebuilt from the cache every step (it holds a dense copy, so it uses more memory than
     * plain ONNX Runtime). {@link #GRAPH} dequantizes the codes inside the graph.
     */
    enum Mode {
        ROUNDTRIP("roundtrip"), JAVA_ATTENTION("engine"), GRAPH("graph");

        /** The engine: the default everywhere. Another name for {@link #JAVA_ATTENTION}. */
        public static final Mode ENGINE = JAVA_ATTENTION;

        /** The --mode help line every command shows. */
        public static final String HELP = "engine (default: the dense parts in ONNX Runtime for the prompt and in Java "
                + "for each new token, kvquant attends on the compressed cache; no dense past is held; the graph cut is prepared and cached on first use; alias "
                + "java-attention), roundtrip (reference: quality simulation; holds a dense copy of the past, so it uses "
                + "more memory than plain ONNX Runtime) or graph (the graph rewritten to dequantize the codes itself; "
                + "./kvq prepare --mode graph --kv SETTING first)";

        public final String cli;

        Mode(String cli) {
            this.cli = cli;
        }

        /** Parses a --mode value ({@code java-attention} is the engine's old name). */
        public static Mode parse(String s) {
            String t = s.trim();
            if (t.equalsIgnoreCase("java-attention")) {
                return JAVA_ATTENTION;
            }
            for (Mode m : values()) {
                if (m.cli.equalsIgnoreCase(t)) {
                    return m;
                }
            }
            throw new IllegalArgumentException("unknown --mode '" + s + "' (known: engine, roundtrip, graph; "
                    + "java-attention = engine)");
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
            if (off + len < tokens.length) {
                feedPrefix(tokens, off, len); // only the last chunk's logits are returned
            } else {
                logits = feed(tokens, off, len);
            }
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

    /**
     * As {@link #feed} for a caller that does not need the logits (a prompt chunk before the
     * last): the cache and position end up the same, and a decoder may skip the work that only
     * makes logits; returns them or null.
     */
    default float[] feedPrefix(long[] ids, int off, int len) {
        return feed(ids, off, len);
    }

    /** Prompt tokens per model call in {@link #prefill}. */
    int prefillChunk();

    /** Tokens held in the cache (the position of the next token). */
    int position();

    /** The cache this decoder appends to and reads from. */
    KvCache cache();

    /**
     * Bytes this decoder holds for the past besides the cache itself: a dense mirror of the
     * cache and the dense past handed to ONNX Runtime (round-trip), 0 for the engine, which holds
     * nothing that grows with the context.
     */
    default long heldBytes() {
        return 0;
    }
}
