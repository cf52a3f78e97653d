package io.kvquant.eval.distortion;

import io.kvquant.codec.Codebook;
import io.kvquant.codec.QjlKind;
import io.kvquant.codec.Rotation;
import io.kvquant.codec.RotationKind;
import io.kvquant.codec.TurboQuantMse;
import io.kvquant.codec.TurboQuantProd;
import io.kvquant.codec.VectorCodec;
import io.kvquant.eval.Charts;
import io.kvquant.eval.Json;
import io.kvquant.eval.RunContext;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kvq eval distortion}: the TurboQuant paper's distortion figures, measured. */
@Command(name = "distortion", mixinStandardHelpOptions = true,
        description = {"Measures D_mse, D_prod and inner-product bias of TurboQuant on random vectors,",
                "beside the paper's theory and bounds. Prints a table (or --json); --out writes JSON, CSV, PNG."},
        footer = {"", "Example: ./kvq eval distortion --dim 128 --vectors 20000 --out results/distortion"})
public final class DistortionCommand implements Callable<Integer> {

    @Option(names = "--dim", description = "Vector dimension (default: ${DEFAULT-VALUE}).", defaultValue = "128")
    int dim;

    @Option(names = "--bits", split = ",", description = "Bit widths, 1..8 (default: ${DEFAULT-VALUE}).", defaultValue = "1,2,3,4")
    int[] bits;

    @Option(names = "--rotations", split = ",", description = "haar, hadamard (default: ${DEFAULT-VALUE}).", defaultValue = "haar,hadamard")
    String[] rotations;

    @Option(names = "--vectors", description = "Vectors per cell (default: ${DEFAULT-VALUE}).", defaultValue = "20000")
    int vectors;

    @Option(names = "--data", description = "unit (uniform on the sphere), gaussian (non-unit), heavy (Student-t, 3 d.o.f., outlier channels) (default: ${DEFAULT-VALUE}).",
            defaultValue = "unit")
    String data;

    @Option(names = "--qjl", description = "QJL projection: gaussian or orthogonal (default: ${DEFAULT-VALUE}).", defaultValue = "gaussian")
    String qjl;

    @Option(names = "--seed", description = "Random seed (default: ${DEFAULT-VALUE}).", defaultValue = "20250425")
    long seed;

    @Option(names = "--json", description = "Print JSON to stdout instead of the table.")
    boolean json;

    @Option(names = "--out", description = "Directory for distortion.json, distortion.csv and PNG plots.")
    Path out;

    @Override
    public Integer call() throws IOException {
        if (dim < 2 || dim > 4096) {
            throw new IllegalArgumentException("--dim must be in [2, 4096], got " + dim);
        }
        if (vectors < 10) {
            throw new IllegalArgumentException("--vectors must be at least 10, got " + vectors);
        }
        for (int b : bits) {
            if (b < 1 || b > 8) {
                throw new IllegalArgumentException("--bits values must be in 1..8, got " + b);
            }
        }
        String dataKind = data.toLowerCase(Locale.ROOT);
        if (!List.of("unit", "gaussian", "heavy").contains(dataKind)) {
            throw new IllegalArgumentException("--data must be unit, gaussian or heavy, not '" + data + "'");
        }
        QjlKind qk = switch (qjl.toLowerCase(Locale.ROOT)) {
            case "gaussian" -> QjlKind.GAUSSIAN;
            case "orthogonal" -> QjlKind.ORTHOGONAL;
            default -> throw new IllegalArgumentException("--qjl must be gaussian or orthogonal, not '" + qjl + "'");
        };
        List<RotationKind> rots = new ArrayList<>();
        for (String r : rotations) {
            rots.add(RotationKind.parse(r));
        }
        List<Map<String, Object>> rows = new ArrayList<>();
        int cells = rots.size() * bits.length * 2;
        int done = 0;
        io.kvquant.eval.Progress bar = new io.kvquant.eval.Progress(new java.io.PrintWriter(System.err, true), "distortion", cells);
        for (RotationKind rk : rots) {
            for (int b : bits) {
                for (String variant : List.of("mse", "prod")) {
                    bar.update(done++, rk.name().toLowerCase(Locale.ROOT) + " b=" + b + " " + variant);
                    rows.add(measure(rk, b, variant, qk, dataKind));
                }
            }
        }
        bar.done();
        Map<String, Object> config = new LinkedHashMap<>();
        config.put("dim", dim);
        config.put("vectors", vectors);
        config.put("data", dataKind);
        config.put("qjl", qk.name().toLowerCase(Locale.ROOT));
        config.put("seed", seed);
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("run", RunContext.capture(1, config));
        doc.put("results", rows);
        String js = Json.write(doc);
        if (json) {
            System.out.println(js);
        } else {
            printTable(rows);
        }
        if (out != null) {
            Files.createDirectories(out);
            RunContext.writeAtomically(out.resolve("distortion.json"), js + "\n");
            RunContext.writeAtomically(out.resolve("distortion.csv"), csv(rows));
            plot(rows, rots);
            System.err.println("wrote " + out.resolve("distortion.json") + ", distortion.csv, distortion_mse.png, distortion_prod.png");
        }
        return 0;
    }

