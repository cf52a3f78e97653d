package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import java.io.IOException;
import java.nio.file.Path;

/**
 * A loaded decoder in one execution mode: its shape, and decoders over caches. The engine (the
 * default) is {@link JavaAttentionModel} (the graph's pieces, attention on the compressed
 * cache); the round-trip reference is {@link DecoderModel} (the whole graph, a dense past rebuilt
 * from the cache each step); graph mode is {@link GraphModel}.
 */
public interface ModelRunner extends AutoCloseable {

    int layers();

    int kvHeads();

    int headDim();

    /** The model's context in tokens, or -1 when it declares none. */
    int maxContext();

    int eosTokenId();

    /** The model file this runs. */
    Path file();

    /** One line: layers, heads, head dim, dtype, mode. */
    String describe();

    /** A decoder that appends to and reads from {@code cache}, feeding prompts {@code prefillChunk} tokens at a time. */
    Decoder newDecoder(KvCache cache, int prefillChunk);

    @Override
    void close();

    /** Opens the model of {@code dir} for {@code mode}; one-line errors for what is missing. */
    static ModelRunner open(Path dir, Decoder.Mode mode, DecoderModel.Options opts) throws IOException {
        return open(dir, mode, opts, System.err::println);
    }

    /** Like {@link #open(Path, Decoder.Mode, DecoderModel.Options)}; the engine's one-off preparation reports to {@code progress}. */
    static ModelRunner open(Path dir, Decoder.Mode mode, DecoderModel.Options opts, java.util.function.Consumer<String> progress)
            throws IOException {
        return switch (mode) {
            case ROUNDTRIP -> DecoderModel.open(dir, opts);
            case JAVA_ATTENTION -> JavaAttentionModel.open(dir, opts, progress);
            case GRAPH -> throw new IllegalArgumentException("--mode graph is prepared for one --kv setting at a time; "
                    + "use it with kvq generate");
        };
    }

    /** Like {@link #open(Path, Decoder.Mode, DecoderModel.Options)}; graph mode opens the rewrite for {@code kv}. */
    static ModelRunner open(Path dir, Decoder.Mode mode, DecoderModel.Options opts, io.kvquant.cache.KvQuantConfig kv)
            throws IOException {
        return open(dir, mode, opts, kv, System.err::println);
    }

    /** Like {@link #open(Path, Decoder.Mode, DecoderModel.Options, io.kvquant.cache.KvQuantConfig)}, progress lines to {@code progress}. */
    static ModelRunner open(Path dir, Decoder.Mode mode, DecoderModel.Options opts, io.kvquant.cache.KvQuantConfig kv,
                            java.util.function.Consumer<String> progress) throws IOException {
        return mode == Decoder.Mode.GRAPH ? GraphModel.open(dir, kv, opts) : open(dir, mode, opts, progress);
    }
}
