package io.kvquant.demo.sampling;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class SamplerTest {
    static final float[] LOGITS = {0f, 3f, 1f, 2.5f, -1f};

    @Test
    void greedyIsArgmax() {
        assertEquals(1, Sampler.greedy().sample(LOGITS));
    }

    @Test
    void topKOneIsGreedyAndTopKRestricts() {
        Sampler s = new Sampler(1.0, 1, 1.0, 7);
        for (int i = 0; i < 50; i++) {
            assertEquals(1, s.sample(LOGITS));
        }
        Sampler k2 = new Sampler(5.0, 2, 1.0, 7);
        for (int i = 0; i < 500; i++) {
            int t = k2.sample(LOGITS);
            assertTrue(t == 1 || t == 3, "top-2 sampled token " + t + " (seed 7)");
        }
    }

    @Test
    void topPKeepsTheSmallestSetReachingP() {
        // softmax at T=1: p(1)=0.52, p(3)=0.32, p(2)=0.12, ... top-p 0.8 keeps {1, 3}.
        Sampler s = new Sampler(1.0, 0, 0.8, 11);
        for (int i = 0; i < 500; i++) {
            int t = s.sample(LOGITS);
            assertTrue(t == 1 || t == 3, "top-p 0.8 sampled token " + t + " (seed 11)");
        }
    }

    @Test
    void frequenciesFollowTheSoftmax() {
        Sampler s = new Sampler(1.0, 0, 1.0, 3);
        int n = 20000;
        int[] c = new int[LOGITS.length];
        for (int i = 0; i < n; i++) {
            c[s.sample(LOGITS)]++;
        }
        double z = 0;
        for (float l : LOGITS) {
            z += Math.exp(l);
        }
        for (int k = 0; k < LOGITS.length; k++) {
            double p = Math.exp(LOGITS[k]) / z;
            double sd = Math.sqrt(p * (1 - p) / n);
            assertEquals(p, c[k] / (double) n, 5 * sd + 1e-9, "token " + k + " frequency (seed 3, n " + n + ")");
        }
    }

    @Test
    void sameSeedSameSequence() {
        Sampler a = new Sampler(0.8, 0, 0.95, 42);
        Sampler b = new Sampler(0.8, 0, 0.95, 42);
        for (int i = 0; i < 100; i++) {
            assertEquals(a.sample(LOGITS), b.sample(LOGITS));
        }
    }

    @Test
    void rejectsBadSettings() {
        assertThrows(IllegalArgumentException.class, () -> new Sampler(-1, 0, 1, 0));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(Double.NaN, 0, 1, 0));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(1, -1, 1, 0));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(1, 0, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(1, 0, 1.5, 0));
    }
}
