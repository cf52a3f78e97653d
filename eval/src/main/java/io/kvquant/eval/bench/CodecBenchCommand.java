package io.kvquant.eval.bench;

import io.kvquant.codec.Codecs;
import io.kvquant.codec.QjlKind;
import io.kvquant.codec.RotationKind;
import io.kvquant.codec.VectorCodec;
import io.kvquant.eval.Json;
import io.kvquant.eval.RunContext;
import io.kvquant.simd.Simd;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq bench codec}: vectors per second to quantize and dequantize, single thread, with the
 * SIMD backend and (in a second JVM started by this one, {@code -Dkvquant.simd=scalar}) the
 * scalar reference, so that both are measured in one run. Medians over repeats after warm-up.
 */
@Command(name = "codec", mixinStandardHelpOptions = true,
        description = "Codec throughput: quantize/dequantize vectors per second, SIMD vs scalar.",
        footer = {"", "Example: ./kvq bench codec --dim 128 --rates 2.5,3.5,4"})
public final class CodecBenchCommand implements Callable<Integer> {

    @Option(names = "--dim", defaultValue = "128", description = "Vector dimension (default: ${DEFAULT-VALUE}).")
    int dim;

    @Option(names = "--rates", split = ",", defaultValue = "2.5,3.5,4", description = "Bits per coordinate (default: ${DEFAULT-VALUE}).")
    double[] rates;

    @Option(names = "--rotation", defaultValue = "hadamard", description = "hadamard or haar (default: ${DEFAULT-VALUE}).")
    String rotation;

    @Option(names = "--repeats", defaultValue = "7", description = "Timed repeats; the median is reported (default: ${DEFAULT-VALUE}).")
    int repeats;

    @Option(names = "--vectors", defaultValue = "4096", description = "Vectors per repeat (default: ${DEFAULT-VALUE}).")
    int vectors;

    @Option(names = "--no-scalar", description = "Skip the scalar comparison (no second JVM).")
    boolean noScalar;

    @Option(names = "--json", description = "Print JSON to stdout.")
    boolean json;

    @Option(names = "--out", description = "Write codec-bench.json here.")
    Path out;

    @Option(names = "--child", hidden = true)
    boolean child;

    @Override
    public Integer call() throws Exception {
        if (repeats < 1 || vectors < 1) {
            throw new IllegalArgumentException("--repeats and --vectors must be >= 1");
        }
        RotationKind rk = RotationKind.parse(rotation);
        List<Map<String, Object>> rows = measureAll(rk);
        if (child) {
            System.out.println(Json.write(rows));
            return 0;
        }
        if (!noScalar && Simd.vectorized()) {
            rows.addAll(runScalarChild());
        }
        // ratios against scalar in this run
        for (Map<String, Object> r : rows) {
            for (Map<String, Object> s : rows) {
                if (s.get("backend").equals("scalar") && !r.get("backend").equals("scalar")
                        && s.get("bits").equals(r.get("bits")) && s.get("variant").equals(r.get("variant"))) {
                    r.put("encode_speedup_vs_scalar", (Double) r.get("encode_vectors_per_s") / (Double) s.get("encode_vectors_per_s"));
                    r.put("decode_speedup_vs_scalar", (Double) r.get("decode_vectors_per_s") / (Double) s.get("decode_vectors_per_s"));
                }
            }
        }
        Map<String, Object> config = new LinkedHashMap<>();
        config.put("dim", dim);
        config.put("rotation", rk.name().toLowerCase(Locale.ROOT));
        config.put("repeats", repeats);
        config.put("vectors", vectors);
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("run", RunContext.capture(1, config));
        doc.put("results", rows);
        String js = Json.write(doc);
        if (json) {
            System.out.println(js);
        } else {
            System.out.printf(Locale.ROOT, "%-9s %6s %-5s %9s %14s %14s %10s %10s %12s %12s %12s%n", "backend", "bits", "var", "bits/elem",
                    "encode vec/s", "decode vec/s", "enc×scal", "dec×scal", "enc cpu/s", "dec cpu/s", "expand/s");
            for (Map<String, Object> r : rows) {
                System.out.printf(Locale.ROOT, "%-9s %6s %-5s %9.3f %14.0f %14.0f %10s %10s %12.0f %12.0f %12.0f%n", r.get("backend"), r.get("bits"),
                        r.get("variant"), (Double) r.get("bits_per_element"), (Double) r.get("encode_vectors_per_s"),
                        (Double) r.get("decode_vectors_per_s"), fmt(r.get("encode_speedup_vs_scalar")), fmt(r.get("decode_speedup_vs_scalar")),
                        (Double) r.get("encode_cpu_vectors_per_s"), (Double) r.get("decode_cpu_vectors_per_s"),
                        (Double) r.get("expand_vectors_per_s"));
            }
        }
        if (out != null) {
            RunContext.writeAtomically(out.resolve("codec-bench.json"), js + "\n");
        }
        return 0;
    }

