package io.kvquant.eval.quality;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvQuantConfig;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The pieces of the quality harness that need no model: setting lists, the scores' maths, prompt assembly. */
class QualityUnitTest {

    @Test
    void settingListsKeepOptionsWithTheirSetting() {
        List<KvQuantConfig> s = QualityModel.parseSettings("full,turbo3.5,qjl=k,window=16;kivi2,group=64, k4v3");
        assertEquals(List.of(KvQuantConfig.parse("full"), KvQuantConfig.parse("turbo3.5,qjl=k,window=16"),
                KvQuantConfig.parse("kivi2,group=64"), KvQuantConfig.parse("k4v3")), s);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> QualityModel.parseSettings("qjl=k,turbo3.5"))
                .getMessage().contains("before any setting"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> QualityModel.parseSettings("turbo3.5,,full"))
                .getMessage().contains("empty item"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> QualityModel.parseSettings("turbo3.5;turbo3.5"))
                .getMessage().contains("twice"));
        assertThrows(IllegalArgumentException.class, () -> QualityModel.parseSettings("turbo9"));
    }

    @Test
    void klAndLogSoftmaxMatchClosedForms() {
        float[] a = {0f, (float) Math.log(3)}; // p = (1/4, 3/4)
        float[] b = {0f, 0f};                  // q = (1/2, 1/2)
        double[] la = PerplexityCommand.logSoftmax(a, new double[2]);
        double[] lb = PerplexityCommand.logSoftmax(b, new double[2]);
        assertEquals(Math.log(0.25), la[0], 1e-7);
        assertEquals(Math.log(0.75), la[1], 1e-7);
        double want = 0.25 * Math.log(0.25 / 0.5) + 0.75 * Math.log(0.75 / 0.5);
        assertEquals(want, PerplexityCommand.kl(la, lb), 1e-7);
        assertEquals(0, PerplexityCommand.kl(la, la.clone()), 1e-12);
        // shift invariance of the log-softmax (large logits must not overflow)
        double[] big = PerplexityCommand.logSoftmax(new float[] {1000f, 1000f + (float) Math.log(3)}, new double[2]);
        assertEquals(la[1], big[1], 1e-4);
        assertEquals(1, io.kvquant.demo.sampling.Sampler.argmax(a));
    }

    @Test
    void deltaStandardErrorComesFromTheWindowsSpread() {
        // two settings, three windows of 4 tokens: the setting's mean NLL per window differs from
        // the reference's by +0.03, -0.01 and +0.01 nats
        PerplexityCommand.Score ref = new PerplexityCommand.Score("full");
        PerplexityCommand.Score s = new PerplexityCommand.Score("x");
        double[] diff = {0.03, -0.01, 0.01};
        SplittableRandom rnd = new SplittableRandom(5);
        for (double d : diff) {
            for (int t = 0; t < 4; t++) {
                double base = 1 + rnd.nextDouble();
                ref.add(base, 0, true);
                s.add(base + d, 0, true);
            }
            ref.endWindow();
            s.endWindow();
        }
        double mean = 0.01;
        double sd = Math.sqrt((0.02 * 0.02 + 0.02 * 0.02 + 0) / 2);
        assertEquals(100 * Math.exp(mean) * sd / Math.sqrt(3), PerplexityCommand.deltaPctStandardError(s, ref), 1e-9);
        assertArrayEquals(new double[] {100 * Math.expm1(0.03), 100 * Math.expm1(-0.01), 100 * Math.expm1(0.01)},
                PerplexityCommand.windowDeltaPct(s, ref), 1e-9);
        // the overall Δ ppl is the windows' mean Δ log-perplexity
        assertEquals(100 * Math.expm1(mean), 100 * (s.perplexity() / ref.perplexity() - 1), 1e-9);
        assertEquals(0, PerplexityCommand.deltaPctStandardError(ref, ref), 0);
        // one window: no spread to measure
        PerplexityCommand.Score one = new PerplexityCommand.Score("one");
        one.add(1, 0, true);
        one.endWindow();
        assertTrue(Double.isNaN(PerplexityCommand.deltaPctStandardError(one, one)));
    }

    @Test
    void needlePromptHasTheRequestedLengthAndDepth() {
        long[] filler = new long[500];
        for (int i = 0; i < filler.length; i++) {
            filler[i] = 1000 + i;
        }
        long[] needle = {1, 2, 3};
        long[] question = {7, 8};
        for (double depth : new double[] {0, 0.5, 1}) {
            long[] p = NeedleCommand.assemble(filler, needle, question, 100, depth, new SplittableRandom(3));
            assertEquals(100, p.length);
            int at = (int) Math.round(depth * (100 - 5));
            assertArrayEquals(needle, java.util.Arrays.copyOfRange(p, at, at + 3), "depth " + depth);
            assertArrayEquals(question, java.util.Arrays.copyOfRange(p, 98, 100));
            // the filler around the needle is one contiguous run of the haystack
            for (int i = 1; i < 95; i++) {
                int j = i < at ? i : i + 3;
                int prev = i - 1 < at ? i - 1 : i - 1 + 3;
                assertEquals(p[prev] + 1, p[j], "filler contiguous at " + i + ", depth " + depth);
            }
        }
        String c = NeedleCommand.code(new SplittableRandom(1), 6);
        assertTrue(c.matches("[1-9][0-9]{5}"), c);
    }
}
