package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Where the auto: probe scores: segments spread over the probe text, each after some prefilled text. */
class AutoCalibrationSegmentsTest {

    @Test
    void aLongPromptIsScoredAtTheEndOfEachQuarter() {
        int[][] s = AutoCalibration.segments(1536, 256);
        assertEquals(4, s.length);
        assertArrayEquals(new int[] {352, 384}, s[0]);
        assertArrayEquals(new int[] {736, 768}, s[1]);
        assertArrayEquals(new int[] {1120, 1152}, s[2]);
        assertArrayEquals(new int[] {1504, 1536}, s[3]);
    }

    @Test
    void aShortPromptIsScoredOnItsLastQuarter() {
        assertArrayEquals(new int[][] {{36, 47}}, AutoCalibration.segments(47, 256));
        assertArrayEquals(new int[][] {{6, 8}}, AutoCalibration.segments(AutoCalibration.MIN_TOKENS, 256));
        assertEquals(2, AutoCalibration.segments(600, 256).length);
    }

    @Test
    void everySegmentFollowsPrefilledTextAndEndsInside() {
        for (int chunk : new int[] {1, 16, 64, 256}) {
            for (int n = AutoCalibration.MIN_TOKENS; n <= AutoCalibration.PROBE_TOKENS; n += 7) {
                int[][] s = AutoCalibration.segments(n, chunk);
                assertTrue(s.length >= 1 && s.length <= AutoCalibration.SEGMENTS, n + "/" + chunk);
                assertEquals(n, s[s.length - 1][1], "the last segment ends at the end: " + n + "/" + chunk);
                int fed = 0; // tokens fed before the segment's prefill
                for (int[] g : s) {
                    int len = g[1] - g[0];
                    assertTrue(len >= 1 && len <= AutoCalibration.SEGMENT_TOKENS, n + "/" + chunk);
                    assertTrue(g[0] > fed, "text to prefill before [" + g[0] + ", " + g[1] + "): " + n + "/" + chunk);
                    assertTrue(g[0] >= 3 * g[1] / 4, "a segment is at most a quarter of what precedes its end");
                    fed = g[1] - 1;
                }
            }
        }
    }
}
