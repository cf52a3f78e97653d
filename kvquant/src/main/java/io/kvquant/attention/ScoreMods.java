package io.kvquant.attention;

import java.util.Arrays;

/**
 * What a model does to its attention scores besides scaling and the causal mask, applied by
 * {@link DecodeAttention} in this order, as ONNX Runtime's GroupQueryAttention and Gemma-2 do:
 * <ol>
 *   <li>the scaled score {@code s = scale · q·k};</li>
 *   <li>logit softcapping: {@code s ← c · tanh(s / c)} when {@code softcap = c > 0};</li>
 *   <li>ALiBi: {@code s ← s + slope[h] · (t − p)} for query head h at position p and key position t
 *       (≤ 0 for visible keys);</li>
 *   <li>the sliding window: query p sees keys t with {@code p − window < t ≤ p} ({@code window}
 *       keys, itself included) when {@code window > 0}, else every key up to p;</li>
 *   <li>attention sinks: an extra logit {@code sink[h]} per query head that joins the softmax
 *       denominator only (it has no value): {@code w_t = e^{s_t} / (e^{sink[h]} + Σ_u e^{s_u})}.</li>
 * </ol>
 * Immutable; {@link #NONE} is plain causal attention and costs the kernels nothing.
 *
 * <p>What a kernel does with it (as {@code DecodeAttention.tiles} does): per query (head h,
 * position p) it attends keys {@code [firstVisible(p), p]}; on each block of those keys' scaled
 * scores it calls {@link #apply} (only when {@link #changesScores()}); when the cache centers keys
 * and {@link #needsTrueScores()}, it first adds {@code scale·⟨q, μ⟩} to the scores (they lack it);
 * after the last block (after the split-K merge) it adds {@link #sinkTerm}{@code (h, runningMax)}
 * once to the softmax denominator.
 */
public final class ScoreMods {

    /** Plain causal softmax attention. */
    public static final ScoreMods NONE = new ScoreMods(0, 0f, null, null);

    private final int window;
    private final float softcap;
    private final float[] slopes;
    private final float[] sinks;

    private ScoreMods(int window, float softcap, float[] slopes, float[] sinks) {
        this.window = window;
        this.softcap = softcap;
        this.slopes = slopes;
        this.sinks = sinks;
    }

    /**
     * @param window  keys a query sees, itself included (0: all earlier keys)
     * @param softcap the cap c of {@code c · tanh(s / c)} (0: none)
     * @param slopes  ALiBi slope per query head, or null
     * @param sinks   sink logit per query head, or null
     * @return {@link #NONE} when nothing is set
     */
    public static ScoreMods of(int window, float softcap, float[] slopes, float[] sinks) {
        if (window < 0) {
            throw new IllegalArgumentException("sliding window must be >= 0 keys (0 = none), got " + window);
        }
        if (!(softcap >= 0) || Float.isInfinite(softcap)) {
            throw new IllegalArgumentException("softcap must be a finite value >= 0 (0 = none), got " + softcap);
        }
        check(slopes, "ALiBi slope");
        check(sinks, "attention sink");
        if (window == 0 && softcap == 0 && slopes == null && sinks == null) {
            return NONE;
        }
        return new ScoreMods(window, softcap, slopes == null ? null : slopes.clone(), sinks == null ? null : sinks.clone());
    }

    private static void check(float[] a, String what) {
        if (a == null) {
            return;
        }
        for (float x : a) {
            if (!Float.isFinite(x)) {
                throw new IllegalArgumentException(what + " values must be finite, got " + x);
            }
        }
    }

    /** Keys a query sees, itself included; 0 = no window. */
    public int window() {
        return window;
    }

    public float softcap() {
        return softcap;
    }

    /** ALiBi slopes per query head (a copy), or null. */
    public float[] slopes() {
        return slopes == null ? null : slopes.clone();
    }

    /** Sink logits per query head (a copy), or null. */
    public float[] sinks() {
        return sinks == null ? null : sinks.clone();
    }

    /** True when {@link #apply} changes scores (softcap or ALiBi). */
    public boolean changesScores() {
        return softcap > 0 || slopes != null;
    }

    /**
     * True when the modifiers depend on the scores' absolute level (softcap, sinks), not only on
     * their differences: a centering cache must add back the per-query constant it removed.
     */
    public boolean needsTrueScores() {
        return softcap > 0 || sinks != null;
    }

    /** Checks that per-head values cover {@code qHeads} query heads; one-line error otherwise. */
    public void checkHeads(int qHeads) {
        if (slopes != null && slopes.length != qHeads || sinks != null && sinks.length != qHeads) {
            throw new IllegalArgumentException("score modifiers hold " + (slopes != null ? slopes.length : sinks.length)
                    + " per-head values for " + qHeads + " query heads");
        }
    }

    /** The first key position the query at {@code qPos} sees (0 without a window). */
    public int firstVisible(int qPos) {
        return window > 0 ? Math.max(0, qPos - window + 1) : 0;
    }

    /**
     * Softcap then ALiBi on the {@code n} scaled scores {@code sc[base..base+n)} of keys
     * {@code t0..t0+n-1} for query head {@code qHead} at position {@code qPos}. The one place the
     * kernels modify scores (decode, prefill, split-K: every tile calls this on its visible scores).
     */
    public void apply(float[] sc, int base, int n, int qHead, int qPos, int t0) {
        if (softcap > 0) {
            float c = softcap;
            float inv = 1f / c;
            for (int k = base; k < base + n; k++) {
                sc[k] = c * (float) Math.tanh(sc[k] * inv);
            }
        }
        if (slopes != null) {
            float m = slopes[qHead];
            int rel = t0 - qPos;
            for (int k = 0; k < n; k++) {
                sc[base + k] += m * (rel + k);
            }
        }
    }

    /**
     * The sink's share of the softmax denominator relative to the running maximum {@code max}:
     * {@code e^{sink[h] − max}}, 0 without sinks. Added ONCE to a query's final (merged) sum.
     */
    public double sinkTerm(int qHead, float max) {
        return sinks == null ? 0 : Math.exp((double) sinks[qHead] - max);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ScoreMods m && m.window == window && Float.compare(m.softcap, softcap) == 0
                && Arrays.equals(m.slopes, slopes) && Arrays.equals(m.sinks, sinks);
    }

    @Override
    public int hashCode() {
        return ((window * 31 + Float.hashCode(softcap)) * 31 + Arrays.hashCode(slopes)) * 31 + Arrays.hashCode(sinks);
    }

    @Override
    public String toString() {
        if (this == NONE) {
            return "causal";
        }
        StringBuilder b = new StringBuilder();
        if (window > 0) {
            b.append("window=").append(window);
        }
        if (softcap > 0) {
            b.append(b.isEmpty() ? "" : ",").append("softcap=").append(softcap);
        }
        if (slopes != null) {
            b.append(b.isEmpty() ? "" : ",").append("alibi=").append(Arrays.toString(slopes));
        }
        if (sinks != null) {
            b.append(b.isEmpty() ? "" : ",").append("sinks=").append(Arrays.toString(sinks));
        }
        return b.toString();
    }
}
