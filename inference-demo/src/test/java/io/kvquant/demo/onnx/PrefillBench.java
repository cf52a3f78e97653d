package io.kvquant.demo.onnx;

import io.kvquant.attention.KernelWarmup;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.demo.text.TextTokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * The engine's prefill of one prompt, repeated in one process (docs/engine.md, "Prefill at 2K,
 * where the time goes"): the first repetition is what {@code kvq generate} sees after its kernel
 * warm-up, the later ones show the compiled steady state. With {@code -Dkvq.engine.split=true}
 * each repetition prints its split by part and per chunk. Chunk sizes are cycled over the
 * repetitions. Not a test (no assertions); run from the test classpath:
 * {@code java -cp inference-demo/target/test-classes:inference-demo/target/classes:kvquant/target/classes:eval/target/lib/*
 * --add-modules jdk.incubator.vector io.kvquant.demo.onnx.PrefillBench MODEL_DIR PROMPT_FILE KV REPS [CHUNKS,...] [warmup|nowarmup]}.
 */
public final class PrefillBench {

    private PrefillBench() {
    }

    public static void main(String[] a) throws Exception {
        Path dir = Path.of(a[0]);
        String text = Files.readString(Path.of(a[1]));
        String kv = a[2];
        int reps = Integer.parseInt(a[3]);
        String[] chunks = (a.length > 4 ? a[4] : "256").split(",");
        boolean warm = a.length <= 5 || !a[5].equals("nowarmup");
        try (TextTokenizer tok = TextTokenizer.open(dir);
             JavaAttentionModel dm = JavaAttentionModel.open(dir, new DecoderModel.Options(2, DecoderModel.Ep.CPU))) {
            long[] ids = tok.encode(text);
            if (warm) {
                int qHeads = ModelConfig.read(dir.resolve("config.json")).queryHeads();
                double w = KernelWarmup.start(KvQuantConfig.parse(kv), dm.kvHeads(), dm.headDim(), qHeads, 2).join();
                System.out.printf(Locale.ROOT, "kernel warm-up %.2f s%n", w);
            }
            for (int r = 0; r < reps; r++) {
                int chunk = Integer.parseInt(chunks[r % chunks.length]);
                try (LayeredKvCache c = KvCaches.create(kv, dm.layers(), dm.kvHeads(), dm.headDim())) {
                    Decoder d = dm.newDecoder(c, chunk);
                    long t0 = System.nanoTime();
                    d.prefill(ids, null);
                    double s = (System.nanoTime() - t0) / 1e9;
                    System.out.printf(Locale.ROOT, "%s chunk %d rep %d: %d tokens %.3f s %.0f tok/s%n", kv, chunk, r, ids.length, s,
                            ids.length / s);
                }
            }
        }
    }
}
