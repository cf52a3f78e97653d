package io.kvquant.demo.graph;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.demo.graph.DenseOps.T;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The Java decode step's operators ({@link DenseOps}) on small hand-checked cases: numpy
 * broadcasting, the shape operators' special values (0 and -1 in Reshape, negative and clamped
 * Slice bounds, negative axes), a transpose that reorders, Gather from a weight in native memory,
 * MatMul in both of its paths (the weight product, split in column chunks, and the batched loop) against a
 * double-precision sum, and refusals that name what they refuse.
 */
class DenseOpsTest {

    private static T f(int[] shape, float... v) {
        return T.floats(shape, v);
    }

    private static T l(int[] shape, long... v) {
        return T.longs(OnnxModel.INT64, shape, v);
    }

    private static int[] s(int... d) {
        return d;
    }

    @Test
    void broadcastingFollowsNumpy() {
        T a = f(s(2, 1, 3), 1, 2, 3, 4, 5, 6);
        T b = f(s(2, 1), 10, 20);
        T r = DenseOps.binary("Add", a, b);
        assertArrayEquals(s(2, 2, 3), r.shape);
        assertArrayEquals(new float[] {11, 12, 13, 21, 22, 23, 14, 15, 16, 24, 25, 26}, r.f(), 0f);
        assertArrayEquals(new float[] {2, 4, 6, 8, 10, 12}, DenseOps.binary("Mul", a, f(s(), 2)).f(), 0f);
        assertArrayEquals(new float[] {1, 4, 9}, DenseOps.binary("Pow", f(s(3), 1, 2, 3), f(s(), 2)).f(), 0f);
        T c = DenseOps.binary("Less", l(s(3), 1, 5, 3), l(s(1), 3));
        assertEquals(OnnxModel.BOOL, c.type);
        assertArrayEquals(new long[] {1, 0, 0}, c.l());
        assertArrayEquals(new long[] {-1, 1}, DenseOps.binary("Div", l(s(2), -7, 7), l(s(), 4)).l(), "truncates toward zero");
        assertThrows(IllegalArgumentException.class, () -> DenseOps.binary("Add", f(s(2), 1, 2), f(s(3), 1, 2, 3)));
    }

    @Test
    void shapeOperators() {
        T x = f(s(2, 3, 4), new float[24]);
        assertArrayEquals(s(2, 12), DenseOps.reshape(x, new long[] {0, -1}, false).shape);
        assertArrayEquals(s(4, 6), DenseOps.reshape(x, new long[] {4, -1}, false).shape);
        assertThrows(IllegalArgumentException.class, () -> DenseOps.reshape(x, new long[] {5, -1}, false));
        assertArrayEquals(s(2, 1, 3, 4, 1), DenseOps.unsqueeze(x, new long[] {1, -1}).shape);
        assertArrayEquals(s(3, 4), DenseOps.squeeze(f(s(1, 3, 4), new float[12]), new long[] {0}).shape);
        float[] v = new float[24];
        for (int i = 0; i < v.length; i++) {
            v[i] = i;
        }
        T y = f(s(2, 3, 4), v);
        T t = DenseOps.transpose(y, new long[] {2, 0, 1});
        assertArrayEquals(s(4, 2, 3), t.shape);
        assertEquals(v[1 * 12 + 2 * 4 + 3], t.f()[3 * 6 + 1 * 3 + 2], 0f, "out[3][1][2] = in[1][2][3]");
        T sl = DenseOps.sliceAxis(y, 2, 3, -1, -2);
        assertArrayEquals(s(2, 3, 2), sl.shape);
        assertEquals(3, sl.f()[0], 0f);
        assertEquals(1, sl.f()[1], 0f);
        T cat = DenseOps.concat(new T[] {f(s(1, 2), 1, 2), null, f(s(1, 1), 3)}, -1);
        assertArrayEquals(new float[] {1, 2, 3}, cat.f(), 0f);
        assertArrayEquals(s(2, 3, 4), DenseOps.expand(f(s(3, 1), 1, 2, 3), s(2, 1, 4)).shape);
        assertArrayEquals(new long[] {2, 4, 6}, DenseOps.range(l(s(), 2), l(s(), 7), l(s(), 2)).l());
    }

