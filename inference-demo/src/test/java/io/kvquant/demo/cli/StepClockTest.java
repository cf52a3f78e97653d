package io.kvquant.demo.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.Test;

class StepClockTest {

    @Test
    void steadyRateIsTheSecondHalfOfTheSteps() {
        // 4 slow warm-up steps of 100 ms, then 12 steps of 2 ms: 16 steps, the second half
        // (steps 9..16) took 8 x 2 ms, so 500 steps/s; the slow start is left out
        GenerateCommand.StepClock c = new GenerateCommand.StepClock(64);
        long t = 0;
        for (int i = 0; i < 16; i++) {
            t += i < 4 ? 100_000_000L : 2_000_000L;
            c.record(t);
        }
        assertEquals(500.0, c.steadyTokensPerSecond(), 1e-9);
    }

    @Test
    void tooFewStepsGiveNoFigureAndTheClockNeverOverruns() {
        GenerateCommand.StepClock c = new GenerateCommand.StepClock(7);
        for (int i = 1; i <= 20; i++) {
            c.record(i * 1_000_000L); // beyond its capacity: ignored, no exception
        }
        assertTrue(Double.isNaN(c.steadyTokensPerSecond()));
        GenerateCommand.StepClock none = new GenerateCommand.StepClock(0);
        none.record(1);
        assertTrue(Double.isNaN(none.steadyTokensPerSecond()));
    }

    @Test
    void runMetadataNamesTheCollector() {
        Map<String, Object> m = RunStats.metadata(2);
        String gc = (String) m.get("jvm_gc");
        assertTrue(gc != null && !gc.isBlank(), "jvm_gc: " + gc);
        assertEquals(Runtime.getRuntime().maxMemory(), ((Number) m.get("jvm_max_heap_bytes")).longValue());
    }
}
