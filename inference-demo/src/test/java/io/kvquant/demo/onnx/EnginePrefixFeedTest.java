package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCache;
import io.kvquant.cache.KvCaches;
import java.io.IOException;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/**
 * The engine's prompt chunks before the last skip the pieces after the last attention (they only
 * make logits, session 7): nothing else may change. The cache, the position and every later
 * logit must be what feeding every chunk in full gives: the same computation, so equal up to
 * the last-ulp differences of the Java kernels before and after the JIT compiles them (the
 * Vector API's fallback exp is Math.exp, compiled code uses the JDK's vector math library), far
 * below 1e-5 relative.
 */
class EnginePrefixFeedTest {

    @Test
    void skippingTheLogitsOfEarlierChunksChangesNothingElse() throws IOException {
        for (EngineTest.Case c : EngineTest.cases()) {
            for (String kv : new String[] {"full", "turbo3.5"}) {
                try (JavaAttentionModel engine = JavaAttentionModel.open(c.dir(), EngineTest.ONE);
                     KvCache a = KvCaches.create(kv, engine.layers(), engine.kvHeads(), engine.headDim());
                     KvCache b = KvCaches.create(kv, engine.layers(), engine.kvHeads(), engine.headDim())) {
                    long[] p = c.prompt();
                    int chunk = c.chunk() + 3; // the last chunk is partial
                    Decoder x = engine.newDecoder(a, chunk);
                    Decoder y = engine.newDecoder(b, chunk);
                    float[] lx = null;
                    for (int off = 0; off < p.length; off += chunk) {
                        lx = x.feed(p, off, Math.min(chunk, p.length - off)); // every chunk with its logits
                    }
                    float[] ly = y.prefill(p, null); // the earlier chunks through feedPrefix
                    assertNull(y.feedPrefix(new long[] {p[0]}, 0, 1), c.name() + ": the engine returns no logits there");
                    x.feed(new long[] {p[0]}, 0, 1);
                    assertEquals(x.position(), y.position(), c.name());
                    assertEquals(p.length + 1, y.position(), c.name());
                    close(lx, ly, c.name() + " " + kv + ": logits after the prompt");
                    for (int step = 0; step < 8; step++) {
                        long t = EngineTest.argmax(lx);
                        lx = x.step(t);
                        ly = y.step(t);
                        close(lx, ly, c.name() + " " + kv + ": step " + step);
                    }
                }
            }
        }
    }

    private static void close(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what);
        double e = EngineTest.relErr(got, want);
        assertTrue(e < 1e-5, what + ": relative logit error " + e);
        assertEquals(EngineTest.argmax(want), EngineTest.argmax(got), what);
    }

    /** The default prefill of any decoder feeds the earlier chunks through feedPrefix and returns the last chunk's logits. */
    @Test
    void defaultPrefillUsesFeedPrefixBeforeTheLastChunk() {
        int[] prefixCalls = new int[1];
        int[] feedCalls = new int[1];
        Decoder d = new Decoder() {
            int pos;

            @Override
            public float[] feed(long[] ids, int off, int len) {
                feedCalls[0]++;
                pos += len;
                return new float[] {pos};
            }

            @Override
            public float[] feedPrefix(long[] ids, int off, int len) {
                prefixCalls[0]++;
                pos += len;
                return null;
            }

            @Override
            public int prefillChunk() {
                return 4;
            }

            @Override
            public int position() {
                return pos;
            }

            @Override
            public KvCache cache() {
                return null;
            }
        };
        long[] ids = new long[10];
        Arrays.fill(ids, 1);
        float[] l = d.prefill(ids, null);
        assertEquals(2, prefixCalls[0]);
        assertEquals(1, feedCalls[0]);
        assertArrayEquals(new float[] {10}, l);
    }
}