    private static String fmt(Object o) {
        return o == null ? "-" : String.format(Locale.ROOT, "%.2f", (Double) o);
    }

    private List<Map<String, Object>> measureAll(RotationKind rk) {
        List<Map<String, Object>> rows = new ArrayList<>();
        Random r = new Random(1);
        float[] data = new float[vectors * dim];
        for (int i = 0; i < data.length; i++) {
            data[i] = (float) r.nextGaussian();
        }
        List<VectorCodec> codecs = new ArrayList<>();
        List<double[]> keys = new ArrayList<>();
        for (double bits : rates) {
            for (String variant : List.of("mse", "prod")) {
                if (variant.equals("prod") && bits < 2) {
                    continue;
                }
                codecs.add(Codecs.turbo(dim, bits, variant.equals("prod"), rk, QjlKind.GAUSSIAN, 7, false));
                keys.add(new double[]{bits, variant.equals("prod") ? 1 : 0});
            }
        }
        // off-heap records, as the cache holds them (a heap segment would make the kernels' call sites polymorphic)
        List<MemorySegment> segs = new ArrayList<>();
        for (VectorCodec c : codecs) {
            segs.add(java.lang.foreign.Arena.ofAuto().allocate((long) c.recordBytes() * vectors, 64));
        }
        // a first warm-up pass over every codec, so that the JIT compiles the shared kernels with a
        // profile of every bit width before anything is timed (else the first codec's profile is
        // compiled in, the next ones deoptimize it, and a loaded machine's starved compiler threads
        // leave them in slower code for a long time)
        {
            java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
            long warmEnd = mx.getCurrentThreadCpuTime() + 2_000_000_000L;
            float[] outv = new float[dim];
            for (int w = 0; w < 2 || mx.getCurrentThreadCpuTime() < warmEnd; w++) {
                for (int ci = 0; ci < codecs.size(); ci++) {
                    encodeAll(codecs.get(ci), data, segs.get(ci));
                    decodeAll(codecs.get(ci), segs.get(ci), outv);
                    expandAll(codecs.get(ci), segs.get(ci), outv);
                }
            }
        }
        for (int ci = 0; ci < codecs.size(); ci++) {
            {
                double bits = keys.get(ci)[0];
                String variant = keys.get(ci)[1] == 1 ? "prod" : "mse";
                VectorCodec c = codecs.get(ci);
                MemorySegment recs = segs.get(ci);
                float[] outv = new float[dim];
                double[] enc = new double[repeats];
                double[] dec = new double[repeats];
                double[] exp = new double[repeats];
                double[] encCpu = new double[repeats];
                double[] decCpu = new double[repeats];
                double[] expCpu = new double[repeats];
                // warm-up until the JIT has settled: at least 3 rounds and 2 s of this thread's CPU
                // time (C2 compiles the vector kernels after ~10^4 calls; on a loaded machine wall
                // time says little about how much the JIT has run)
                java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
                long warmEnd = mx.getCurrentThreadCpuTime() + 2_000_000_000L;
                for (int w = 0; w < 3 || mx.getCurrentThreadCpuTime() < warmEnd; w++) {
                    encodeAll(c, data, recs);
                    decodeAll(c, recs, outv);
                    expandAll(c, recs, outv);
                }
                for (int k = 0; k < repeats; k++) {
                    long c0 = mx.getCurrentThreadCpuTime();
                    long t0 = System.nanoTime();
                    encodeAll(c, data, recs);
                    long t1 = System.nanoTime();
                    long c1 = mx.getCurrentThreadCpuTime();
                    float sink = decodeAll(c, recs, outv);
                    long t2 = System.nanoTime();
                    long c2 = mx.getCurrentThreadCpuTime();
                    sink += expandAll(c, recs, outv);
                    long t3 = System.nanoTime();
                    long c3 = mx.getCurrentThreadCpuTime();
                    if (Float.isNaN(sink)) {
                        throw new IllegalStateException("NaN in decoded output");
                    }
                    enc[k] = vectors / ((t1 - t0) / 1e9);
                    dec[k] = vectors / ((t2 - t1) / 1e9);
                    exp[k] = vectors / ((t3 - t2) / 1e9);
                    encCpu[k] = vectors / ((c1 - c0) / 1e9);
                    decCpu[k] = vectors / ((c2 - c1) / 1e9);
                    expCpu[k] = vectors / ((c3 - c2) / 1e9);
                }
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("backend", Simd.describe());
                row.put("bits", bits);
                row.put("variant", variant);
                row.put("bits_per_element", c.bitsPerElement());
                row.put("encode_vectors_per_s", median(enc));
                row.put("decode_vectors_per_s", median(dec));
                // the same from this thread's CPU time (steadier on a shared machine than wall time)
                row.put("encode_cpu_vectors_per_s", median(encCpu));
                row.put("decode_cpu_vectors_per_s", median(decCpu));
                // codes expanded to scaled centroids in the rotated domain, without the inverse rotation:
                // what decode attention does per token (it un-rotates once per output, not per vector)
                row.put("expand_vectors_per_s", median(exp));
                row.put("expand_cpu_vectors_per_s", median(expCpu));
                rows.add(row);
            }
        }
        return rows;
    }