    private Map<String, Object> measure(RotationKind rk, int b, String variant, QjlKind qk, String dataKind) {
        Rotation rot = Rotation.create(rk, dim, seed);
        VectorCodec codec = variant.equals("mse") ? new TurboQuantMse(dim, b, rot, false)
                : new TurboQuantProd(dim, b, rot, qk, seed);
        SplittableRandom rnd = new SplittableRandom(seed * 1_000_003L + b * 31L + variant.hashCode() + rk.ordinal());
        MemorySegment rec = MemorySegment.ofArray(new byte[codec.recordBytes()]);
        float[] state = new float[codec.queryStateSize()];
        float[] dec = new float[dim];
        double mse = 0;
        double prod = 0;
        double biasSum = 0;
        double biasSq = 0;
        double sxy = 0;
        double sxx = 0;
        for (int i = 0; i < vectors; i++) {
            float[] x = sample(rnd, dataKind);
            double xx = dot(x, x);
            codec.encode(x, 0, rec, 0);
            codec.decode(rec, 0, dec, 0);
            double err = 0;
            for (int k = 0; k < dim; k++) {
                double e = x[k] - dec[k];
                err += e * e;
            }
            mse += xx > 0 ? err / xx : 0;
            // D_prod: an independent random unit query
            float[] y = unit(rnd);
            codec.prepareQuery(y, 0, state, 0);
            double n = Math.sqrt(xx);
            double e1 = (codec.score(state, 0, rec, 0) - dot(x, y)) / (n > 0 ? n : 1);
            prod += e1 * e1;
            // bias: a query correlated with x (⟨y, x/‖x‖⟩ ≈ 0.6), where a multiplicative bias shows
            float[] g = unit(rnd);
            float[] yc = new float[dim];
            for (int k = 0; k < dim; k++) {
                yc[k] = (float) (0.6 * x[k] / (n > 0 ? n : 1) + 0.8 * g[k]);
            }
            codec.prepareQuery(yc, 0, state, 0);
            double truth = dot(x, yc) / (n > 0 ? n : 1);
            double est = codec.score(state, 0, rec, 0) / (n > 0 ? n : 1);
            biasSum += est - truth;
            biasSq += (est - truth) * (est - truth);
            sxy += est * truth;
            sxx += truth * truth;
        }
        double dMse = mse / vectors;
        double dProd = prod / vectors;
        double bias = biasSum / vectors;
        double biasSe = Math.sqrt(Math.max(0, biasSq / vectors - bias * bias) / vectors);
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("rotation", rk.name().toLowerCase(Locale.ROOT));
        row.put("dim", dim);
        row.put("bits", b);
        row.put("variant", variant);
        row.put("vectors", vectors);
        row.put("d_mse", dMse);
        row.put("d_prod", dProd);
        row.put("ip_bias", bias);
        row.put("ip_bias_se", biasSe);
        row.put("ip_bias_z", biasSe > 0 ? bias / biasSe : 0.0);
        row.put("ip_slope", sxy / sxx);
        double four = Math.pow(4, -b);
        if (variant.equals("mse")) {
            row.put("theory_d_mse", Codebook.forDimension(dim, b).expectedMsePerVector());
            row.put("lower_bound", four);
            row.put("upper_bound", Math.sqrt(3) * Math.PI / 2 * four);
        } else {
            double prev = b == 1 ? 1.0 : Codebook.forDimension(dim, b - 1).expectedMsePerVector();
            row.put("theory_d_prod", Math.PI / (2.0 * dim) * prev);
            row.put("lower_bound", four / dim);
            row.put("upper_bound", Math.sqrt(3) * Math.PI * Math.PI / dim * four);
        }
        row.put("bits_per_element", codec.bitsPerElement());
        return row;
    }

    private float[] sample(SplittableRandom r, String kind) {
        float[] x = new float[dim];
        switch (kind) {
            case "unit" -> {
                return unit(r);
            }
            case "gaussian" -> {
                double scale = 0.5 + 4 * r.nextDouble();
                for (int i = 0; i < dim; i++) {
                    x[i] = (float) (gauss(r) * scale);
                }
            }
            default -> {
                // Student-t with 3 degrees of freedom, and 4 channels ×8 (outlier channels)
                for (int i = 0; i < dim; i++) {
                    double chi = 0;
                    for (int k = 0; k < 3; k++) {
                        double g = gauss(r);
                        chi += g * g;
                    }
                    x[i] = (float) (gauss(r) / Math.sqrt(chi / 3) * (i % (dim / 4) == 0 ? 8 : 1));
                }
            }
        }
        return x;
    }

