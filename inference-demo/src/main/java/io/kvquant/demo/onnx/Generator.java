package io.kvquant.demo.onnx;

import io.kvquant.cache.KvCache;
import io.kvquant.demo.text.Sampler;
import java.util.Arrays;
import java.util.function.IntConsumer;

/** Chunked prefill then token-by-token decoding with a {@link DecoderModel} and a {@link KvCache}. */
public final class Generator {

    /** Figures of one generation. */
    public record Stats(int promptTokens, int generatedTokens, double prefillSeconds, double decodeSeconds) {
        public double prefillTokensPerSecond() {
            return prefillSeconds > 0 ? promptTokens / prefillSeconds : 0;
        }

        public double decodeTokensPerSecond() {
            return decodeSeconds > 0 ? generatedTokens / decodeSeconds : 0;
        }
    }

    /** Progress of the prefill: tokens done out of the prompt. */
    public interface Progress {
        void prefill(int done, int total);
    }

    private final DecoderModel model;
    private final int prefillChunk;

    public Generator(DecoderModel model, int prefillChunk) {
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("--prefill-chunk must be >= 1, got " + prefillChunk);
        }
        this.model = model;
        this.prefillChunk = prefillChunk;
    }

    /** Feeds the prompt in chunks; returns the logits after its last token. */
    public float[] prefill(long[] prompt, KvCache cache, Progress progress) {
        if (prompt.length == 0) {
            throw new IllegalArgumentException("the prompt is empty");
        }
        float[] logits = null;
        for (int i = 0; i < prompt.length; i += prefillChunk) {
            long[] chunk = Arrays.copyOfRange(prompt, i, Math.min(prompt.length, i + prefillChunk));
            logits = model.step(chunk, cache, false);
            if (progress != null) {
                progress.prefill(Math.min(prompt.length, i + prefillChunk), prompt.length);
            }
        }
        return logits;
    }

    /**
     * Generates up to {@code maxNew} tokens after the prompt, stopping at {@code eos} (if >= 0);
     * each token goes to {@code sink} as soon as it is chosen.
     */
    public Stats generate(long[] prompt, KvCache cache, Sampler sampler, int maxNew, int eos, IntConsumer sink,
                          Progress progress) {
        long t0 = System.nanoTime();
        float[] logits = prefill(prompt, cache, progress);
        long t1 = System.nanoTime();
        int produced = 0;
        for (; produced < maxNew; ) {
            int next = sampler.next(logits);
            produced++;
            if (next == eos) {
                break;
            }
            sink.accept(next);
            if (produced == maxNew) {
                break;
            }
            logits = model.step(new long[]{next}, cache, false);
        }
        long t2 = System.nanoTime();
        return new Stats(prompt.length, produced, (t1 - t0) / 1e9, (t2 - t1) / 1e9);
    }
}