    @Test
    void sliceKernelClampsAndReadsNegativeBounds() {
        OnnxModel.Node n = new OnnxModel.Node(0, new Pb(), List.of("x", "st", "en", "ax", "sp"), List.of("y"), "Slice", "", "s");
        DenseOps.Kernel k = DenseOps.compile(n, 17);
        T x = f(s(2, 5), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        T r = k.run(new T[] {x, l(s(1), -3), l(s(1), Long.MAX_VALUE), l(s(1), -1), l(s(1), 1)})[0];
        assertArrayEquals(s(2, 3), r.shape);
        assertArrayEquals(new float[] {2, 3, 4, 7, 8, 9}, r.f(), 0f);
    }

    @Test
    void gatherReadsRowsOfAWeightInNativeMemory() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(4 * 12, 64);
            for (int i = 0; i < 12; i++) {
                m.setAtIndex(ValueLayout.JAVA_FLOAT, i, i);
            }
            T w = T.weight(s(4, 3), m);
            T r = DenseOps.gather(w, l(s(1, 2), 2, -1), 0);
            assertArrayEquals(s(1, 2, 3), r.shape);
            assertArrayEquals(new float[] {6, 7, 8, 9, 10, 11}, r.f(), 0f);
            assertThrows(IllegalArgumentException.class, () -> DenseOps.gather(w, l(s(1), 4), 0));
        }
    }

    @Test
    void matmulWeightPathSplitInTwoAndBatchedPathMatchADoubleSum() {
        java.util.Random rnd = new java.util.Random(7);
        int k = 128;
        int n = 300; // over the split threshold with k: two halves, the second not a multiple of 64
        float[] x = new float[k];
        for (int i = 0; i < k; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(4L * k * n, 64);
            float[] w = new float[k * n];
            for (int i = 0; i < w.length; i++) {
                w[i] = (float) rnd.nextGaussian();
                m.setAtIndex(ValueLayout.JAVA_FLOAT, i, w[i]);
            }
            AtomicInteger parts = new AtomicInteger();
            DenseOps.Parallel counting = (chunks, task) -> {
                parts.addAndGet(chunks);
                DenseOps.Parallel.INLINE.split(chunks, task);
            };
            T y = DenseOps.matmul(f(s(1, 1, k), x), T.weight(s(k, n), m), counting);
            assertEquals(2, parts.get(), "one product in two column halves of whole 64-column blocks");
            T z = DenseOps.matmul(f(s(1, k), x), f(s(1, k, n), w));
            assertArrayEquals(s(1, 1, n), y.shape);
            assertArrayEquals(s(1, 1, n), z.shape);
            for (int j = 0; j < n; j++) {
                double sum = 0;
                double mag = 0;
                for (int i = 0; i < k; i++) {
                    sum += (double) x[i] * w[i * n + j];
                    mag += Math.abs((double) x[i] * w[i * n + j]);
                }
                assertEquals(sum, y.f()[j], k * 1.2e-7 * mag, "weight path, column " + j);
                assertEquals(y.f()[j], z.f()[j], 0f, "both paths sum in order of k with one FMA per term");
            }
        }
    }

    @Test
    void unaryFunctionsAndNormalisations() {
        assertEquals(0.8427007929, DenseOps.erf(1.0), 1e-9);
        assertEquals(-0.9953222650, DenseOps.erf(-2.0), 1e-9);
        assertEquals(0.9999779095, DenseOps.erf(3.0), 1e-9);
        T sm = DenseOps.softmax(f(s(1, 3), 1, 2, 3), 1);
        double e = Math.exp(1) + Math.exp(2) + Math.exp(3);
        assertEquals(Math.exp(3) / e, sm.f()[2], 1e-6);
        T ln = DenseOps.layerNorm(f(s(1, 2), 1, 3), f(s(2), 1, 1), f(s(2), 0, 1), -1, 0f);
        assertArrayEquals(new float[] {-1, 2}, ln.f(), 1e-6f);
        T r = DenseOps.reduceAxes("ReduceMean", f(s(2, 2), 1, 2, 3, 4), new boolean[] {false, true}, true);
        assertArrayEquals(s(2, 1), r.shape);
        assertArrayEquals(new float[] {1.5f, 3.5f}, r.f(), 0f);
    }

    @Test
    void refusalsNameWhatTheyRefuse() {
        OnnxModel.Node conv = new OnnxModel.Node(0, new Pb(), List.of("x"), List.of("y"), "Conv", "", "c1");
        DenseOps.Unsupported u = assertThrows(DenseOps.Unsupported.class, () -> DenseOps.compile(conv, 17));
        assertTrue(u.getMessage().contains("operator Conv (node c1)"), u.getMessage());
        OnnxModel.Node ms = new OnnxModel.Node(0, new Pb(), List.of("x"), List.of("y"), "SkipLayerNormalization",
                "com.microsoft", "n2");
        u = assertThrows(DenseOps.Unsupported.class, () -> DenseOps.compile(ms, 17));
        assertTrue(u.getMessage().contains("com.microsoft:SkipLayerNormalization"), u.getMessage());
        Pb attr = new Pb().add(1, "to").addVarint(3, 10).addVarint(20, 2);
        Pb node = new Pb().add(5, attr);
        OnnxModel.Node cast = new OnnxModel.Node(0, node, List.of("x"), List.of("y"), "Cast", "", "c3");
        u = assertThrows(DenseOps.Unsupported.class, () -> DenseOps.compile(cast, 17));
        assertTrue(u.getMessage().contains("Cast to ONNX element type 10"), u.getMessage());
    }
}
