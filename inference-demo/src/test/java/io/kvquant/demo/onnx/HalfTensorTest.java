package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import java.nio.FloatBuffer;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The attention output handed back to the graph in its own precision: fp16 and bf16 tensors made
 * from fp32 round to nearest (relative error at most 2^-11 and 2^-8), values representable in the
 * target type come back exactly, and ONNX Runtime reads them back as those values.
 */
class HalfTensorTest {

    @Test
    void fp16AndBf16OutputsRoundToNearest() throws Exception {
        Random rnd = new Random(16);
        float[] x = new float[4096];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (rnd.nextGaussian() * Math.pow(10, rnd.nextInt(5) - 2));
        }
        x[0] = 1.5f;      // exact in both
        x[1] = -0.09375f; // exact in both
        x[2] = 0f;
        for (OnnxJavaType type : new OnnxJavaType[] {OnnxJavaType.FLOAT16, OnnxJavaType.BFLOAT16}) {
            double bound = type == OnnxJavaType.FLOAT16 ? Math.scalb(1.0, -11) : Math.scalb(1.0, -8);
            try (OnnxTensor t = JavaAttentionDecoder.tensor(x, new long[] {1, 4, 8, 128}, type)) {
                assertEquals(type, t.getInfo().type);
                FloatBuffer back = t.getFloatBuffer();
                for (int i = 0; i < x.length; i++) {
                    float y = back.get(i);
                    if (i < 3) {
                        assertEquals(x[i], y, 0f, type + " exact value " + x[i]);
                    } else if (Math.abs(x[i]) > 1e-4) { // fp16 normal range
                        assertTrue(Math.abs(y - x[i]) <= bound * Math.abs(x[i]) * 1.0001, type + ": " + x[i] + " -> " + y);
                    }
                }
            }
        }
        // ties to even in bf16: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7, rounds to 1
        assertEquals(Float.floatToRawIntBits(1f) >>> 16, JavaAttentionDecoder.bf16(1f + 0x1p-8f) & 0xffff);
        assertEquals(Float.floatToRawIntBits(1f + 0x1p-7f) >>> 16, JavaAttentionDecoder.bf16(1f + 0x1.8p-8f) & 0xffff);
    }
}