    private float[] unit(SplittableRandom r) {
        float[] x = new float[dim];
        double n = 0;
        for (int i = 0; i < dim; i++) {
            x[i] = (float) gauss(r);
            n += x[i] * x[i];
        }
        float inv = (float) (1 / Math.sqrt(n));
        for (int i = 0; i < dim; i++) {
            x[i] *= inv;
        }
        return x;
    }

    private static double gauss(SplittableRandom r) {
        double u = r.nextDouble();
        double v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(1 - u)) * Math.cos(2 * Math.PI * v);
    }

    private static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += (double) a[i] * b[i];
        }
        return s;
    }

    private static void printTable(List<Map<String, Object>> rows) {
        System.out.printf(Locale.ROOT, "%-9s %4s %-5s %11s %11s %11s %11s %9s %7s %11s %11s%n",
                "rotation", "bits", "var", "D_mse", "theory", "D_prod", "theory", "bias/SE", "slope", "lower", "upper");
        for (Map<String, Object> r : rows) {
            boolean mse = r.get("variant").equals("mse");
            System.out.printf(Locale.ROOT, "%-9s %4d %-5s %11.5g %11s %11.5g %11s %9.2f %7.4f %11.4g %11.4g%n",
                    r.get("rotation"), (Integer) r.get("bits"), r.get("variant"), (Double) r.get("d_mse"),
                    mse ? String.format(Locale.ROOT, "%.5g", (Double) r.get("theory_d_mse")) : "-",
                    (Double) r.get("d_prod"),
                    mse ? "-" : String.format(Locale.ROOT, "%.5g", (Double) r.get("theory_d_prod")),
                    (Double) r.get("ip_bias_z"), (Double) r.get("ip_slope"),
                    (Double) r.get("lower_bound"), (Double) r.get("upper_bound"));
        }
    }

    private static String csv(List<Map<String, Object>> rows) {
        StringBuilder b = new StringBuilder();
        List<String> keys = new ArrayList<>();
        for (Map<String, Object> r : rows) {
            for (String k : r.keySet()) {
                if (!keys.contains(k)) {
                    keys.add(k);
                }
            }
        }
        b.append(String.join(",", keys)).append('\n');
        for (Map<String, Object> r : rows) {
            List<String> v = new ArrayList<>();
            for (String k : keys) {
                Object o = r.get(k);
                v.add(o == null ? "" : o.toString());
            }
            b.append(String.join(",", v)).append('\n');
        }
        return b.toString();
    }

    private void plot(List<Map<String, Object>> rows, List<RotationKind> rots) throws IOException {
        for (String variant : List.of("mse", "prod")) {
            List<Charts.Line> lines = new ArrayList<>();
            String key = variant.equals("mse") ? "d_mse" : "d_prod";
            String theoryKey = variant.equals("mse") ? "theory_d_mse" : "theory_d_prod";
            List<Map<String, Object>> sel = null;
            for (RotationKind rk : rots) {
                sel = rows.stream().filter(r -> r.get("variant").equals(variant)
                        && r.get("rotation").equals(rk.name().toLowerCase(Locale.ROOT))).toList();
                lines.add(new Charts.Line("measured, " + rk.name().toLowerCase(Locale.ROOT) + " rotation",
                        col(sel, "bits"), col(sel, key), false));
            }
            if (sel != null) {
                lines.add(new Charts.Line("theory (Lloyd–Max at d=" + dim + ")", col(sel, "bits"), col(sel, theoryKey), false));
                lines.add(new Charts.Line("upper bound", col(sel, "bits"), col(sel, "upper_bound"), true));
                lines.add(new Charts.Line("lower bound", col(sel, "bits"), col(sel, "lower_bound"), true));
            }
            String title = variant.equals("mse") ? "TurboQuant_mse: D_mse vs bits (d=" + dim + ", " + data + " vectors)"
                    : "TurboQuant_prod: D_prod vs bits (d=" + dim + ", random unit queries)";
            Charts.logLines(out.resolve("distortion_" + variant + ".png"), title, "bits per coordinate (b)",
                    variant.equals("mse") ? "D_mse  (E‖x − x̃‖² / ‖x‖²)" : "D_prod  (E(⟨y,x⟩ − est)²)", lines);
        }
    }

    private static double[] col(List<Map<String, Object>> rows, String key) {
        double[] v = new double[rows.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = ((Number) rows.get(i).get(key)).doubleValue();
        }
        return v;
    }
}
