package io.kvquant.eval.quality;

import io.kvquant.demo.onnx.Decoder;
import java.io.IOException;
import java.nio.file.Path;
import picocli.CommandLine.Option;

/** The options every model-quality evaluation shares: which model, how it decodes. A picocli mixin. */
public final class ModelOptions {

    @Option(names = "--model", paramLabel = "DIR", description = "Model directory (default: the bundled model).")
    Path model;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "engine",
            description = "How attention meets the cache: " + Decoder.Mode.HELP + " (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--prefill-chunk", paramLabel = "N", defaultValue = "256",
            description = "Prefill prompts N tokens per step; everything before the last chunk is read back from "
                    + "the cache (default: ${DEFAULT-VALUE}).")
    int prefillChunk;

    @Option(names = "--threads", defaultValue = "0",
            description = "ONNX Runtime intra-op threads; 0 = its default (default: ${DEFAULT-VALUE}).")
    int threads;

    /** Validates the options (one-line errors) and opens the model and its tokenizer. */
    QualityModel open() throws IOException {
        Decoder.Mode m = Decoder.Mode.parse(mode);
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        if (threads < 0) {
            throw new IllegalArgumentException("--threads must be >= 0, got " + threads);
        }
        return QualityModel.open(model, threads, m, prefillChunk);
    }
}
