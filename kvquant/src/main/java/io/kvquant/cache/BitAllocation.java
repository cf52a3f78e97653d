package io.kvquant.cache;

import io.kvquant.codec.Codecs;
import io.kvquant.codec.VectorCodec;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Per-layer, per-K/V bit allocation for an {@code auto:<b>} setting: spend a fixed average
 * budget where the model is sensitive.
 *
 * <p>How: the caller supplies a {@link Probe} that runs the model on a short text (the prompt's
 * first chunk) with a given cache setting and returns the mean KL divergence of its next-token
 * distributions against full precision. For each layer and each of K and V, the probe runs once
 * with only that component quantized at {@link #PROBE_BITS} bits (the rest full precision or 8
 * bits). For small errors KL is proportional to the quantizer's mean squared error, so the KL of
 * component c at b bits is predicted as {@code s_c · D(b)}, with {@code s_c = KL_c / D(PROBE_BITS)}
 * and D(b) the codec's relative MSE (measured here on random vectors, since the rotation makes it
 * the same for every input). The plan minimises the predicted Σ s_c · D(b_c) subject to
 * Σ b_c = 2 · layers · budget, exactly, by dynamic programming over half-bit steps in
 * [{@link #MIN_BITS}, {@link #MAX_BITS}]. K and V of a layer hold the same number of elements,
 * so the average nominal bits, and the bytes, equal those of the uniform setting of the budget.
 */
public final class BitAllocation {

    /** Rate at which each component is probed. */
    public static final double PROBE_BITS = 2.0;
    /** Lowest rate a component may get. */
    public static final double MIN_BITS = 2.0;
    /** Highest rate a component may get. */
    public static final double MAX_BITS = 8.0;
    /** KL floor per component, so that a component whose probe shows nothing still ranks below the rest. */
    static final double KL_FLOOR = 1e-9;

    private BitAllocation() {
    }

    /** Runs the model with a cache setting on the probe text; returns the mean KL (nats) against full precision. */
    @FunctionalInterface
    public interface Probe {
        double kl(KvQuantConfig setting);
    }

    /**
     * The chosen plan: the resolved setting, the probe's KL per layer for K and V at
     * {@link #PROBE_BITS}, the bits per layer, and the predicted KL of the whole plan.
     */
    public record Plan(KvQuantConfig setting, double[] keyKl, double[] valueKl, double[] keyBits, double[] valueBits,
                       double predictedKl, String check) {
        public Plan(KvQuantConfig setting, double[] keyKl, double[] valueKl, double[] keyBits, double[] valueBits,
                    double predictedKl) {
            this(setting, keyKl, valueKl, keyBits, valueBits, predictedKl, "");
        }

        /** One line: the bits per layer, the probe's check of the candidates, and the resolved setting. */
        public String describe() {
            StringBuilder b = new StringBuilder("auto plan:");
            for (int l = 0; l < keyBits.length; l++) {
                b.append(" L").append(l).append(" k").append(fmt(keyBits[l])).append('v').append(fmt(valueBits[l]));
            }
            b.append(" (predicted KL ").append(String.format(java.util.Locale.ROOT, "%.5f", predictedKl));
            if (!check.isEmpty()) {
                b.append("; ").append(check);
            }
            return b.append(") = ").append(setting).toString();
        }

        /** This plan with the probe's check of the candidates recorded. */
        Plan checked(String what) {
            return new Plan(setting, keyKl, valueKl, keyBits, valueBits, predictedKl, what);
        }
    }

    /** The probe setting with only one component of one layer quantized at {@code bits}. */
    public static KvQuantConfig probeSetting(KvQuantConfig auto, int layers, int layer, boolean key, double bits) {
        List<KvQuantConfig.LayerOverride> o = new ArrayList<>();
        o.add(new KvQuantConfig.LayerOverride(0, layers - 1, KvQuantConfig.Kind.FULL, 32, 32));
        o.add(new KvQuantConfig.LayerOverride(layer, layer, KvQuantConfig.Kind.TURBO, key ? bits : MAX_BITS,
                key ? MAX_BITS : bits));
        return auto.withLayers(List.of()).withLayers(o);
    }

    /** Probes every component of {@code auto} and allocates its budget. */
    public static Plan plan(KvQuantConfig auto, int layers, int headDim, Probe probe) {
        if (!auto.needsCalibration()) {
            throw new IllegalArgumentException("'" + auto + "' is not an auto: setting");
        }
        double[] kk = new double[layers];
        double[] vk = new double[layers];
        for (int l = 0; l < layers; l++) {
            kk[l] = probe.kl(probeSetting(auto, layers, l, true, PROBE_BITS));
            vk[l] = probe.kl(probeSetting(auto, layers, l, false, PROBE_BITS));
        }
        // the probes run as the setting would (window included), so the probe codec is trimmed as the plan's are
        double[] d = distortions(auto, headDim);
        double dProbe = d[(int) Math.round(2 * (PROBE_BITS - MIN_BITS))];
        Plan dp = allocate(auto, kk, vk, d, dProbe);
        return check(auto, layers, probe, dp, d, dProbe);
    }

    /**
     * The allocation's model (KL proportional to MSE, components adding up) is an approximation, so
     * the plan is not taken on its prediction: the allocated plan and the fixed settings of the same
     * budget — every layer at b bits (the plain preset), at k(b+½)v(b−½) and k(b−½)v(b+½), and the
     * boundary plan (first and last layer at b + 1, the others paying for it) — each run once on the
     * probe text, as they would run (window included), and the one with the lowest measured KL is the
     * plan. So on the probe text the plan is never worse than any fixed setting of its budget.
     */
    static Plan check(KvQuantConfig auto, int layers, Probe probe, Plan dp, double[] d, double dProbe) {
        double b = Math.rint(auto.autoBits() * 2) / 2;
        List<Plan> candidates = new ArrayList<>();
        List<String> names = new ArrayList<>();
        candidates.add(dp);
        names.add("allocated");
        for (double[] kv : new double[][]{{b, b}, {b + 0.5, b - 0.5}, {b - 0.5, b + 0.5}}) {
            double[] kb = new double[layers];
            double[] vb = new double[layers];
            java.util.Arrays.fill(kb, kv[0]);
            java.util.Arrays.fill(vb, kv[1]);
            addCandidate(auto, dp, d, dProbe, kb, vb, "k" + fmt(kv[0]) + "v" + fmt(kv[1]), candidates, names);
        }
        double[][] ends = boundaryPlan(layers, b);
        if (ends != null) {
            addCandidate(auto, dp, d, dProbe, ends[0], ends[1], "ends+1", candidates, names);
        }
        if (candidates.size() == 1) {
            return dp;
        }
        int best = -1;
        double bestKl = Double.POSITIVE_INFINITY;
        StringBuilder what = new StringBuilder("probe KL");
        for (int i = 0; i < candidates.size(); i++) {
            double kl = probe.kl(candidates.get(i).setting());
            what.append(' ').append(names.get(i)).append(' ').append(String.format(java.util.Locale.ROOT, "%.5f", kl));
            if (kl < bestKl) {
                bestKl = kl;
                best = i;
            }
        }
        return candidates.get(best).checked(what.append(", ").append(names.get(best)).append(" kept").toString());
    }

    /** Adds the candidate with these bits per layer unless a bit width is out of range or it is the allocated plan. */
    private static void addCandidate(KvQuantConfig auto, Plan dp, double[] d, double dProbe, double[] kb, double[] vb,
                                     String name, List<Plan> candidates, List<String> names) {
        int layers = kb.length;
        for (int l = 0; l < layers; l++) {
            if (kb[l] < MIN_BITS || vb[l] < MIN_BITS || kb[l] > MAX_BITS || vb[l] > MAX_BITS) {
                return;
            }
        }
        if (java.util.Arrays.equals(kb, dp.keyBits()) && java.util.Arrays.equals(vb, dp.valueBits())) {
            return;
        }
        List<KvQuantConfig.LayerOverride> o = new ArrayList<>();
        double predicted = 0;
        for (int l = 0; l < layers; l++) {
            o.add(new KvQuantConfig.LayerOverride(l, l, KvQuantConfig.Kind.TURBO, kb[l], vb[l]));
            predicted += Math.max(KL_FLOOR, dp.keyKl()[l]) / dProbe * d[(int) Math.round(2 * (kb[l] - MIN_BITS))]
                    + Math.max(KL_FLOOR, dp.valueKl()[l]) / dProbe * d[(int) Math.round(2 * (vb[l] - MIN_BITS))];
        }
        candidates.add(new Plan(auto.withLayers(o), dp.keyKl(), dp.valueKl(), kb.clone(), vb.clone(), predicted));
        names.add(name);
    }

    /**
     * The boundary plan of budget b: the first and last layer at b + 1 bits for keys and values, the
     * 4 bits this costs taken back half a bit at a time from the other layers' components in turn
     * (values first, from layer 1 on), so the total is the uniform setting's; null with fewer than 3
     * layers or where a component would leave [{@link #MIN_BITS}, {@link #MAX_BITS}].
     */
    static double[][] boundaryPlan(int layers, double b) {
        if (layers < 3) {
            return null;
        }
        double[] kb = new double[layers];
        double[] vb = new double[layers];
        java.util.Arrays.fill(kb, b);
        java.util.Arrays.fill(vb, b);
        kb[0] += 1;
        vb[0] += 1;
        kb[layers - 1] += 1;
        vb[layers - 1] += 1;
        int middle = 2 * (layers - 2);
        for (int step = 0; step < 8; step++) {
            int c = step % middle;
            int l = 1 + c % (layers - 2);
            if (c < layers - 2) {
                vb[l] -= 0.5;
            } else {
                kb[l] -= 0.5;
            }
        }
        for (int l = 0; l < layers; l++) {
            if (kb[l] < MIN_BITS || vb[l] < MIN_BITS || kb[l] > MAX_BITS || vb[l] > MAX_BITS) {
                return null;
            }
        }
        return new double[][] {kb, vb};
    }

    /**
     * Relative MSE of the setting's codec at each half-bit rate in [MIN_BITS, MAX_BITS] (index
     * 2·(b − MIN_BITS)), as the setting builds it (trimmed where {@link KvCaches#codeBits} says).
     */
    public static double[] distortions(KvQuantConfig cfg, int headDim) {
        int n = (int) Math.round(2 * (MAX_BITS - MIN_BITS)) + 1;
        double[] d = new double[n];
        int vectors = 512;
        Random rnd = new Random(20_251_130L);
        float[][] xs = new float[vectors][headDim];
        for (float[] x : xs) {
            for (int j = 0; j < headDim; j++) {
                x[j] = (float) rnd.nextGaussian();
            }
        }
        try (Arena arena = Arena.ofConfined()) {
            for (int i = 0; i < n; i++) {
                double b = MIN_BITS + i / 2.0;
                VectorCodec c = Codecs.turbo(headDim, KvCaches.codeBits(cfg, headDim, b, false), false, cfg.rotation(), cfg.qjlKind(), cfg.seed() * 7919L + i,
                        cfg.normCorrection());
                MemorySegment rec = arena.allocate(c.recordBytes());
                float[] y = new float[headDim];
                double err = 0;
                double norm = 0;
                for (float[] x : xs) {
                    c.encode(x, 0, rec, 0);
                    c.decode(rec, 0, y, 0);
                    for (int j = 0; j < headDim; j++) {
                        double e = x[j] - y[j];
                        err += e * e;
                        norm += (double) x[j] * x[j];
                    }
                }
                d[i] = err / norm;
            }
        }
        return d;
    }

    /**
     * The allocation itself: minimises Σ_l s_kl·D(bk_l) + s_vl·D(bv_l) with Σ (bk_l + bv_l) equal to
     * 2·layers·budget (rounded to half bits), each b in [MIN_BITS, MAX_BITS] by half bits.
     *
     * @param keyKl   probe KL per layer with only its keys at {@link #PROBE_BITS}
     * @param valueKl probe KL per layer with only its values at {@link #PROBE_BITS}
     * @param d       relative MSE per half-bit rate, as {@link #distortions} gives it
     */
    public static Plan allocate(KvQuantConfig auto, double[] keyKl, double[] valueKl, double[] d) {
        return allocate(auto, keyKl, valueKl, d, d[(int) Math.round(2 * (PROBE_BITS - MIN_BITS))]);
    }

    /** As {@link #allocate(KvQuantConfig, double[], double[], double[])}, with the probe codec's own relative MSE. */
    public static Plan allocate(KvQuantConfig auto, double[] keyKl, double[] valueKl, double[] d, double dProbe) {
        int layers = keyKl.length;
        int comps = 2 * layers;
        int rates = d.length;
        double[] sens = new double[comps];
        for (int l = 0; l < layers; l++) {
            sens[2 * l] = Math.max(KL_FLOOR, keyKl[l]) / dProbe;
            sens[2 * l + 1] = Math.max(KL_FLOOR, valueKl[l]) / dProbe;
        }
        // budget in half-bit steps above MIN_BITS, over all components
        int total = (int) Math.round(2 * comps * (auto.autoBits() - MIN_BITS));
        int maxStep = rates - 1;
        total = Math.max(0, Math.min(total, comps * maxStep));
        double[][] cost = new double[comps + 1][total + 1];
        int[][] choice = new int[comps + 1][total + 1];
        for (double[] row : cost) {
            java.util.Arrays.fill(row, Double.POSITIVE_INFINITY);
        }
        cost[0][0] = 0;
        for (int c = 0; c < comps; c++) {
            for (int used = 0; used <= total; used++) {
                if (cost[c][used] == Double.POSITIVE_INFINITY) {
                    continue;
                }
                for (int r = 0; r <= maxStep && used + r <= total; r++) {
                    double v = cost[c][used] + sens[c] * d[r];
                    if (v < cost[c + 1][used + r]) {
                        cost[c + 1][used + r] = v;
                        choice[c + 1][used + r] = r;
                    }
                }
            }
        }
        double[] kb = new double[layers];
        double[] vb = new double[layers];
        int used = total;
        for (int c = comps; c > 0; c--) {
            int r = choice[c][used];
            double b = MIN_BITS + r / 2.0;
            if ((c - 1) % 2 == 0) {
                kb[(c - 1) / 2] = b;
            } else {
                vb[(c - 1) / 2] = b;
            }
            used -= r;
        }
        List<KvQuantConfig.LayerOverride> plan = new ArrayList<>();
        for (int l = 0; l < layers; l++) {
            plan.add(new KvQuantConfig.LayerOverride(l, l, KvQuantConfig.Kind.TURBO, kb[l], vb[l]));
        }
        return new Plan(auto.withLayers(plan), keyKl.clone(), valueKl.clone(), kb, vb, cost[comps][total]);
    }

    private static String fmt(double b) {
        return b == Math.rint(b) ? Integer.toString((int) b) : Double.toString(b);
    }
}