    private void encodeAll(VectorCodec c, float[] data, MemorySegment recs) {
        for (int i = 0; i < vectors; i++) {
            c.encode(data, i * dim, recs, (long) i * c.recordBytes());
        }
    }

    private float decodeAll(VectorCodec c, MemorySegment recs, float[] outv) {
        float s = 0;
        for (int i = 0; i < vectors; i++) {
            c.decode(recs, (long) i * c.recordBytes(), outv, 0);
            s += outv[i % dim];
        }
        return s;
    }

    private float expandAll(VectorCodec c, MemorySegment recs, float[] outv) {
        io.kvquant.simd.CodeLayout lay = c.codeLayout();
        io.kvquant.simd.VectorOps ops = Simd.ops();
        float s = 0;
        float[] feat = outv.length >= lay.featureSize() ? outv : new float[lay.featureSize()];
        for (int i = 0; i < vectors; i++) {
            ops.codeDecode(lay, recs, (long) i * c.recordBytes(), feat, 0);
            s += feat[i % dim];
        }
        return s;
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : 0.5 * (s[s.length / 2 - 1] + s[s.length / 2]);
    }

    @SuppressWarnings("unchecked")
    private List<Map<String, Object>> runScalarChild() throws IOException, InterruptedException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector", "-Dkvquant.simd=scalar",
                "-cp", System.getProperty("java.class.path"), "io.kvquant.cli.Kvq", "bench", "codec", "--child",
                "--dim", String.valueOf(dim), "--rotation", rotation, "--repeats", String.valueOf(repeats),
                "--vectors", String.valueOf(vectors), "--rates"));
        StringBuilder rs = new StringBuilder();
        for (double d : rates) {
            rs.append(rs.isEmpty() ? "" : ",").append(d);
        }
        cmd.add(rs.toString());
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        String outText = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IllegalStateException("the scalar comparison run failed (exit " + p.exitValue() + ")");
        }
        int start = outText.indexOf('[');
        if (start < 0) {
            throw new IllegalStateException("the scalar comparison run printed no results");
        }
        return (List<Map<String, Object>>) io.kvquant.demo.onnx.Json.parse(outText.substring(start));
    }
}
